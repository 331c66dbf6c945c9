"""End to end: the real CLI, the outputs it promises, corpus formats and bad input."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_cfg, zipf_text

from sgns.model import SGNS
from sgns.train import train
from sgns.vectors import load_word2vec
from sgns.vocab import checkpoint_words

TINY = ["model.dim=16", "trainer.epochs=1", "data.min_count=2", "data.batch_size=512"]


def run_cli(*args: str, module: bool = False, cwd: Path | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "sgns.train"] if module else ["sgns-train"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=300, cwd=cwd,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_contract_command_writes_every_output(tiny_corpus, tmp_path):
    run = tmp_path / "run"
    proc = run_cli("corpus=text", f"corpus.path={tiny_corpus}", "model.dim=16", "data.window=5", "data.negatives=5",
                   "data.min_count=5", "data.subsample=1e-3", "trainer.epochs=1", "optimizer.lr=0.025",
                   "trainer.device=cpu", "trainer.seed=1", f"hydra.run.dir={run}")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["train_words"] == 20000
    assert metrics["words_per_sec"] > 0 and metrics["wall_seconds"] > 0 and np.isfinite(metrics["loss"])
    assert 0 < metrics["vectors_seconds"] < metrics["wall_seconds"]
    assert list((run / "tb").glob("events.out.tfevents.*"))
    assert list((run / "checkpoints").glob("step-*.pt"))
    assert (run / ".hydra" / "config.yaml").read_text().count("dim: 16") == 1
    # gensim reads the vectors unchanged
    from gensim.models import KeyedVectors

    kv = KeyedVectors.load_word2vec_format(str(run / "vectors.bin"), binary=True)
    words, vectors = load_word2vec(run / "vectors.bin")
    assert kv.index_to_key == words and kv.vector_size == 16
    assert np.array_equal(kv.vectors, vectors)
    assert words[0] == "w0"  # most frequent first


def test_python_module_entry_point(tiny_corpus, tmp_path):
    run = tmp_path / "run"
    proc = run_cli("corpus=text", f"corpus.path={tiny_corpus}", *TINY, f"hydra.run.dir={run}", module=True)
    assert proc.returncode == 0, proc.stderr
    assert (run / "vectors.bin").is_file() and (run / "metrics.json").is_file()


def test_tensorboard_logs_loss_lr_and_speed_during_training(tiny_corpus, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = compose_cfg(tmp_path / "run", ["corpus=text", f"corpus.path={tiny_corpus}", *TINY, "data.batch_size=64",
                                         "trainer.log_every=3"])
    train(cfg)
    events = EventAccumulator(str(tmp_path / "run" / "tb"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"train/loss", "train/lr", "train/words_per_sec"} <= set(tags)
    loss = events.Scalars("train/loss")
    assert len(loss) >= 5  # regularly, not only at the end
    lr = [e.value for e in events.Scalars("train/lr")]
    assert lr == sorted(lr, reverse=True) and lr[0] <= 0.025  # linear decay


def test_checkpoint_round_trip(tiny_corpus, tmp_path):
    cfg = compose_cfg(tmp_path / "run", ["corpus=text", f"corpus.path={tiny_corpus}", *TINY])
    train(cfg)
    (path,) = (tmp_path / "run" / "checkpoints").glob("step-*.pt")
    state = torch.load(path, weights_only=True)
    assert {"model", "optimizer", "vocab", "progress", "config"} <= set(state)
    assert state["progress"]["finished"] and state["config"]["model"]["dim"] == 16
    model = SGNS(len(checkpoint_words(state["vocab"])), state["config"]["model"]["dim"])
    model.load_state_dict(state["model"])
    words, vectors = load_word2vec(tmp_path / "run" / "vectors.bin")
    assert words == list(checkpoint_words(state["vocab"]))
    assert np.array_equal(model.input.weight.detach().numpy(), vectors)


def test_sparse_adam_optimizer_trains(tiny_corpus, tmp_path):
    cfg = compose_cfg(tmp_path / "run", ["corpus=text", f"corpus.path={tiny_corpus}", *TINY, "optimizer=sparse_adam",
                                         "trainer.log_every=5"])
    metrics = train(cfg)
    assert np.isfinite(metrics["loss"]) and metrics["loss"] < 6 * np.log(2)  # below the untrained K+1 terms


@pytest.mark.parametrize("opener,suffix", [(gzip.open, ".gz"), (bz2.open, ".bz2"), (lzma.open, ".xz")])
def test_compressed_corpora_give_the_same_vocabulary(tiny_corpus, tmp_path, opener, suffix):
    packed = tmp_path / f"tiny.txt{suffix}"
    with opener(packed, "wb") as f:
        f.write(tiny_corpus.read_bytes())
    plain = compose_cfg(tmp_path / "a", ["corpus=text", f"corpus.path={tiny_corpus}", *TINY])
    other = compose_cfg(tmp_path / "b", ["corpus=text", f"corpus.path={packed}", *TINY])
    assert train(plain)["train_words"] == train(other)["train_words"]
    assert (tmp_path / "a" / "vocab.txt").read_text() == (tmp_path / "b" / "vocab.txt").read_text()


def test_one_long_line_is_cut_into_sentences(tmp_path):
    words = (tmp_path / "lines.txt")
    zipf_text(words, words=30000, line_len=30000)  # text8-style: the whole corpus on one line
    cfg = compose_cfg(tmp_path / "run", ["corpus=text", f"corpus.path={words}", *TINY,
                                         "corpus.max_sentence_len=1000"])
    assert train(cfg)["train_words"] == 30000


@pytest.mark.parametrize("fmt", ["json", "csv", "parquet"])
def test_hf_loader_on_local_files(tiny_corpus, tmp_path, fmt):
    import datasets

    lines = tiny_corpus.read_text().splitlines()
    data = datasets.Dataset.from_dict({"text": lines, "id": list(range(len(lines)))})
    path = tmp_path / f"corpus.{fmt}"
    getattr(data, f"to_{fmt}")(str(path))
    cfg = compose_cfg(tmp_path / "run", ["corpus=hf", f"corpus.name={fmt}", f"corpus.data_files=[{path}]",
                                         "corpus.column=text", *TINY])
    assert train(cfg)["train_words"] == 20000


def test_hf_missing_column_is_a_clear_error(tiny_corpus, tmp_path):
    import datasets

    path = tmp_path / "c.json"
    datasets.Dataset.from_dict({"body": ["a b c"]}).to_json(str(path))
    from sgns.errors import SGNSError

    cfg = compose_cfg(tmp_path / "run", ["corpus=hf", f"corpus.data_files=[{path}]", *TINY])
    with pytest.raises(SGNSError, match="no column 'text'"):
        train(cfg)


def _one_clear_line(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [ln for ln in proc.stderr.splitlines() if "error" in ln.lower()]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


@pytest.fixture(scope="module")
def earlier_run(tmp_path_factory) -> tuple:
    """(its settings, its run dir) of a finished `sgns-train` run, which the bad commands below must not touch."""
    folder = tmp_path_factory.mktemp("earlier")
    corpus = zipf_text(folder / "tiny.txt")
    settings = ["corpus=text", f"corpus.path={corpus}", *TINY, f"data.cache_dir={folder / 'cache'}"]
    ok = run_cli(*settings, f"hydra.run.dir={folder / 'run'}")
    assert ok.returncode == 0, ok.stderr
    return settings, folder / "run"


@pytest.mark.parametrize("override,needles", [
    ("model.dim=0", ["model.dim", ">= 1"]),
    ("data.window=0", ["data.window", ">= 1"]),
    ("data.negatives=0", ["data.negatives", ">= 1"]),
    ("optimizer.lr=0", ["optimizer.lr", "> 0"]),
    ("optimizer.lr=-1", ["optimizer.lr", "> 0"]),
    ("model.dimm=5", ["dimm"]),
    ("data.window=abc", ["data.window"]),
])
def test_bad_config_fails_in_one_line_and_touches_no_earlier_run(earlier_run, tmp_path, override, needles):
    settings, finished = earlier_run
    run = tmp_path / "run"
    shutil.copytree(finished, run)  # the same finished run for every bad override, each given its own copy
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    proc = run_cli(*settings, override, f"hydra.run.dir={run}")
    _one_clear_line(proc, *needles)
    after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert after == before


@pytest.mark.parametrize("content,needles", [
    (None, ["not found"]),
    (b"", ["empty"]),
    (b"\n\n  \n", ["empty"]),
    (b"a b c\n", ["min_count"]),
])
def test_bad_corpus_fails_in_one_line(tmp_path, content, needles):
    path = tmp_path / "corpus.txt"
    if content is not None:
        path.write_bytes(content)
    proc = run_cli("corpus=text", f"corpus.path={path}", *TINY, f"hydra.run.dir={tmp_path / 'run'}")
    _one_clear_line(proc, *needles)


def test_text_corpus_without_path_is_a_clear_error(tmp_path):
    proc = run_cli("corpus=text", *TINY, f"hydra.run.dir={tmp_path / 'run'}")
    _one_clear_line(proc, "corpus.path")
