"""model.init_from / model.freeze_init through real training runs (every CPU kernel), resume, and the CLI errors."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_cfg, zipf_text

from sgns.errors import SGNSError
from sgns.load import load_model
from sgns.train import train
from sgns.vectors import load_word2vec, save_word2vec

TINY = ["model.dim=8", "trainer.epochs=1", "data.min_count=1", "data.batch_size=256", "trainer.device=cpu",
        "eval.projector_words=0", "trainer.threads=1"]


def run(run_dir: Path, corpus: Path, *extra: str) -> dict:
    return train(compose_cfg(run_dir, ["corpus=text", f"corpus.path={corpus}", *TINY, *extra]))


def vectors(run_dir: Path) -> dict:
    words, table = load_word2vec(run_dir / "vectors.bin")
    return dict(zip(words, table, strict=True))


@pytest.fixture(scope="module")
def earlier(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A finished run on corpus A (words w0..w299) and a new corpus B (w0..w399: 100 new words)."""
    folder = tmp_path_factory.mktemp("init_from")
    corpus_a = zipf_text(folder / "a.txt", words=15000, vocab=300, seed=0)
    corpus_b = zipf_text(folder / "b.txt", words=15000, vocab=400, seed=3)  # seed 1 would replay trainer.seed=1's draws
    run(folder / "a", corpus_a)
    return {"a": folder / "a", "b": corpus_b, "folder": folder}


@pytest.mark.parametrize("extra", [[], ["trainer.kernel=torch"], ["trainer.deterministic=true"],
                                   ["optimizer=sparse_adam"]],
                         ids=["auto", "torch", "deterministic", "sparse_adam"])
def test_frozen_imported_rows_stay_bit_identical_with_every_kernel(earlier, tmp_path: Path, extra, caplog):
    caplog.set_level(logging.INFO, logger="sgns")
    source = earlier["a"] / "vectors.bin"
    run(tmp_path / "b", earlier["b"], f"model.init_from={source}", "model.freeze_init=true", *extra)
    before, after = vectors(earlier["a"]), vectors(tmp_path / "b")
    shared = [w for w in after if w in before]
    new = [w for w in after if w not in before]
    assert len(shared) > 200 and len(new) > 50
    for w in shared:
        assert np.array_equal(after[w], before[w]), w  # bit-identical
    fresh = np.stack([after[w] for w in new])
    assert np.abs(fresh).max() > 0.5 / 8  # new words trained away from their uniform(-0.5/dim, 0.5/dim) start
    assert any(f"{len(shared)} of {len(after)} vocabulary words start from" in r.message for r in caplog.records)


def test_without_freeze_imported_rows_train_on(earlier, tmp_path: Path):
    run(tmp_path / "b", earlier["b"], f"model.init_from={earlier['a'] / 'vectors.bin'}")
    before, after = vectors(earlier["a"]), vectors(tmp_path / "b")
    changed = [not np.array_equal(after[w], before[w]) for w in after if w in before]
    assert all(changed)


def test_checkpoint_source_imports_output_vectors_too(earlier, tmp_path: Path):
    """With a vanishing learning rate the new run ends where it started: the source's rows, both tables."""
    run(tmp_path / "b", earlier["b"], f"model.init_from={earlier['a']}", "optimizer.lr=1e-30")
    a, b = load_model(earlier["a"]), load_model(tmp_path / "b")
    shared = [w for w in b.vocab.words if w in a.vocab.index]
    rows_a = torch.tensor([a.vocab.index[w] for w in shared])
    rows_b = torch.tensor([b.vocab.index[w] for w in shared])
    assert torch.equal(b.input.weight[rows_b], a.input.weight[rows_a])
    assert torch.equal(b.output.weight[rows_b], a.output.weight[rows_a])
    new = torch.tensor([i for i, w in enumerate(b.vocab.words) if w not in a.vocab.index])
    assert float(b.output.weight[new].detach().abs().max()) < 1e-20  # the usual zero start (plus lr-sized steps)


def test_resume_keeps_rows_frozen_and_is_exact(earlier, tmp_path: Path):
    settings = [f"model.init_from={earlier['a'] / 'vectors.bin'}", "model.freeze_init=true", "trainer.epochs=2",
                "trainer.checkpoint_every=7", "trainer.keep_checkpoints=100"]
    run(tmp_path / "whole", earlier["b"], *settings)
    middle = sorted((tmp_path / "whole" / "checkpoints").glob("step-*.pt"))[1]  # mid-run, not the final one
    run(tmp_path / "resumed", earlier["b"], *settings, f"trainer.resume={middle}")
    whole, resumed, before = vectors(tmp_path / "whole"), vectors(tmp_path / "resumed"), vectors(earlier["a"])
    assert all(np.array_equal(whole[w], resumed[w]) for w in whole)
    assert all(np.array_equal(resumed[w], before[w]) for w in resumed if w in before)


def test_full_softmax_run_starts_from_an_sgns_checkpoint(earlier, tmp_path: Path):
    run(tmp_path / "b", earlier["b"], "model=full_softmax", f"model.init_from={earlier['a']}",
        "model.freeze_init=true")
    before, after = vectors(earlier["a"]), vectors(tmp_path / "b")
    assert all(np.array_equal(after[w], before[w]) for w in after if w in before)


def test_bad_sources_are_one_line_errors(earlier, tmp_path: Path):
    corpus = earlier["b"]
    with pytest.raises(SGNSError, match=r"holds 8-dimensional vectors but model.dim=16: set model.dim=8"):
        run(tmp_path / "dim", corpus, f"model.init_from={earlier['a']}", "model.dim=16")
    other = tmp_path / "other.bin"
    save_word2vec(other, ["zebra", "yak"], np.ones((2, 8), dtype=np.float32))
    with pytest.raises(SGNSError, match="shares no word with this vocabulary"):
        run(tmp_path / "none", corpus, f"model.init_from={other}")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n not vectors")
    with pytest.raises(SGNSError, match="model.init_from=.*not a word2vec file"):
        run(tmp_path / "junk", corpus, f"model.init_from={junk}")
    with pytest.raises(SGNSError, match="model.init_from=.*must be null or an existing"):
        run(tmp_path / "missing", corpus, f"model.init_from={tmp_path / 'nope.bin'}")
    with pytest.raises(SGNSError, match="model.freeze_init=True is out of range.*set model.init_from=PATH"):
        run(tmp_path / "freeze", corpus, "model.freeze_init=true")
    assert not (tmp_path / "dim" / "vectors.bin").exists()


def test_cli_dimension_mismatch_exits_2_with_one_line(earlier, tmp_path: Path):
    proc = subprocess.run(
        [sys.executable, "-m", "sgns.train", "corpus=text", f"corpus.path={earlier['b']}", *TINY, "model.dim=16",
         f"model.init_from={earlier['a'] / 'vectors.bin'}", f"hydra.run.dir={tmp_path / 'run'}",
         "trainer.progress=false"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "model.dim=16" in errors[0] and "Traceback" not in proc.stderr
