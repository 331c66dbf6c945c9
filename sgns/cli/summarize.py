"""`sgns-summarize PATH`: every run under PATH (a sweep dir or any dir of runs) compared at a glance.

A run is a directory holding `.hydra/` (Hydra writes it before the job starts, so failed and unfinished runs
are found too). For each run: its overrides (`.hydra/overrides.yaml`), its status and final metrics
(`metrics.json`; a failed run's says `"status": "failed"` and why, a run without one is incomplete), and its
curves (the TensorBoard event files in `tb/`). Out come a table sorted by the objective, best first (printed,
and written as summary.csv and summary.md), and PNG plots: the objective against each swept hyperparameter,
and the loss and evaluation curves of all runs overlaid. Runs that did not finish are listed last, marked.
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from sgns.cli.common import OneLineParser, quiet_broken_pipe
from sgns.errors import SGNSError, exit_with_error
from sgns.train.metrics import FAILED, FINISHED, LOSS_WARNING, higher_is_better, objective_key, ranks_by_loss
from sgns.train.runs import INCOMPLETE, Curve, Run

# Final metrics shown in the table besides the objective; evaluation results add `eval.<name>.<key>` columns.
TABLE_METRICS = ("loss", "train_words", "words_per_sec", "wall_seconds")
EVAL_TABLE_KEYS = ("accuracy", "spearman", "coverage")  # each score with the share of the benchmark it covers
CURVE_KEYS = ("accuracy", "spearman")


def _natural(text: str) -> List[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def read_curves(tb_dir: Path) -> Dict[str, Curve]:
    """Every scalar series in a run's TensorBoard event files (all of them, so resumed runs come out whole)."""
    if not tb_dir.is_dir():
        return {}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    curves: Dict[str, Curve] = {}
    for tag in accumulator.Tags().get("scalars", []):
        events = accumulator.Scalars(tag)
        curves[tag] = ([float(e.step) for e in events], [float(e.value) for e in events])
    return curves


def load_run(path: Path, root: Path) -> Run:
    run = Run.read(path, name=str(path.relative_to(root)) if path != root else ".")
    run.curves = read_curves(path / "tb")
    if run.status != FINISHED and "train/loss" in run.curves:
        words, values = run.curves["train/loss"]
        run.metrics.setdefault("loss", values[-1])  # the last logged loss shows how far it got
        run.metrics.setdefault("train_words", int(words[-1]))  # the x-axis is corpus words trained
    return run


def find_runs(root: Path) -> List[Run]:
    if not root.is_dir():
        raise SGNSError(f"{root} is not a directory: give a sweep dir (outputs/multirun/DATE/TIME) or a dir of runs")
    dirs = {p.parent for p in root.rglob(".hydra") if p.is_dir() and ".submitit" not in p.parts}
    if not dirs:
        raise SGNSError(f"no runs under {root}: a run is a directory holding .hydra/ (as sgns-train makes)")
    return [load_run(d, root) for d in sorted(dirs, key=lambda d: _natural(str(d)))]


@dataclass
class Summary:
    runs: List[Run]  # sorted: finished by objective (best first), then the rest in path order
    objective: str  # the metrics.json path sorted on
    maximise: bool
    swept: List[str]  # override keys whose value differs between runs
    constant: Dict[str, str]  # override keys every run shares, with their value
    eval_columns: List[str]  # eval.<name>.<key> columns of the table
    by_loss: bool = False  # objective=auto fell back to the loss: no run scored a benchmark

    def objective_of(self, run: Run) -> Optional[float]:
        return run.metric(self.objective)


def summarize(runs: List[Run], objective: Optional[str] = None) -> Summary:
    finished = [r for r in runs if r.status == FINISHED]
    by_loss = False
    if objective is None:
        objective = objective_key(finished[0].objective_setting, finished[0].metrics) if finished else "loss"
        by_loss = bool(finished) and ranks_by_loss(finished[0].objective_setting, finished[0].metrics)
    maximise = higher_is_better(objective)
    keys = sorted({k for r in runs for k in r.overrides}, key=_natural)
    swept = [k for k in keys if len({r.overrides.get(k) for r in runs}) > 1]
    constant = {k: runs[0].overrides[k] for k in keys if k not in swept}
    eval_columns: List[str] = []
    for r in runs:
        for name, result in (r.metrics.get("eval") or {}).items():
            for key in EVAL_TABLE_KEYS:
                column = f"eval.{name}.{key}"
                if isinstance(result, Mapping) and key in result and column not in eval_columns:
                    eval_columns.append(column)

    def rank(r: Run) -> Tuple[int, float, List[Any]]:
        value = r.metric(objective)
        if r.status != FINISHED or value is None or math.isnan(value):
            return (1, 0.0, _natural(r.name))
        return (0, -value if maximise else value, _natural(r.name))

    return Summary(sorted(runs, key=rank), objective, maximise, swept, constant, eval_columns, by_loss)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if abs(value) >= 1000 or value.is_integer():
            return f"{value:,.0f}"
        return f"{value:.4g}"
    return str(value)


