"""1 process x 2 threads against 2 processes (torchrun) x 1 thread, alternately, on one corpus: words/s, quality.

    python scripts/benchmarks/bench_distributed.py --repeats 3 [--corpus FILE] [--epochs 1] [-- extra overrides]

Every run holds /tmp/sgns-bench.lock (flock), so benchmarks of different sessions never overlap. Prints one
row per run and the medians; run directories are kept under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

DATA = Path(os.environ.get("SGNS_DATA_DIR", "data"))


def run(name: str, launcher: list, overrides: list, run_dir: Path) -> dict:
    command = ["flock", "/tmp/sgns-bench.lock", *launcher, *overrides, f"hydra.run.dir={run_dir}"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{name} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    m = json.loads((run_dir / "metrics.json").read_text())
    ev = m["eval"]
    row = {"run": name, "wall_s": wall, "words_per_sec": m["words_per_sec"],
           "analogy": ev["questions-words"]["accuracy"], "ws353": ev["wordsim353"]["spearman"],
           "simlex": ev["simlex999"]["spearman"]}
    if "distributed" in m:
        d = m["distributed"]
        row["merges"], row["s_per_merge"] = d["merges"], d["seconds_per_merge"]
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--out", default="/tmp/sgns-bench-dist")
    parser.add_argument("--only", choices=["single", "dist"], default=None)
    parser.add_argument("extra", nargs="*", help="overrides for both (after --)")
    args = parser.parse_args()
    common = ["experiment=gutenberg_baseline", f"trainer.epochs={args.epochs}", "trainer.device=cpu",
              "trainer.progress=false", "trainer.seed=1", *args.extra]
    single = [sys.executable, "-m", "sgns.train", "trainer.threads=2"]
    dist = ["torchrun", "--nproc_per_node=2", "-m", "sgns.train", "trainer.threads=1"]
    rows = []
    for i in range(args.repeats):
        for name, launcher in (("1 process x 2 threads", single), ("2 processes x 1 thread", dist)):
            if args.only and (args.only == "single") != (launcher is single):
                continue
            tag = 'single' if launcher is single else 'dist'
            rows.append(run(name, launcher, common, Path(args.out) / f"{i}-{tag}"))
    for name in dict.fromkeys(r["run"] for r in rows):
        mine = [r for r in rows if r["run"] == name]
        medians = {k: statistics.median(r[k] for r in mine) for k in mine[0] if k != "run"}
        print(f"median {name}: " + ", ".join(f"{k}={v:.4g}" for k, v in medians.items()))


if __name__ == "__main__":
    main()
