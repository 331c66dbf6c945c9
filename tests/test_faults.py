"""Faults that must end in a clear one-line error or a correct run, never a crash: divergence, bad corpora,
files changing under the reader, and every numeric config key out of range."""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import json
import lzma
import os
import tracemalloc
import typing
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_cfg, zipf_text

import sgns.config as config_module
from sgns.config import typed_config, validate
from sgns.corpus import ReadStats, encode, iter_sentences, open_binary, text_source
from sgns.errors import SGNSError
from sgns.model import make_model
from sgns.train import train
from sgns.train.checkpoint import list_checkpoints, load_checkpoint
from sgns.train.loop import DivergenceGuard

TINY = ["model.dim=8", "trainer.epochs=1", "data.min_count=1", "data.batch_size=256", "trainer.device=cpu"]


def run(tmp_path: Path, corpus: Path, *extra: str) -> dict:
    return train(compose_cfg(tmp_path / "run", ["corpus=text", f"corpus.path={corpus}", *TINY, *extra]))


# ------------------------------------------------------------------------------------------- divergence


@pytest.mark.parametrize("model, untrained", [("sgns", "4.16"),  # (1 + 5 negatives) ln 2
                                               ("full_softmax", "5.70")])  # ln 300 words
def test_a_finite_loss_explosion_stops_naming_the_step_and_cause_and_keeps_good_checkpoints(
        tmp_path: Path, model: str, untrained: str):
    corpus = zipf_text(tmp_path / "c.txt")
    with pytest.raises(SGNSError) as error:
        # the pair pipeline's small batches: the loss stays finite for a few steps, growing by orders of magnitude
        run(tmp_path, corpus, f"model={model}", "optimizer.lr=1e6", "trainer.checkpoint_every=1",
            "trainer.log_every=1000", "trainer.kernel=torch")
    message = str(error.value)
    assert f"per pair by step 2, over 100x an untrained model's {untrained}: training diverged" in message
    assert "optimizer.lr=1000000.0 is too high for optimizer.name=sgd (try 0.025)" in message
    limit = 100 * float(untrained)
    kept = list_checkpoints(tmp_path / "run")
    assert kept, "the good checkpoint before the divergence is kept"
    assert f"the last good one, {kept[-1]}, is kept" in message
    for path in kept:
        state = load_checkpoint(path)
        assert state["progress"]["step"] < 2
        assert all(torch.isfinite(t).all() for t in state["model"].values())
        assert state["progress"]["loss_sum"] / state["progress"]["loss_pairs"] < limit
    assert not (tmp_path / "run" / "vectors.bin").exists()


def test_nan_parameters_stop_before_their_checkpoint(tmp_path: Path):
    corpus = zipf_text(tmp_path / "c.txt")
    with pytest.raises(SGNSError) as error:
        # the numba kernel's span: NaN in one step
        run(tmp_path, corpus, "optimizer.lr=1e6", "trainer.checkpoint_every=1", "trainer.kernel=numba")
    message = str(error.value)
    assert "the parameters became NaN/inf by step 1: training diverged" in message
    assert "optimizer.lr=1000000.0 is too high" in message
    assert not list_checkpoints(tmp_path / "run")
    assert message.endswith("no checkpoint was written after it: none was written before it either")
    assert not (tmp_path / "run" / "vectors.bin").exists()


@pytest.mark.parametrize("overrides, untrained", [([], 6 * np.log(2)), (["data.negatives=15"], 16 * np.log(2)),
                                                  (["model=full_softmax"], np.log(1000))])
def test_the_loss_limit_is_100x_an_untrained_models_loss(tmp_path: Path, overrides: list, untrained: float):
    config = typed_config(compose_cfg(tmp_path / "run", overrides))
    model_loss = make_model(config.model, 1000).untrained_loss(config.data.negatives)  # the model says its own
    guard = DivergenceGuard(config.optimizer, model_loss, tmp_path / "run")
    assert guard.check_loss(7, 99 * untrained) == 99 * untrained
    with pytest.raises(SGNSError, match=r"the loss reached [0-9.e+]+ per pair by step 7, over 100x"):
        guard.check_loss(7, 101 * untrained)
    with pytest.raises(SGNSError, match="the loss became NaN/inf by step 7"):
        guard.check_loss(7, float("nan"))
    torchrun = DivergenceGuard(config.optimizer, model_loss, tmp_path / "run", config.dist, ranks=2)
    with pytest.raises(SGNSError, match=r"\); with 2 ranks, dist.merge=sum every dist.sync_every_words"):
        torchrun.check_loss(7, 101 * untrained)