def _short(value: str) -> str:
    """An override value for the table: long floats (Optuna's samples) cut to 4 significant digits."""
    if len(value) > 8:
        try:
            return f"{float(value):.4g}"
        except ValueError:
            pass
    return value


def table_rows(summary: Summary) -> Tuple[List[str], List[List[str]]]:
    """The printed / Markdown table: rank, run, status, swept values, objective, metrics, note."""
    arrow = "max" if summary.maximise else "min"
    header = ["#", "run", "status", *summary.swept, f"objective ({arrow})",
              "loss", *[c.removeprefix("eval.") for c in summary.eval_columns], "words", "words/s", "wall s", "note"]
    rows = []
    for i, r in enumerate(summary.runs, 1):
        note = r.error if r.status != FINISHED else ""
        if len(note) > 90:
            note = note[:87] + "..."
        rows.append([str(i), r.name, r.status, *[_short(r.overrides.get(k, "")) for k in summary.swept],
                     _cell(summary.objective_of(r)), _cell(r.metric("loss")),
                     *[_cell(r.metric(c)) for c in summary.eval_columns],
                     _cell(r.metric("train_words")), _cell(r.metric("words_per_sec")),
                     _cell(r.metric("wall_seconds")), note.replace("|", "/").replace("\n", " ")])
    return header, rows


def markdown_table(header: List[str], rows: List[List[str]]) -> str:
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |",
             "| " + " | ".join("-" * w for w in widths) + " |"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in rows]
    return "\n".join(lines)


def describe(summary: Summary) -> str:
    counts = {s: sum(r.status == s for r in summary.runs) for s in (FINISHED, FAILED, INCOMPLETE)}
    others = len(summary.runs) - sum(counts.values())
    parts = [f"{n} {s}" for s, n in counts.items() if n] + ([f"{others} other"] if others else [])
    better = "higher" if summary.maximise else "lower"
    runs = f"{len(summary.runs)} run" + ("s" if len(summary.runs) != 1 else "")
    lines = [f"{runs} ({', '.join(parts)}); sorted by objective {summary.objective} "
             f"({better} is better)"]
    if summary.by_loss:
        lines.append("warning: " + LOSS_WARNING)
    if summary.constant:
        lines.append("same in every run: " + " ".join(f"{k}={v}" for k, v in summary.constant.items()))
    return "\n".join(lines)


def write_csv(summary: Summary, path: Path) -> None:
    """Every run with all its overrides and every numeric final metric, at full precision."""
    override_keys = [*summary.swept, *summary.constant]
    metric_keys: List[str] = []
    for r in summary.runs:
        for key in _flat_numbers(r.metrics):
            if key not in metric_keys and key != "objective":  # the objective column holds it
                metric_keys.append(key)
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["rank", "run", "status", *override_keys, "objective", *metric_keys, "error"])
        for i, r in enumerate(summary.runs, 1):
            flat = _flat_numbers(r.metrics)
            objective = summary.objective_of(r)
            out.writerow([i, r.name, r.status, *[r.overrides.get(k, "") for k in override_keys],
                          "" if objective is None else repr(objective),
                          *["" if flat.get(k) is None else repr(flat[k]) for k in metric_keys], r.error])


