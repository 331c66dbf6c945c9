"""The GPU benchmark: sgns-train on CUDA (the device pipeline) on gutenberg_dev, its metrics.json as a table.

Each configuration is one `sgns-train` process (`python -m sgns.train`, the real command line) with
`trainer.device=cuda`; the figures come from the run's own metrics.json: `words_per_sec` is training
throughput (corpus words per second of the training loop, tokenising and evaluation excluded), quality is
the run's final evaluation (questions-words top-30k 3CosAdd, WordSim353 Spearman). One command runs the
whole set and writes `gpu_benchmark.md` and `gpu_benchmark.json` under `--out` (default: $OUT, else ./):

    python scripts/benchmark_gpu.py --out "$OUT"

Configurations (all window 5, subsample 1e-3, min_count 5, lr 0.025 decayed linearly, the GPU defaults for
batch size and row cap): dim 100 / 5 negatives at 1 and 5 epochs; dim 300 / 15 negatives at 1 epoch.
`--quick` runs only the first; `--device cpu` runs the same set on the CPU torch path (slow: for checking
the script). The token cache is shared across runs (tokenising happens once and is not timed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = ROOT.parent / "shared" / "data" / "corpora" / "gutenberg_dev.txt.gz"
EVAL_DIR = ROOT.parent / "shared" / "data" / "eval"

CONFIGS = [  # name, overrides
    ("dim100 neg5 1 epoch", ["model.dim=100", "data.negatives=5", "trainer.epochs=1"]),
    ("dim100 neg5 5 epochs", ["model.dim=100", "data.negatives=5", "trainer.epochs=5"]),
    ("dim300 neg15 1 epoch", ["model.dim=300", "data.negatives=15", "trainer.epochs=1"]),
]


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        try:
            import torch

            return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CUDA unavailable"
        except Exception as e:  # noqa: BLE001 - reported in the table, never fatal
            return f"unknown ({e})"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"


def train_command(corpus: Path, run_dir: Path, device: str, overrides: List[str], eval_dir: Path) -> List[str]:
    return [sys.executable, "-m", "sgns.train", "corpus=text", f"corpus.path={corpus}", "data.window=5",
            "data.min_count=5", "data.subsample=1e-3", "optimizer.lr=0.025", f"trainer.device={device}",
            "trainer.kernel=torch", "trainer.seed=1", "trainer.progress=false", "eval.projector_words=0",
            f"eval.analogies=[{eval_dir / 'questions-words.txt'}]",
            f"eval.similarities=[{eval_dir / 'wordsim353.tsv'}]",
            f"hydra.run.dir={run_dir}", *overrides]


def run_one(name: str, cmd: List[str], run_dir: Path, env: Dict[str, str], timeout: float) -> Dict:
    log = run_dir.with_suffix(".log")
    start = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, timeout=timeout)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        return {"name": name, "error": log.read_text(errors="replace")[-1500:], "wall": wall}
    m = json.loads((run_dir / "metrics.json").read_text())
    analogy = next((v["accuracy"] for v in m["eval"].values() if "accuracy" in v), None)
    ws353 = next((v["spearman"] for v in m["eval"].values() if "spearman" in v), None)
    return {"name": name, "wall": wall, "words_per_sec": m["words_per_sec"], "train_seconds": m["train_seconds"],
            "train_words": m["train_words"], "steps": m["steps"], "analogy": analogy, "ws353": ws353,
            "device": m.get("device")}


def fmt(v: Optional[float], spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="only the first configuration")
    ap.add_argument("--extra", default="", help="comma-separated overrides for every run")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per run")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.out / "runs"
    work.mkdir(exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1", SGNS_CACHE_DIR=str(work / "cache"))
    extra = [o for o in args.extra.split(",") if o]
    gpu = device_name(args.device)
    results = []
    for i, (name, overrides) in enumerate(CONFIGS[:1] if args.quick else CONFIGS):
        run_dir = work / f"run{i}"
        cmd = train_command(args.corpus.resolve(), run_dir, args.device, overrides + extra, EVAL_DIR)
        r = run_one(name, cmd, run_dir, env, args.timeout)
        r["command"] = " ".join(cmd[1:])
        results.append(r)
        print(json.dumps(r), file=sys.stderr, flush=True)
        (args.out / "gpu_benchmark.json").write_text(json.dumps({"device": gpu, "runs": results}, indent=2))
    lines = [f"device: {gpu}; corpus: {args.corpus.name}; extra overrides: {extra or 'none'}", "",
             "| configuration | words/s (training) | train s | wall s | steps | analogy top-30k | WS353 |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['name']} | failed: see runs/*.log | | {r['wall']:.1f} | | | |")
            continue
        lines.append(f"| {r['name']} | {r['words_per_sec']:,.0f} | {r['train_seconds']:.1f} | {r['wall']:.1f} | "
                     f"{r['steps']} | {fmt(r['analogy'], '.4f')} | {fmt(r['ws353'], '.4f')} |")
    table = "\n".join(lines) + "\n"
    (args.out / "gpu_benchmark.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
