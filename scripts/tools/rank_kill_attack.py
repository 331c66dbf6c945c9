"""Kill one torchrun rank at random moments and check what the survivor does: its one error line, how long it
took, how it exited. Results: docs/scaling.md#faults.

    python scripts/tools/rank_kill_attack.py OUT_DIR --trials 40 --load 2 --max-delay 3

Each trial starts a 2-rank CPU run as tests/test_distributed.py's kill test does (its corpus, settings and torchrun
command; 20 epochs, a checkpoint every 50 steps, dist.timeout_s=30), waits for its first checkpoint, waits a
seeded random delay in [0, --max-delay] seconds, and sends SIGKILL to rank 1. --load other 2-rank runs train
beside it (a busy machine, as in CI). A row per trial: rank 0's exit code (from torchrun's report), whether the
run had said `done:`, its metrics.json status, the number of `sgns-train: error:` lines and the seconds from the
kill to torchrun's exit.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import List

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
# the tests' synthetic corpus, 2-rank torchrun command, environment and worker lookup
from conftest import zipf_text  # noqa: E402
from test_distributed import SMALL, environment, torchrun_command, worker_pid  # noqa: E402

SETTINGS = [*SMALL, "trainer.epochs=20", "trainer.checkpoint_every=50", "dist.timeout_s=30"]
RANK0_EXIT = re.compile(r"rank\s*: 0 \(local_rank: 0\)\n\s*exitcode\s*: (-?\d+)")


def torchrun(corpus: Path, run_dir: Path) -> List[str]:
    return torchrun_command("corpus=text", f"corpus.path={corpus}", *SETTINGS, f"hydra.run.dir={run_dir}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--load", type=int, default=2, help="other 2-rank runs training beside each trial")
    parser.add_argument("--max-delay", type=float, default=3.0, help="seconds after the first checkpoint")
    args = parser.parse_args()
    out: Path = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    corpus = out / "corpus.txt"
    if not corpus.exists():
        zipf_text(corpus, words=60000, vocab=500)
    env = environment()
    outcomes: Counter = Counter()
    waits: List[float] = []
    for trial in range(args.trials):
        run_dir = out / f"run{trial}"
        load = [subprocess.Popen(torchrun(corpus, out / f"load{trial}-{k}"), stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, env=env, start_new_session=True) for k in range(args.load)]
        run = subprocess.Popen(torchrun(corpus, run_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env, start_new_session=True)
        while not list((run_dir / "checkpoints").glob("step-*.pt")) and run.poll() is None:
            time.sleep(0.05)
        time.sleep(random.Random(trial).uniform(0, args.max_delay))
        victim = worker_pid(run.pid, 1)
        if victim is not None:
            os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        stdout, stderr = run.communicate(timeout=300)
        seconds = time.monotonic() - killed
        for process in load:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        if victim is None:
            print(f"{trial:3d}  ended before the kill", flush=True)
            continue
        exit_code = RANK0_EXIT.search(stderr)
        metrics = run_dir / "metrics.json"
        row = (exit_code.group(1) if exit_code else "?", "done:" if "done:" in stdout else "-",
               json.loads(metrics.read_text()).get("status") if metrics.exists() else None,
               sum(line.startswith("sgns-train: error:") for line in stderr.splitlines()))
        outcomes[row] += 1
        waits.append(seconds)
        print(f"{trial:3d}  rank 0 exit {row[0]:>3}  {row[1]:5}  metrics {row[2]}  error lines {row[3]}  "
              f"{seconds:5.1f} s", flush=True)
        for path in [run_dir, *(out / f"load{trial}-{k}" for k in range(args.load))]:
            shutil.rmtree(path, ignore_errors=True)
    waits.sort()
    print(f"\nfrom the kill to torchrun's exit: median {waits[len(waits) // 2]:.1f} s, longest {waits[-1]:.1f} s")
    print("rank 0 exit, said done:, metrics status, error lines: trials")
    for row, n in outcomes.most_common():
        print(f"  {row}: {n}")


if __name__ == "__main__":
    main()