def _flat_numbers(metrics: Mapping[str, Any], prefix: str = "") -> Dict[str, float]:
    flat: Dict[str, float] = {}
    for key, value in metrics.items():
        if key == "sections":  # per-section analogy accuracies: too many columns
            continue
        if isinstance(value, Mapping):
            flat.update(_flat_numbers(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[f"{prefix}{key}"] = float(value)
    return flat


def _label(run: Run, swept: List[str]) -> str:
    label = ", ".join(f"{k.rsplit('.', 1)[-1]}={run.overrides.get(k, '')}" for k in swept) or run.dir.name
    return label if run.status == FINISHED else f"{label} ({run.status})"


def _numeric(values: Sequence[str]) -> Optional[List[float]]:
    try:
        return [float(v) for v in values]
    except ValueError:
        return None


def plot_objective(summary: Summary, path: Path) -> bool:
    """One panel per swept hyperparameter: each finished run's objective at its value, and the mean per value."""
    import matplotlib.pyplot as plt

    scored = [(r, summary.objective_of(r)) for r in summary.runs]
    scored = [(r, v) for r, v in scored if v is not None and not math.isnan(v)]
    if not scored:
        return False
    keys = summary.swept or ["run"]
    cols = min(len(keys), 3)
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys, strict=False):
        raw = [r.overrides.get(key, "") if key != "run" else r.name for r, _ in scored]
        ys = [v for _, v in scored]
        numbers = _numeric(raw)
        if numbers is not None:
            xs = numbers
            if min(xs) > 0 and max(xs) / min(xs) >= 20:
                ax.set_xscale("log")
        else:
            categories = sorted(set(raw), key=_natural)
            xs = [float(categories.index(v)) for v in raw]
            ax.set_xticks(range(len(categories)), categories, rotation=30 if len(categories) > 4 else 0)
        ax.scatter(xs, ys, s=28, alpha=0.8, zorder=3)
        # Runs that share every other swept value are joined by a line: on a grid this shows the interactions.
        others = [k for k in summary.swept if k != key]
        groups: Dict[Tuple[str, ...], List[Tuple[float, float]]] = {}
        for (r, _), x, y in zip(scored, xs, ys, strict=True):
            groups.setdefault(tuple(r.overrides.get(k, "") for k in others), []).append((x, y))
        lines = {g: sorted(points) for g, points in groups.items() if len({x for x, _ in points}) > 1}
        for g, points in lines.items():
            label = ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in zip(others, g, strict=True)) or None
            ax.plot([x for x, _ in points], [y for _, y in points], lw=1, alpha=0.7, zorder=2, label=label)
        if others and 0 < len(lines) <= 8:
            ax.legend(fontsize=7)
        ax.set_xlabel(key)
        ax.set_ylabel(summary.objective.removeprefix("eval."))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.set_visible(False)
    missing = len(summary.runs) - len(scored)
    better = "higher" if summary.maximise else "lower"
    title = f"objective ({better} is better) vs swept hyperparameters, {len(scored)} runs"
    fig.suptitle(title + (f"; {missing} without an objective not shown" if missing else ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plot_curves(summary: Summary, path: Path) -> bool:
    """train/loss and each eval accuracy / spearman against corpus words trained, all runs overlaid."""
    import matplotlib.pyplot as plt

    tags = ["train/loss"] if any("train/loss" in r.curves for r in summary.runs) else []
    for r in summary.runs:
        for tag in r.curves:
            if tag.startswith("eval/") and tag.rsplit("/", 1)[-1] in CURVE_KEYS and tag not in tags:
                tags.append(tag)
    if not tags:
        return False
    cols = min(len(tags), 2)
    rows = math.ceil(len(tags) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.4 * cols, 4.0 * rows), squeeze=False)
    colours = plt.get_cmap("tab10" if len(summary.runs) <= 10 else "tab20")
    for ax, tag in zip(axes.flat, tags, strict=False):
        for i, r in enumerate(summary.runs):
            if tag not in r.curves:
                continue
            steps, values = r.curves[tag]
            style = "-" if r.status == FINISHED else "--"
            marker = "o" if len(steps) <= 20 else None
            ax.plot(steps, values, style, marker=marker, ms=3, lw=1.2, color=colours(i % colours.N),
                    label=_label(r, summary.swept))
        ax.set_title(tag, fontsize=10)
        ax.set_xlabel("corpus words")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(tags):]:
        ax.set_visible(False)
    if len(summary.runs) <= 16:
        axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def write_outputs(summary: Summary, out_dir: Path, plots: bool = True) -> List[Path]:
    """summary.csv, summary.md and (if matplotlib is installed) the two PNGs in out_dir; returns what it wrote."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        written = [out_dir / "summary.csv", out_dir / "summary.md"]
        write_csv(summary, written[0])
        header, rows = table_rows(summary)
        written[1].write_text(describe(summary) + "\n\n" + markdown_table(header, rows) + "\n")
    except OSError as e:
        raise SGNSError(f"cannot write the summary into {out_dir}: {e.strerror or e}; "
                        "pick another dir with --out") from None
    if plots:
        try:
            import matplotlib

            matplotlib.use("Agg")
        except ImportError:
            sys.stderr.write('sgns-summarize: no plots: matplotlib is not installed (pip install "sgns[plots]")\n')
            return written
        for name, plot in (("objective_vs_hparams.png", plot_objective), ("curves.png", plot_curves)):
            if plot(summary, out_dir / name):
                written.append(out_dir / name)
    return written


def main(argv: Optional[List[str]] = None) -> None:
    """Console entry point: `sgns-summarize PATH [--out DIR] [--objective KEY] [--no-plots]`."""
    parser = OneLineParser(prog="sgns-summarize", description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path, help="a sweep dir (outputs/multirun/DATE/TIME) or any dir of runs")
    parser.add_argument("--out", type=Path, default=None, help="where to write the table and plots (default: PATH)")
    parser.add_argument("--objective", default=None,
                        help="metrics.json path to sort by, e.g. eval.ws353.spearman (default: the runs' "
                             "objective: first analogy accuracy, else first Spearman, else loss); names ending in "
                             "loss are minimised")
    parser.add_argument("--no-plots", action="store_true", help="write only the table")
    args = parser.parse_args(argv)
    with quiet_broken_pipe():
        _summarize_command(args)


def _summarize_command(args: argparse.Namespace) -> None:
    try:
        summary = summarize(find_runs(args.path), args.objective)
        written = write_outputs(summary, args.out or args.path, plots=not args.no_plots)
    except SGNSError as e:
        exit_with_error("sgns-summarize", e)
    print(describe(summary))
    print(markdown_table(*table_rows(summary)))
    print("wrote " + ", ".join(str(p) for p in written))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
