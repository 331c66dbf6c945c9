"""Shared fixtures: small generated corpora and a compose helper (no shared data in unit tests).

Keeping the default run quick (issue 29 item 7): train at model.dim 8, 16, 32 or 100 where the dim does not
matter (numba compiles the span kernel once per dim, 3-10 s on a fresh clone); share a trained run through a
module-scoped fixture when tests only read it (such a fixture runs before the per-test cache below: give it its
own data.cache_dir); run torch CPU training on one thread (two wait on each other when the machine is loaded)."""

from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np
import pytest
import torch
from omegaconf import DictConfig

from sgns.hydra_app import compose
from sgns.model import SGNS


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own token/synthetic cache, never the user's ~/.cache."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("SGNS_CACHE_DIR", str(cache))
    return cache


def zipf_text(path: Path, words: int = 20000, vocab: int = 300, seed: int = 0, line_len: int = 12) -> Path:
    """A small Zipf-distributed corpus: `vocab` words w0..wN, `line_len` tokens per line."""
    rng = np.random.default_rng(seed)
    p = 1.0 / (np.arange(vocab) + 1.0)
    ids = rng.choice(vocab, size=words, p=p / p.sum())
    lines = [" ".join(f"w{i}" for i in ids[s : s + line_len]) for s in range(0, words, line_len)]
    path.write_text("\n".join(lines) + "\n")
    return path


def compose_cfg(run_dir: Path, overrides: List[str] = ()) -> DictConfig:
    """The train config as the CLI would compose it, writing into run_dir, without a progress bar."""
    return compose([f"trainer.run_dir={run_dir}", "trainer.progress=false", *overrides])


@pytest.fixture
def tiny_corpus(tmp_path: Path) -> Path:
    return zipf_text(tmp_path / "tiny.txt")


def random_model(vocab: int = 60, dim: int = 16, seed: int = 0) -> SGNS:
    """An SGNS model with random input and output vectors, so every gradient term of a step is exercised."""
    torch.manual_seed(seed)
    model = SGNS(vocab, dim)
    with torch.no_grad():
        model.output.weight.normal_(0, 0.3)
        model.input.weight.normal_(0, 0.3)
    return model


def copy_model(model: SGNS) -> SGNS:
    """An independent copy of `model` (same weights), to run a second step on."""
    twin = SGNS(*model.input.weight.shape)
    twin.load_state_dict(model.state_dict())
    return twin
