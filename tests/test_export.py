"""Checkpoint -> model / vectors in one call, sgns-export files gensim loads unchanged, the TensorBoard projector."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_cfg

from sgns.cli.export import export_main
from sgns.errors import SGNSError
from sgns.evaluate import evaluate_analogies
from sgns.load import load_model, load_vectors
from sgns.model import SGNS
from sgns.train import train
from sgns.train.checkpoint import list_checkpoints, load_checkpoint
from sgns.train.tblog import write_projector
from sgns.vectors import load_word2vec, save_word2vec
from sgns.vocab import checkpoint_words

KeyedVectors = pytest.importorskip("gensim.models").KeyedVectors
SPECIAL = ["café", "naïve", "日本語", "слово"]  # non-ASCII words that must survive every format


DIM = 16  # a dim other tests train too: the kernel compiles once per dim


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny training run (Zipf corpus with some non-ASCII words), projector of the top 50 words."""
    root = tmp_path_factory.mktemp("export")
    rng = np.random.default_rng(0)
    names = [f"w{i}" for i in range(200)]
    names[3:3 + len(SPECIAL)] = SPECIAL
    p = 1.0 / (np.arange(len(names)) + 1.0)
    ids = rng.choice(len(names), size=15000, p=p / p.sum())
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(" ".join(names[i] for i in ids[s : s + 12]) for s in range(0, len(ids), 12)) + "\n",
                      encoding="utf-8")
    analogies, pairs = benchmark_files(root, names)
    cfg = compose_cfg(root / "run", ["corpus=text", f"corpus.path={corpus}", f"model.dim={DIM}", "trainer.epochs=1",
                                     "data.min_count=2", "trainer.device=cpu", f"data.cache_dir={root / 'cache'}",
                                     "eval.projector_words=50", f"eval.analogies=[{analogies}]",
                                     f"eval.similarities=[{pairs}]", "eval.every_words=4000"])
    train(cfg)
    return root / "run"


