"""Ctrl-C at every moment of a short run: start sgns-train on a small corpus, send SIGINT a fixed delay after its
log file appears, and sweep the delay in small steps from start-up (imports, reading) through training to the
exit, so every window of the run gets a signal. Prints one row per try (the delay, the exit status, whether the
run had said `done:`, tracebacks, whether the run dir is left, the last stderr line) and then each outcome once
with its delays. Results: docs/robustness.md.

    python scripts/tools/sigint_timeline.py CORPUS OUT_DIR --step 0.02 --until 2.0 [-- OVERRIDES...]

Each try gets an empty token cache of its own (OUT_DIR/cache-N: the corpus is read, by 2 processes, every time).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import time
from collections import defaultdict
from pathlib import Path
from typing import Dict, List

RUN_DIR = re.compile(r"/\S*/try-\d+")  # a try's run dir in a message, replaced so that outcomes compare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--step", type=float, default=0.02, help="seconds between two tries' delays")
    parser.add_argument("--until", type=float, default=2.0, help="the last delay, in seconds")
    parser.add_argument("overrides", nargs="*", help="more sgns-train overrides (after --)")
    args = parser.parse_args()
    out: Path = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    outcomes: Dict[str, List[float]] = defaultdict(list)
    for n in range(int(round(args.until / args.step)) + 1):
        delay = n * args.step
        run_dir, cache = out / f"try-{n}", out / f"cache-{n}"
        for path in (run_dir, cache):
            shutil.rmtree(path, ignore_errors=True)
        command = ["sgns-train", "corpus=text", f"corpus.path={args.corpus}", "trainer.epochs=1", "model.dim=8",
                   "data.min_count=1", "trainer.progress=false", "eval=none", f"data.cache_dir={cache}",
                   f"hydra.run.dir={run_dir}", *args.overrides]
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        log = run_dir / "train.log"
        while not log.exists() and proc.poll() is None:
            time.sleep(0.005)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
        done = "done:" in stdout
        traceback = "Traceback" in stderr
        last = (stderr.strip().splitlines() or ["(nothing)"])[-1]
        outcome = (f"exit {proc.returncode}, {'after' if done else 'before'} done:, "
                   f"{'a traceback, ' if traceback else ''}run dir {'kept' if run_dir.exists() else 'removed'}: "
                   f"{RUN_DIR.sub('DIR', last)}")
        outcomes[outcome].append(delay)
        print(f"{delay:5.2f} s  {outcome}", flush=True)
        shutil.rmtree(cache, ignore_errors=True)
    print("\noutcomes (delays after the log file appeared):")
    for outcome, delays in outcomes.items():
        print(f"  {len(delays):3d} tries, {min(delays):.2f}-{max(delays):.2f} s: {outcome}")
    if os.environ.get("KEEP") is None:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