def test_the_divergence_advice_asks_for_a_smaller_lr_when_it_already_is_the_usual_one(tmp_path: Path):
    config = typed_config(compose_cfg(tmp_path / "run", ["optimizer.lr=0.025"]))
    usual = DivergenceGuard(config.optimizer, 6 * np.log(2), tmp_path / "run")
    with pytest.raises(SGNSError, match=r"optimizer.lr=0.025 is too high for optimizer.name=sgd \(try a smaller one, "
                                        r"e.g. 0.00625\)"):
        usual.check_loss(3, float("inf"))


def test_divergence_is_caught_at_a_log_step_too(tmp_path: Path):
    corpus = zipf_text(tmp_path / "c.txt")
    with pytest.raises(SGNSError, match=r"the loss became NaN/inf by step 10: .*optimizer.lr=1e\+06|by step 10"):
        run(tmp_path, corpus, "optimizer.lr=1e6", "trainer.log_every=10")


# ---------------------------------------------------------------------------------------- corpus faults


def test_invalid_utf8_is_replaced_counted_and_reported(tmp_path: Path):
    corpus = tmp_path / "bad.txt"
    good = zipf_text(tmp_path / "good.txt").read_bytes()
    corpus.write_bytes(good[:5000] + b" caf\xe9 \xff\xfe w1 \xc3\n" + good[5000:] + b"\xe2\x82")
    metrics = run(tmp_path, corpus)
    assert metrics["status"] == "finished"
    assert metrics["replaced_bytes"] == 6  # \xe9, \xff, \xfe, \xc3, and the cut \xe2\x82 at the end (2)
    import json

    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["replaced_bytes"] == 6
    words = (tmp_path / "run" / "vocab.txt").read_text(encoding="utf-8")
    assert "caf\ufffd" in words


def test_nul_bytes_separate_words(tmp_path: Path):
    corpus = tmp_path / "nul.txt"
    corpus.write_bytes(b"a\x00b c\x00\x00d\n" * 200)
    metrics = run(tmp_path, corpus)
    assert metrics["corpus_words"] == 800 and metrics["vocab_size"] == 4


def test_binary_file_trains_without_crashing(tmp_path: Path):
    corpus = tmp_path / "random.bin"
    corpus.write_bytes(np.random.default_rng(0).integers(0, 256, 200_000, dtype=np.uint8).tobytes())
    metrics = run(tmp_path, corpus)
    assert metrics["status"] == "finished" and metrics["replaced_bytes"] > 10_000


def test_no_trailing_newline_keeps_the_last_line(tmp_path: Path):
    text = zipf_text(tmp_path / "c.txt").read_text().rstrip("\n") + "\nlast1 last2"
    corpus = tmp_path / "no_newline.txt"
    corpus.write_text(text)
    sentences = list(iter_sentences(open_binary(corpus)))
    assert sentences[-1] == ["last1", "last2"]
    metrics = run(tmp_path, corpus)
    assert metrics["corpus_words"] == 20002


@pytest.mark.parametrize("content", [b"", b"\n\n\n", b"  \t \n\r\n \n" * 1000, b"\x00\x00\n"])
def test_only_blank_lines_is_an_empty_corpus_error(tmp_path: Path, content: bytes):
    corpus = tmp_path / "blank.txt"
    corpus.write_bytes(content)
    with pytest.raises(SGNSError, match="is empty: it holds no words"):
        run(tmp_path, corpus)