def test_training_evaluates_periodically_into_tensorboard_and_metrics(run_dir: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0 <= metrics["eval"]["toy-analogies"]["accuracy"] <= 1 and metrics["eval"]["toy-analogies"]["seen"] > 0
    assert metrics["eval"]["toy-sim"]["spearman"] is not None
    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    assert "eval/toy-analogies/coverage" not in events.Tags()["scalars"]  # a count: metrics.json, not a curve
    for tag in ("eval/toy-analogies/accuracy", "eval/toy-sim/spearman"):
        points = events.Scalars(tag)
        assert len(points) >= 3  # every 4000 of the 15000 words, and at the end
        assert [p.step for p in points] == sorted({p.step for p in points})
    assert events.Scalars("eval/toy-analogies/accuracy")[-1].value == pytest.approx(
        metrics["eval"]["toy-analogies"]["accuracy"])


def test_load_model_in_one_call(run_dir: Path) -> None:
    checkpoint = list_checkpoints(run_dir)[-1]
    model = load_model(checkpoint)
    assert isinstance(model, SGNS)
    assert all(isinstance(p, torch.nn.Parameter) and p.requires_grad for p in model.parameters())  # trainable on
    state = load_checkpoint(checkpoint)
    torch.testing.assert_close(model.input.weight.detach(), state["model"]["input.weight"], rtol=0, atol=0)
    torch.testing.assert_close(model.output.weight.detach(), state["model"]["output.weight"], rtol=0, atol=0)
    assert model.vocab.words == list(checkpoint_words(state["vocab"]))
    assert all(w in model.vocab for w in SPECIAL)
    # the documented downstream use
    emb = torch.nn.Embedding.from_pretrained(model.input.weight.detach())
    king = model.vocab.index["café"]
    torch.testing.assert_close(emb(torch.tensor([king]))[0], model.input.weight[king].detach())
    # the run dir gives the same (newest) checkpoint; the end-of-training vectors file holds these vectors
    torch.testing.assert_close(load_model(run_dir).input.weight, model.input.weight, rtol=0, atol=0)
    words, vectors = load_word2vec(run_dir / "vectors.bin")
    assert words == model.vocab.words
    np.testing.assert_array_equal(vectors, model.input.weight.detach().numpy())


@pytest.mark.parametrize("text", [False, True])
@pytest.mark.parametrize("which", ["input", "average"])
def test_export_loads_unchanged_in_gensim(run_dir: Path, tmp_path: Path, text: bool, which: str) -> None:
    out = tmp_path / ("v.txt" if text else "v.bin")
    export_main([str(list_checkpoints(run_dir)[-1]), str(out), "--vectors", which, *(["--text"] if text else [])])
    state = load_checkpoint(list_checkpoints(run_dir)[-1])
    expected = state["model"]["input.weight"].numpy()
    if which == "average":
        expected = (expected + state["model"]["output.weight"].numpy()) / 2
        assert not np.allclose(expected, state["model"]["input.weight"].numpy())
    kv = KeyedVectors.load_word2vec_format(str(out), binary=not text)
    assert kv.index_to_key == list(checkpoint_words(state["vocab"]))
    np.testing.assert_array_equal(kv.vectors, expected.astype(np.float32))
    # and back through sgns' own loaders
    wv = load_vectors(out)
    np.testing.assert_array_equal(wv.vectors, kv.vectors)
    np.testing.assert_array_equal(load_vectors(run_dir, which).vectors, kv.vectors)


def test_sgns_export_command(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "vectors.bin"
    done = subprocess.run(["sgns-export", str(run_dir), str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout and out.is_file()
    kv = KeyedVectors.load_word2vec_format(str(out), binary=True)
    assert all(w in kv.key_to_index for w in SPECIAL)


@pytest.mark.parametrize("args,message", [
    (["{tmp}/missing.pt", "{tmp}/o.bin"], "not found"),
    (["{tmp}/junk.pt", "{tmp}/o.bin"], "cannot be loaded"),
    (["{run}", "{tmp}/no/such/dir/o.bin"], "does not exist"),
    (["{run}", "{tmp}", "--text"], "is a directory"),
    (["{run}", "{tmp}/o.bin", "--vectors", "output"], "invalid choice"),
    (["{run}"], "required"),
])
def test_sgns_export_errors_are_one_line(run_dir: Path, tmp_path: Path, args: list, message: str,
                                         capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit) as exit_info:
        export_main([a.format(tmp=tmp_path, run=run_dir) for a in args])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sgns-export: error: ") and message in lines[0], lines
    assert not (tmp_path / "o.bin").exists()


def test_sgns_export_never_replaces_a_device_or_fifo(run_dir: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    # the atomic write renames its file over the target: over /dev/full it would replace the device itself
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(SystemExit) as exit_info:
        export_main([str(run_dir), str(fifo)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"sgns-export: error: cannot write {fifo}: it exists and is not a regular file (a device or a FIFO), which "
        f"writing the vectors would replace"]
    assert stat.S_ISFIFO(fifo.stat().st_mode)


def test_sgns_export_error_from_the_command_line(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "sgns.cli.export", str(tmp_path / "missing.pt"), str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"sgns-export: error: checkpoint not found: {tmp_path / 'missing.pt'}"]


def test_load_vectors_sources_agree_and_fail_clearly(run_dir: Path, tmp_path: Path) -> None:
    from_dir = load_vectors(run_dir)
    from_file = load_vectors(run_dir / "vectors.bin")
    assert from_dir.words == from_file.words
    np.testing.assert_array_equal(from_dir.vectors, from_file.vectors)
    with pytest.raises(SGNSError, match="only `input` applies"):
        load_vectors(run_dir / "vectors.bin", "average")
    with pytest.raises(SGNSError, match="not a run directory"):
        load_vectors(tmp_path)
    with pytest.raises(SGNSError, match="not found"):
        load_vectors(tmp_path / "nothing")
    only_vectors = tmp_path / "only"
    only_vectors.mkdir()
    save_word2vec(only_vectors / "vectors.txt", ["a", "b"], np.eye(2, dtype=np.float32), binary=False)
    assert load_vectors(only_vectors).words == ["a", "b"]
    # checkpoints that no longer load (damaged, older format): the run's vectors file still serves `input`
    (only_vectors / "checkpoints").mkdir()
    (only_vectors / "checkpoints" / "step-00000001.pt").write_bytes(b"damaged")
    assert load_vectors(only_vectors).words == ["a", "b"]
    with pytest.raises(SGNSError, match="no loadable checkpoint"):
        load_vectors(only_vectors, "average")


def test_training_writes_the_projector(run_dir: Path) -> None:
    tb = run_dir / "tb"
    config = (tb / "projector_config.pbtxt").read_text()
    assert "metadata.tsv" in config and "tensors.tsv" in config
    tensors = list(tb.glob("*/words/tensors.tsv"))
    metadata = list(tb.glob("*/words/metadata.tsv"))
    assert len(tensors) == 1 and len(metadata) == 1
    rows = tensors[0].read_text().strip().split("\n")
    assert len(rows) == 50 and len(rows[0].split("\t")) == DIM
    meta = metadata[0].read_text(encoding="utf-8").strip().split("\n")
    vocab = (run_dir / "vocab.txt").read_text(encoding="utf-8").split("\n")[:50]
    assert meta[0] == "word\tcount"
    assert meta[1:] == [line.replace(" ", "\t") for line in vocab]


def test_write_projector_into_a_log_dir(tmp_path: Path) -> None:
    words = ["a", "b", "c", "ü"]
    n = write_projector(tmp_path / "tb", words, np.arange(12, dtype=np.float32).reshape(4, 3), top_n=3)
    assert n == 3
    meta = next((tmp_path / "tb").glob("*/words/metadata.tsv")).read_text(encoding="utf-8").split("\n")
    assert meta[:3] == ["a", "b", "c"]
    assert write_projector(tmp_path / "none", words, np.zeros((4, 3), np.float32), top_n=0) == 0
    assert write_projector(tmp_path / "tensor", words, torch.ones(4, 3, requires_grad=True), [9, 8, 7, 6]) == 4
    assert next((tmp_path / "tensor").glob("*/words/metadata.tsv")).read_text(encoding="utf-8").split("\n")[1] == "a\t9"
    assert not (tmp_path / "none").exists()


@pytest.mark.parametrize("with_counts", [True, False])
def test_write_projector_writes_what_add_embedding_writes(tmp_path: Path, with_counts: bool) -> None:
    """The same files as torch's SummaryWriter.add_embedding, the vectors formatted exactly as float32."""
    from torch.utils.tensorboard import SummaryWriter

    rng = np.random.default_rng(3)
    vectors = (rng.standard_normal((40, 7)) * 10.0 ** rng.integers(-6, 6, (40, 1))).astype(np.float32)
    words, counts = [f"w{i}{SPECIAL[i % 4]}" for i in range(40)], list(range(400, 0, -10))
    with SummaryWriter(str(tmp_path / "torch")) as theirs:
        theirs.add_embedding(torch.as_tensor(vectors[:30]), global_step=1234, tag="words",
                             **({"metadata": [[w, str(c)] for w, c in zip(words, counts, strict=True)][:30],
                                 "metadata_header": ["word", "count"]} if with_counts else {"metadata": words[:30]}))
    assert write_projector(tmp_path / "ours", words, vectors, counts if with_counts else None, 30, 1234) == 30
    for name in ("projector_config.pbtxt", "01234/words/metadata.tsv"):
        assert (tmp_path / "ours" / name).read_bytes() == (tmp_path / "torch" / name).read_bytes()
    ours, theirs_tsv = (np.loadtxt(tmp_path / d / "01234/words/tensors.tsv", delimiter="\t") for d in ("ours", "torch"))
    assert np.array_equal(ours.astype(np.float32), vectors[:30])
    assert np.array_equal(ours.astype(np.float32), theirs_tsv.astype(np.float32))


# sgns-eval: the same numbers from a run dir, a checkpoint and exported files; a sanity report without benchmarks

def benchmark_files(folder: Path, words: list) -> tuple:
    """An analogy file over the run's words (with a malformed line) and a similarity file (with a bad row)."""
    rng = np.random.default_rng(5)
    picks = [list(rng.choice(words[:80], 4, replace=False)) for _ in range(60)]
    analogies = folder / "toy-analogies.txt"
    analogies.write_text(": first\n" + "\n".join(" ".join(q) for q in picks[:30]) + "\nnot enough\n: gram-second\n"
                         + "\n".join(" ".join(q) for q in picks[30:]) + "\nzzz yyy xxx www\n", encoding="utf-8")
    pairs = folder / "toy-sim.tsv"
    pairs.write_text("# w1\tw2\tscore\n" + "\n".join(f"{a}\t{b}\t{rng.uniform(0, 10):.2f}" for a, b, _, _ in picks)
                     + "\nbad row\n", encoding="utf-8")
    return analogies, pairs


def eval_json(argv: list, capsys: pytest.CaptureFixture) -> tuple:
    from sgns.cli.eval import main as eval_main

    eval_main(argv)
    out = capsys.readouterr().out.strip().split("\n")
    return json.loads(out[-1]), out[:-1]


def test_sgns_eval_same_numbers_from_every_source(run_dir: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    words = load_vectors(run_dir).words
    analogies, pairs = benchmark_files(tmp_path, words)
    export_main([str(run_dir), str(tmp_path / "v.txt"), "--text"])
    capsys.readouterr()
    reports = []
    for source in (run_dir, list_checkpoints(run_dir)[-1], run_dir / "vectors.bin", tmp_path / "v.txt"):
        report, table = eval_json([str(source), "--analogies", str(analogies), "--similarities", str(pairs),
                                   "--restrict-vocab", "60"], capsys)
        reports.append(report)
    assert all(r["eval"] == reports[0]["eval"] for r in reports[1:])
    toy = reports[0]["eval"]["toy-analogies"]
    direct = evaluate_analogies(words, load_vectors(run_dir).vectors, analogies, restrict_vocab=60)
    assert toy == json.loads(json.dumps(direct))
    assert toy["malformed_lines"] == 1 and toy["total"] == 61 and 0 < toy["coverage"] < 1
    assert reports[0]["eval"]["toy-sim"]["malformed_lines"] == 1
    assert set(toy["sections"]) == {"first", "gram-second"}
    text = "\n".join(table)
    assert "overall" in text and "semantic" in text and "syntactic" in text and "spearman" in text


def test_sgns_eval_without_benchmarks_shows_neighbours(run_dir: Path, capsys: pytest.CaptureFixture) -> None:
    report, table = eval_json([str(run_dir / "vectors.bin"), "--topn", "3"], capsys)
    assert report["vocab_size"] == len(load_vectors(run_dir).words) and report["dim"] == DIM
    assert len(report["neighbours"]) >= 3
    for word, found in report["neighbours"].items():
        assert len(found) == 3 and word not in [w for w, _ in found]
    assert any("nearest neighbours" in line for line in table)
    report, _ = eval_json([str(run_dir), "--words", "café", "nosuchword", "--query", "w10 - w11 + café"], capsys)
    assert report["neighbours"]["nosuchword"] is None and len(report["neighbours"]["café"]) == 8
    assert len(report["queries"]["w10 - w11 + café"]) == 8


@pytest.mark.parametrize("args,message", [
    (["{tmp}/nothing"], "not found"),
    (["{tmp}/plain.txt"], "not a word2vec file"),
    (["{run}", "--method", "3cosfoo"], "invalid choice"),
    (["{run}", "--analogies", "{tmp}/missing.txt"], "benchmark file not found"),
    (["{run}", "--restrict-vocab", "0"], "out of range"),
    (["{run}", "--query", "- w10"], "no positive word"),
    (["{run}", "--words", "w1", "--device", "tpu"], "--device"),
])
def test_sgns_eval_errors_are_one_line(run_dir: Path, tmp_path: Path, args: list, message: str,
                                       capsys: pytest.CaptureFixture) -> None:
    from sgns.cli.eval import main as eval_main

    (tmp_path / "plain.txt").write_text("just some text\n")
    with pytest.raises(SystemExit) as exit_info:
        eval_main([a.format(tmp=tmp_path, run=run_dir) for a in args])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sgns-eval: error: ") and message in lines[0], lines


def test_sgns_eval_command_line(run_dir: Path) -> None:
    done = subprocess.run(["sgns-eval", str(run_dir / "vectors.bin"), "--words", "café"], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().split("\n")[-1])
    assert report["dim"] == DIM and len(report["neighbours"]["café"]) == 8
