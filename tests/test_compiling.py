"""numba's compiles: announced by one line when (and only when) they compile, never timed as training, and the
tokeniser not compiled at all for a corpus read as one small piece (docs/startup.md, "First-run compiles").
Each test starts Python processes with their own empty numba cache (NUMBA_CACHE_DIR): a user's first run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict

import pytest

_COMPILE_BOTH = """
import logging, sys
logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
from sgns.corpus import scan
from sgns.pipelines.span_kernel import compiled_train_piece
scan.prepare()
compiled_train_piece(8)
print("ready")
"""

_SMALL_PIECE = """
import sys
from sgns.corpus import reading, scan
text = b"the quick brown fox\\n" * (3 * reading.COMPILED_MIN_CHARS // 20)  # compiled when warm, not when cold
piece = reading.tokenise_bytes(text)
assert len(piece.ids) == 4 * (3 * reading.COMPILED_MIN_CHARS // 20), len(piece.ids)
print(len(scan._scan.signatures))
"""


def _python(code: str, numba_cache: Path, **env: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "NUMBA_CACHE_DIR": str(numba_cache), **env})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow  # the first process compiles the tokeniser and a kernel (10-30 s)
def test_a_compile_is_announced_by_one_line_and_a_cached_load_says_nothing(tmp_path: Path) -> None:
    cold = _python(_COMPILE_BOTH, tmp_path / "numba").splitlines()
    announced = [line for line in cold if line.startswith("compiling ")]
    assert len(announced) == 2, cold
    assert announced[0].startswith("compiling the tokeniser (once")
    assert announced[1].startswith("compiling the training kernel (train_piece) for model.dim=8 (once")
    assert all(str(tmp_path / "numba") in line and "later runs load it" in line for line in announced)
    warm = _python(_COMPILE_BOTH, tmp_path / "numba").splitlines()
    assert warm == ["ready"], warm


def test_a_corpus_read_as_one_small_piece_does_not_compile_the_tokeniser(tmp_path: Path) -> None:
    # Cold, a 3 MiB piece (one piece: under SCANNER_COMPILE_MIN_CHARS) is tokenised in Python, nothing compiled.
    assert _python(_SMALL_PIECE, tmp_path / "numba").split() == ["0"]
    assert not list((tmp_path / "numba").rglob("scan.*")), "the tokeniser was compiled"


def _train(run_dir: Path, numba_cache: Path, token_cache: Path) -> Dict[str, float]:
    proc = subprocess.run([sys.executable, "-m", "sgns.train", "corpus.synthetic.sentences=3000", "trainer.epochs=1",
                           "eval.projector_words=0", f"hydra.run.dir={run_dir}"], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "NUMBA_CACHE_DIR": str(numba_cache),
                                            "SGNS_CACHE_DIR": str(token_cache)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics["compiled"] = "compiling the training kernel" in (run_dir / "train.log").read_text()
    return metrics


@pytest.mark.slow  # a run that compiles the kernel (5-20 s), then one that loads it
def test_words_per_second_leaves_the_kernels_compile_out(tmp_path: Path) -> None:
    cold = _train(tmp_path / "cold", tmp_path / "numba", tmp_path / "tokens")
    warm = _train(tmp_path / "warm", tmp_path / "numba", tmp_path / "tokens")
    assert cold["compiled"] and not warm["compiled"]
    # The compile takes seconds (the kernel alone: 4-20 s measured); training these ~36k words a fraction of one.
    assert cold["train_seconds"] < warm["train_seconds"] + 1.0, (cold["train_seconds"], warm["train_seconds"])
