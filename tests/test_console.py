"""What a run prints: off a terminal whole lines, no progress-bar frames glued by '\r'; scores rounded."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import zipf_text

from sgns.train.progress import PlainProgress, progress_bar


def test_piped_training_prints_progress_lines_without_carriage_returns(tmp_path: Path) -> None:
    corpus = zipf_text(tmp_path / "tiny.txt", words=100000)
    # stdout and stderr to pipes, as `sgns-train ... | cat` or `> log 2>&1` make them
    proc = subprocess.run(["sgns-train", "corpus=text", f"corpus.path={corpus}", "model.dim=16", "trainer.epochs=2",
                           "data.min_count=2", "data.batch_size=512", "eval=none", f"data.cache_dir={tmp_path / 'c'}",
                           f"hydra.run.dir={tmp_path / 'run'}"],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    assert "\r" not in output, "progress-bar frames in piped output"
    progress = [line for line in output.splitlines() if line.startswith("progress: ")]
    assert 10 <= len(progress) <= 11 and progress[-1].startswith("progress: 100% (200,000 of 200,000 words)"), \
        progress


def test_plain_progress_writes_one_line_per_tenth_and_resumes_from_its_start() -> None:
    out = io.StringIO()
    bar = progress_bar(1000, 400, enabled=True, file=out)  # a StringIO is no terminal
    assert isinstance(bar, PlainProgress)
    for _ in range(60):
        bar.update(10)
        bar.set_postfix(loss="2.500", refresh=False)
    bar.close()
    lines = out.getvalue().splitlines()
    assert [line.split(" (")[0] for line in lines] == [f"progress: {p}%" for p in (50, 60, 70, 80, 90, 100)]
    assert lines[-1].startswith("progress: 100% (1,000 of 1,000 words)") and lines[-1].endswith("loss 2.500")
    assert progress_bar(1000, 0, enabled=False, file=io.StringIO()).disable  # progress=false: nothing


def test_a_sweep_logs_its_spearman_objective_rounded(tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    corpus = zipf_text(tmp_path / "tiny.txt", words=20000)
    pairs = tmp_path / "sim.tsv"
    pairs.write_text("\n".join(f"w{i}\tw{i + 3}\t{(i * 7) % 10}.{i % 9}" for i in range(40)) + "\n")
    proc = subprocess.run(["sgns-train", "-m", "hparams_search=optuna_sgns", "hydra.sweeper.n_trials=1",
                           "corpus=text", f"corpus.path={corpus}", "model.dim=16", "trainer.epochs=1",
                           "data.min_count=2", f"eval.similarities=[{pairs}]", "eval.analogies=[]",
                           "eval.every_words=0", f"data.cache_dir={tmp_path / 'c'}",
                           f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    logged = re.findall(r"(?:Best value|finished with value): (\S+)", output)
    assert logged and all(re.fullmatch(r"-?\d\.\d{4}", v.rstrip(".,")) for v in logged), logged


def test_the_train_loop_and_its_progress_load_no_ipython() -> None:
    """tqdm.auto's choice is read without importing tqdm.notebook, which loads IPython (22 MiB of RSS in every
    run: docs/memory.md); off a notebook the bar is still the plain lines."""
    code = ("import io, sys\nimport sgns.train.loop\nfrom sgns.train.progress import PlainProgress, progress_bar\n"
            "bar = progress_bar(10, 0, enabled=True, file=io.StringIO())\n"
            "print(isinstance(bar, PlainProgress), sorted(m for m in sys.modules if m.split('.')[0] == 'IPython'))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert proc.returncode == 0 and proc.stdout.split() == ["True", "[]"], proc.stdout + proc.stderr[-2000:]
