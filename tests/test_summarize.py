"""sgns-summarize on run dirs laid out as sgns-train leaves them (real YAML, JSON and TensorBoard event files)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import pytest
from omegaconf import OmegaConf
from torch.utils.tensorboard import SummaryWriter

from sgns.cli.summarize import INCOMPLETE, find_runs, main, summarize
from sgns.train.metrics import FAILED, FINISHED, higher_is_better, mark_failed
from sgns.train.runs import parse_overrides

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_run(path: Path, overrides: Sequence[str], metrics: Optional[dict] = None, objective: str = "auto",
             losses: Sequence[float] = (3.0, 2.5, 2.2), accuracy_curve: Sequence[float] = ()) -> Path:
    """A run dir: .hydra/{config,overrides}.yaml, tb/ events, and metrics.json unless metrics is None."""
    (path / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(list(overrides)), path / ".hydra" / "overrides.yaml")
    OmegaConf.save(OmegaConf.create({"objective": objective, "model": {"dim": 8}}), path / ".hydra" / "config.yaml")
    writer = SummaryWriter(str(path / "tb"))
    for step, loss in enumerate(losses, 1):
        writer.add_scalar("train/loss", loss, step * 10)
    for i, accuracy in enumerate(accuracy_curve, 1):
        writer.add_scalar("eval/qw/accuracy", accuracy, i * 1000)
    writer.close()
    if metrics is not None:
        (path / "metrics.json").write_text(json.dumps(metrics))
    return path


def finished(loss: float, accuracy: Optional[float] = None, spearman: Optional[float] = None) -> dict:
    evals: Dict[str, dict] = {}
    if accuracy is not None:
        evals["qw"] = {"accuracy": accuracy, "seen": 90, "total": 100, "sections": {"capitals": accuracy}}
    if spearman is not None:
        evals["ws"] = {"spearman": spearman, "pearson": spearman, "pairs": 300}
    return {"status": "finished", "loss": loss, "train_words": 20000, "words_per_sec": 12345.6, "wall_seconds": 3.2,
            "eval": evals}


def read_csv(path: Path) -> List[Dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """Six jobs of a negatives x lr grid: four finished, one failed, one that never finished."""
    root = tmp_path / "multirun"
    grid = [("2", "0.01", finished(2.1, 0.30, 0.5)), ("2", "0.05", finished(2.0, 0.55, 0.4)),
            ("5", "0.01", finished(3.1, 0.20, 0.6)), ("5", "0.05", finished(3.0, 0.45, 0.3)),
            ("15", "0.01", {"status": "failed", "error": "loss became nan at step 40: training diverged"}),
            ("15", "0.05", None)]
    for job, (negatives, lr, metrics) in enumerate(grid):
        make_run(root / str(job), [f"data.negatives={negatives}", f"optimizer.lr={lr}", "trainer.epochs=1"],
                 metrics, accuracy_curve=[0.1, metrics["eval"]["qw"]["accuracy"]] if metrics and "eval" in metrics
                 else [])
    return root


def test_finds_every_run_including_failed_and_incomplete(sweep: Path) -> None:
    runs = find_runs(sweep)
    assert [r.name for r in runs] == ["0", "1", "2", "3", "4", "5"]
    assert [r.status for r in runs] == [FINISHED] * 4 + [FAILED, INCOMPLETE]
    assert runs[4].error.startswith("loss became nan")
    assert runs[5].metric("loss") == pytest.approx(2.2)  # the last logged loss of an unfinished run
    assert runs[5].metrics["train_words"] == 30  # the last x of its loss curve: corpus words trained
    assert runs[0].overrides == {"data.negatives": "2", "optimizer.lr": "0.01", "trainer.epochs": "1"}


def test_sorts_by_analogy_accuracy_best_first_and_keeps_unfinished_last(sweep: Path) -> None:
    summary = summarize(find_runs(sweep))
    assert (summary.objective, summary.maximise) == ("eval.qw.accuracy", True)
    assert [r.name for r in summary.runs] == ["1", "3", "0", "2", "4", "5"]
    assert summary.swept == ["data.negatives", "optimizer.lr"]
    assert summary.constant == {"trainer.epochs": "1"}
    assert summary.eval_columns == ["eval.qw.accuracy", "eval.ws.spearman"]


def test_a_loss_objective_is_minimised(tmp_path: Path) -> None:
    for job, loss in enumerate([2.5, 1.5, 2.0]):
        make_run(tmp_path / str(job), [f"model.dim={8 * (job + 1)}"], finished(loss), objective="loss")
    summary = summarize(find_runs(tmp_path))
    assert (summary.objective, summary.maximise) == ("loss", False)
    assert [summary.objective_of(r) for r in summary.runs] == [1.5, 2.0, 2.5]


def test_objective_auto_without_an_analogy_file_is_the_first_spearman_not_the_loss(tmp_path: Path) -> None:
    """Issue 27: auto is a quality score whenever any benchmark was scored (it was the loss here before)."""
    for job, loss in enumerate([2.5, 1.5]):
        make_run(tmp_path / str(job), [f"model.dim={8 * (job + 1)}"], finished(loss, spearman=0.5 - job / 10))
    summary = summarize(find_runs(tmp_path))
    assert (summary.objective, summary.maximise, summary.by_loss) == ("eval.ws.spearman", True, False)
    assert [r.name for r in summary.runs] == ["0", "1"]


def test_command_line_objective_overrides_the_runs(sweep: Path) -> None:
    summary = summarize(find_runs(sweep), objective="eval.ws.spearman")
    assert [r.name for r in summary.runs][:4] == ["2", "0", "1", "3"]


def test_direction_follows_the_metric_name() -> None:
    assert higher_is_better("eval.questions-words.accuracy") and higher_is_better("eval.simlex999.spearman")
    assert not higher_is_better("loss") and not higher_is_better("eval.x.loss")


def test_overrides_parse_like_hydra_writes_them() -> None:
    assert parse_overrides(["a.b=1", "+c=x=y", "++d=2", "~e", "corpus=text"]) == {
        "a.b": "1", "c": "x=y", "d": "2", "e": "(deleted)", "corpus": "text"}


def test_command_writes_table_csv_markdown_and_plots(sweep: Path, capsys: pytest.CaptureFixture) -> None:
    main([str(sweep)])
    out = capsys.readouterr().out
    assert "6 runs (4 finished, 1 failed, 1 incomplete); sorted by objective eval.qw.accuracy (higher is better)" in out
    assert "same in every run: trainer.epochs=1" in out
    table = [line for line in out.splitlines() if line.startswith("| ")]
    assert len(table) == 2 + 6
    assert table[2].split("|")[2].strip() == "1" and "0.55" in table[2]  # best first
    assert "| failed " in table[6] and "loss became nan" in table[6]
    assert "| incomplete " in table[7] and "no metrics.json" in table[7]

    rows = read_csv(sweep / "summary.csv")
    assert [r["run"] for r in rows] == ["1", "3", "0", "2", "4", "5"]
    assert rows[0]["objective"] == "0.55" and rows[0]["eval.qw.accuracy"] == "0.55"
    assert rows[0]["trainer.epochs"] == "1" and rows[0]["eval.ws.pairs"] == "300.0"  # everything, full precision
    assert not any(key.startswith("eval.qw.sections") for key in rows[0])
    assert rows[4]["status"] == "failed" and rows[4]["error"].startswith("loss became nan")
    assert rows[5]["status"] == "incomplete" and rows[5]["objective"] == ""
    assert (sweep / "summary.md").read_text().splitlines()[0].startswith("6 runs")

    import matplotlib.image

    for name in ("objective_vs_hparams.png", "curves.png"):
        path = sweep / name
        assert path.read_bytes()[:8] == PNG_MAGIC
        pixels = matplotlib.image.imread(path)
        assert pixels.shape[1] > 400 and pixels[..., :3].std() > 0.01


def test_categorical_and_single_value_sweeps_plot(tmp_path: Path) -> None:
    for job, name in enumerate(["sgd", "sparse_adam"]):
        make_run(tmp_path / str(job), [f"optimizer={name}"], finished(2.0 + job, 0.3 - job / 10))
    main([str(tmp_path), "--out", str(tmp_path / "report")])
    assert (tmp_path / "report" / "objective_vs_hparams.png").read_bytes()[:8] == PNG_MAGIC
    assert not (tmp_path / "summary.csv").exists()
    one = tmp_path / "one"
    make_run(one, [], finished(2.0, 0.3))
    main([str(one)])
    assert read_csv(one / "summary.csv")[0]["run"] == "."
    assert (one / "curves.png").read_bytes()[:8] == PNG_MAGIC


def test_no_plots_flag(sweep: Path) -> None:
    main([str(sweep), "--no-plots"])
    assert (sweep / "summary.csv").is_file() and not (sweep / "curves.png").exists()


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_a_path_without_runs_fails_in_one_line(tmp_path: Path, make: str) -> None:
    target = tmp_path / "nothing"
    if make == "empty":
        target.mkdir()
    result = subprocess.run([sys.executable, "-m", "sgns.cli.summarize", str(target)], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("sgns-summarize: error: ")
    assert ("not a directory" if make == "missing" else "no runs under") in result.stderr


def test_mark_failed_records_the_error_but_never_a_finished_run(tmp_path: Path) -> None:
    mark_failed(tmp_path / "run", ValueError("corpus file not found: x.txt"))
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == {
        "status": "failed", "error": "corpus file not found: x.txt"}
    done = tmp_path / "done"
    done.mkdir()
    (done / "metrics.json").write_text(json.dumps(finished(2.0)))
    mark_failed(done, "later attempt failed")
    assert json.loads((done / "metrics.json").read_text())["status"] == "finished"
    (tmp_path / "file.txt").write_text("a file where the run dir would go")
    mark_failed(tmp_path / "file.txt" / "sub", "cannot write here")  # never raises: the real error matters more
