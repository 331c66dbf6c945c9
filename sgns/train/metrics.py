"""A run's `metrics.json` (the one place it is written) and its objective (the one place it is computed).

`metrics.json` holds the final loss, words, speed, evaluation results and the objective of a finished run,
or `"status": "failed"` and the error of a failed one. The objective is what a sweeper optimises: with
`objective=auto` a quality score when any benchmark was scored (the first analogy accuracy, else the first
Spearman; maximise), else the loss (minimise, with a warning), or any number in metrics.json named by its
dotted path. sgns-summarize reads both through this module.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Optional

from sgns.errors import SGNSError

FINISHED, FAILED = "finished", "failed"


def write_metrics(run_dir: str | Path, metrics: Mapping[str, Any]) -> None:
    """Replace run_dir/metrics.json atomically."""
    run_dir = Path(run_dir)
    tmp = run_dir / ".metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=2, default=float))
    os.replace(tmp, run_dir / "metrics.json")


def read_metrics(run_dir: str | Path) -> dict:
    return json.loads((Path(run_dir) / "metrics.json").read_text())


def mark_failed(run_dir: str | Path, error: BaseException | str) -> None:
    """Record in run_dir/metrics.json that the run failed and why. Never raises: the original error matters more.

    A finished run's record is kept: a failed attempt to redo it leaves its results in place.
    """
    try:
        run_dir = Path(run_dir)
        if (run_dir / "metrics.json").is_file() and read_metrics(run_dir).get("status") == FINISHED:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        write_metrics(run_dir, {"status": FAILED, "error": str(error)})
    except (OSError, ValueError):
        pass


def objective_key(setting: str, metrics: Mapping[str, Any]) -> str:
    """The metrics.json path the `objective` setting picks. auto is a quality score whenever a benchmark was
    scored: the first analogy benchmark's accuracy (the planted set on the synthetic corpus, Google's in the
    English suite), else the first similarity benchmark's Spearman; the training loss only when none was."""
    if setting == "auto":
        scored = [(name, r) for name, r in (metrics.get("eval") or {}).items() if isinstance(r, Mapping)]
        for name, result in scored:
            if "accuracy" in result and result.get("seen"):
                return f"eval.{name}.accuracy"
        for name, result in scored:
            if result.get("spearman") is not None:
                return f"eval.{name}.spearman"
        return "loss"
    return setting


def ranks_by_loss(setting: str, metrics: Mapping[str, Any]) -> bool:
    """Whether `objective=auto` fell back to the training loss (no benchmark was scored)."""
    return setting == "auto" and objective_key(setting, metrics) == "loss"


LOSS_WARNING = ("objective=auto: no benchmark was scored, so a sweep ranks runs by training loss, which does not "
                "measure the vectors and is not comparable across data.negatives; name benchmarks "
                "(eval.benchmarks=[...]) or set objective=KEY")


def lookup(metrics: Mapping[str, Any], key: str) -> Optional[Any]:
    """The value at a dotted path of metrics.json, or None."""
    value: Any = metrics
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def objective(setting: str, metrics: Mapping[str, Any]) -> float:
    """The objective's value; SGNSError if `setting` names no number in the metrics."""
    value = lookup(metrics, objective_key(setting, metrics))
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SGNSError(f"objective={setting!r} names no metric; use auto, loss or a path like "
                        f"eval.wordsim353.spearman")
    return float(value)


def higher_is_better(key: str) -> bool:
    """Accuracies and correlations are maximised, losses minimised."""
    return "loss" not in key.rsplit(".", 1)[-1]