@pytest.mark.parametrize("opener", [gzip.open, bz2.open, lzma.open])
@pytest.mark.parametrize("damage", ["truncated", "corrupted"])
def test_truncated_or_corrupted_compressed_file_is_a_clear_error(tmp_path: Path, opener, damage: str):
    packed = tmp_path / "c.txt.z"
    with opener(packed, "wb") as f:
        f.write(zipf_text(tmp_path / "c.txt", words=60000).read_bytes())
    data = bytearray(packed.read_bytes())
    if damage == "truncated":
        data = data[: len(data) * 2 // 3]
    else:
        for i in range(len(data) // 2, len(data) // 2 + 64):
            data[i] ^= 0x5A
    packed.write_bytes(bytes(data))
    with pytest.raises(SGNSError, match="corpus could not be read"):
        run(tmp_path, packed)
    assert not list((tmp_path / "run").glob("vectors.*"))


def _one_line_file(path: Path, size: int) -> Path:
    """One line of at least `size` bytes."""
    chunk = " ".join(f"t{i % 997}" for i in range(50_000)) + " "
    with open(path, "w") as f:
        while f.tell() < size:
            f.write(chunk)
    return path


def _read_with_peak_memory(path: Path, block_bytes: int) -> tuple:
    stats = ReadStats()
    tracemalloc.start()
    try:
        with open_binary(path) as stream:
            lengths = [len(piece) for piece in iter_sentences(stream, 10000, False, stats, block_bytes)]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return lengths, stats, peak


# The reader's blocks, smaller than its default 1 MB (`block_bytes` is iter_sentences' argument): the same blocks
# counts as over megabyte blocks, at a quarter of the text; the same code cuts and streams them.
LONG_LINE_BLOCK = 1 << 18


def test_long_line_across_many_blocks_is_streamed_with_flat_memory(tmp_path: Path):
    """A single line of 3 and of 12 read blocks: every token arrives, in max_len pieces, and the peak memory
    does not grow with the line (a whole-line read would hold the text plus ~500k token strings)."""
    peaks = []
    for blocks in (3, 12):
        corpus = _one_line_file(tmp_path / f"line{blocks}.txt", blocks * LONG_LINE_BLOCK)
        lengths, stats, peak = _read_with_peak_memory(corpus, LONG_LINE_BLOCK)
        assert stats.tokens == sum(lengths) == len(corpus.read_text().split())
        assert stats.lines == len(lengths) and all(n == 10000 for n in lengths[:-1])
        peaks.append(peak)
    assert peaks[1] < 1.3 * peaks[0], f"peak memory grew with the line: {[p >> 10 for p in peaks]} kB"


@pytest.mark.slow
def test_a_100mb_line_trains(tmp_path: Path):
    corpus = tmp_path / "one_line.txt"
    chunk = " ".join(f"t{i % 5000}" for i in range(100_000)) + " "
    with open(corpus, "w") as f:
        while f.tell() < 100 << 20:
            f.write(chunk)
    metrics = run(tmp_path, corpus, "data.chunk_tokens=2000000", "data.subsample=1e-4")
    assert metrics["status"] == "finished" and metrics["corpus_words"] > 15_000_000


def test_file_truncated_while_being_read_is_a_clear_error(tmp_path: Path):
    corpus = zipf_text(tmp_path / "c.txt", words=600_000)  # ~3 MB: several read blocks
    source = text_source(corpus, 10000, False)
    sentences = source.sentences(ReadStats())
    next(sentences)
    with open(corpus, "r+b") as f:
        f.truncate(corpus.stat().st_size // 2)
    with pytest.raises(SGNSError, match="changed while being read"):
        for _ in sentences:
            pass
    # and through encode: no cache entry is left behind for the half-read content
    corpus = zipf_text(tmp_path / "d.txt", words=600_000)
    source = text_source(corpus, 10000, False, workers=1, chunk_bytes=1 << 18)  # ~12 pieces
    cache = tmp_path / "cache"
    original = source.pieces

    def truncating(workers: int):
        for i, piece in enumerate(original(workers)):
            if i == 2:
                with open(corpus, "r+b") as f:
                    f.truncate(1000)
            yield piece

    source.pieces = truncating
    with pytest.raises(SGNSError, match="changed while being read"):
        encode(source, cache, log=lambda _: None)
    assert not [p for p in cache.iterdir()]


def test_file_deleted_while_being_read_is_read_whole(tmp_path: Path):
    corpus = zipf_text(tmp_path / "c.txt", words=600_000)
    source = text_source(corpus, 10000, False)
    stats = ReadStats()
    sentences = source.sentences(stats)
    first = next(sentences)
    os.unlink(corpus)  # the open file stays readable: all of it is read, and it is the content hashed
    count = len(first) + sum(len(s) for s in sentences)
    assert count == 600_000 == stats.tokens


def test_missing_or_directory_corpus_is_a_clear_error(tmp_path: Path):
    with pytest.raises(SGNSError, match="corpus file not found"):
        run(tmp_path, tmp_path / "missing.txt")
    with pytest.raises(SGNSError, match="is a directory"):
        run(tmp_path, tmp_path)


# ---------------------------------------------------------------------------------------------- config

# (key, a bad value, words the message must hold), written out: boundaries, NaN and inf.
BAD_VALUES = [
    ("corpus.max_sentence_len", "0", ">= 1"),
    ("corpus.read_workers", "-1", ">= 0"),
    ("corpus.max_distinct_words", "0", ">= 1 or null"),
    ("corpus.phrases", "-1", ">= 0"),
    ("corpus.phrase_threshold", "-1", ">= 0 and finite"),
    ("corpus.phrase_threshold", "nan", ">= 0 and finite"),
    ("corpus.phrase_threshold", "inf", ">= 0 and finite"),
    ("corpus.phrase_min_count", "0", ">= 1"),
    ("corpus.synthetic.relations", "0", ">= 1"),
    ("corpus.synthetic.pairs", "1", ">= 2"),
    ("corpus.synthetic.filler_words", "9", ">= 10"),
    ("corpus.synthetic.sentences", "0", ">= 1"),
    ("corpus.synthetic.seed", "-1", "in [0, 2**63)"),
    ("data.min_count", "0", ">= 1"),
    ("data.max_vocab_size", "0", ">= 1 or null"),
    ("data.window", "0", ">= 1"),
    ("data.negatives", "0", ">= 1"),
    ("data.ns_exponent", "2.5", "in [0, 2]"),
    ("data.ns_exponent", "nan", "in [0, 2]"),
    ("data.subsample", "1.0", "in [0, 1)"),
    ("data.subsample", "-0.1", "in [0, 1)"),
    ("data.batch_size", "0", ">= 1"),
    ("data.chunk_tokens", "999", ">= 1000"),
    ("data.span_tokens", "999", ">= 1000"),
    ("data.shared_negatives", "0", ">= 1"),
    ("model.dim", "0", ">= 1"),
    ("model.minn", "-1", ">= 0 (0: no n-grams)"),
    ("model.maxn", "-1", ">= 0 (0: no n-grams)"),
    ("model.bucket", "-1", ">= 0 (0: no n-grams)"),
    ("optimizer.lr", "0", "> 0 and finite"),
    ("optimizer.lr", "-0.1", "> 0 and finite"),
    ("optimizer.lr", "inf", "> 0 and finite"),
    ("optimizer.lr", "nan", "> 0 and finite"),
    ("optimizer.min_lr_ratio", "1.5", "in [0, 1]"),
    ("optimizer.min_lr_ratio", "-1", "in [0, 1]"),
    ("optimizer.row_cap", "-1", ">= 0 and finite"),
    ("optimizer.row_cap", "inf", ">= 0 and finite"),
    ("optimizer.lr_scale", "0", "> 0 and finite"),
    ("trainer.epochs", "0", ">= 1"),
    ("trainer.seed", "-1", "in [0, 2**63)"),
    ("trainer.threads", "-1", ">= 0"),
    ("trainer.log_every", "0", ">= 1"),
    ("trainer.checkpoint_every", "-1", ">= 0"),
    ("trainer.keep_checkpoints", "0", ">= 1"),
    ("eval.restrict_vocab", "0", ">= 1"),
    ("eval.every_words", "-1", ">= 0"),
    ("eval.points", "0", ">= 1"),
    ("eval.projector_words", "-1", ">= 0"),
]
# ...and the bad values every checked key's schema metadata names (sgns.config.Check), so a new key is tried as
# soon as it is declared with its check.
GENERATED_BAD_VALUES = [(key, str(bad), check.allowed) for key, check in config_module.checks().items()
                        for bad in check.bad]


@pytest.mark.parametrize("key,value,allowed", BAD_VALUES + GENERATED_BAD_VALUES)
def test_every_numeric_key_is_range_checked_with_a_message_naming_it(tmp_path: Path, key: str, value: str,
                                                                   allowed: str):
    cfg = compose_cfg(tmp_path, [f"{key}={value}"])
    with pytest.raises(SGNSError) as error:
        validate(cfg)
    message = str(error.value)
    assert message.startswith(f"{key}=") and "out of range" in message and allowed in message
    assert "\n" not in message


def _numeric_keys(schema: type, prefix: str) -> set:
    keys = set()
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            keys |= _numeric_keys(hint, f"{prefix}{f.name}.")
        elif set(typing.get_args(hint) or (hint,)) - {type(None)} <= {int, float}:
            keys.add(f"{prefix}{f.name}")
    return keys


def test_the_bad_value_table_covers_every_numeric_key_of_the_schema():
    numeric = _numeric_keys(config_module.Config, "")  # every group, dist included
    assert {"data.window", "dist.timeout_s", "corpus.synthetic.seed"} <= numeric
    assert numeric <= set(config_module.checks()), "numeric keys without a range check"
    assert numeric <= {key for key, _, _ in BAD_VALUES + GENERATED_BAD_VALUES}
    assert {key for key, _, _ in BAD_VALUES} <= set(config_module.checks())


def test_valid_boundaries_pass(tmp_path: Path):
    validate(compose_cfg(tmp_path, ["data.subsample=0", "optimizer.min_lr_ratio=0", "data.ns_exponent=0",
                                    "trainer.checkpoint_every=0", "trainer.seed=0", "optimizer.lr=1e6"]))


def test_resume_from_a_missing_checkpoint_is_refused_up_front(tmp_path: Path):
    cfg = compose_cfg(tmp_path, [f"trainer.resume={tmp_path / 'nope.pt'}"])
    with pytest.raises(SGNSError, match="trainer.resume=.*must be auto, never or the path of an existing checkpoint"):
        validate(cfg)


# ------------------------------------------------------------------------------------------- nothing to train


def test_a_run_with_no_pairs_trained_says_so_not_that_it_diverged(tmp_path: Path):
    corpus = zipf_text(tmp_path / "c.txt")
    with pytest.raises(SGNSError) as error:
        run(tmp_path, corpus, "data.subsample=1e-9", "trainer.log_every=1")
    message = str(error.value)
    assert "diverged" not in message
    assert message.startswith("no training pairs: ")
    assert "data.subsample" in message and "\n" not in message
    assert not (tmp_path / "run" / "vectors.bin").exists()


def test_log_intervals_without_pairs_are_not_a_divergence(tmp_path: Path):
    # one word kept, subsampled hard: most batches train no pair, some do
    corpus = zipf_text(tmp_path / "c.txt")
    metrics = run(tmp_path, corpus, "corpus.max_distinct_words=1", "trainer.log_every=1")
    assert metrics["pairs"] > 0 and metrics["vocab_size"] == 1
    assert np.isfinite(metrics["loss"])
    assert (tmp_path / "run" / "vectors.bin").exists()


@pytest.mark.parametrize("binary", [True, False])
def test_a_finished_run_whose_vectors_were_deleted_rewrites_them_from_its_final_checkpoint(
        tmp_path: Path, binary: bool, caplog: pytest.LogCaptureFixture):
    from sgns.api import Run

    corpus = zipf_text(tmp_path / "c.txt")
    extra = f"trainer.export_binary={str(binary).lower()}"
    first = run(tmp_path, corpus, extra)
    vectors = tmp_path / "run" / ("vectors.bin" if binary else "vectors.txt")
    written = vectors.read_bytes()
    vectors.unlink()
    caplog.set_level("INFO", logger="sgns")
    again = run(tmp_path, corpus, extra)
    assert again == first
    assert f"{vectors.name} is missing: rewriting it from the final checkpoint" in caplog.text
    assert vectors.read_bytes() == written
    assert len(Run.load(tmp_path / "run").wv.words) == first["vocab_size"]


def test_vectors_that_cannot_be_written_are_one_line_and_the_same_command_finishes(tmp_path: Path):
    """A full disk (here a file size limit: the same failed write) when vectors.bin is written: the OSError
    reached sgns-train as Hydra's traceback and metrics.json was never written (attack 2 of issue 30)."""
    import resource
    import subprocess
    import sys

    corpus = zipf_text(tmp_path / "c.txt", words=30000, vocab=400)
    command = [sys.executable, "-m", "sgns.train", "corpus=text", f"corpus.path={corpus}", "model.dim=300",
               "data.min_count=1", "trainer.epochs=1", "trainer.device=cpu", "trainer.progress=false", "eval=none",
               f"data.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'run'}"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    limit = 300_000  # the token ids (120 kB) and the logs fit, the vectors (400 x 1.2 kB) do not

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, preexec_fn=limited)
    vectors = tmp_path / "run" / "vectors.bin"
    assert done.returncode == 2 and done.stderr.splitlines() == [
        f"sgns-train: error: could not write {vectors}: File too large; fix that and run the same command "
        f"again"], done.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "failed" and "File too large" in metrics["error"]
    assert not [p.name for p in vectors.parent.iterdir() if p.name.startswith(".vectors")]
    again = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0, again.stderr
    assert vectors.stat().st_size > limit
