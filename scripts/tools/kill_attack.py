"""Interrupt sgns-train at random moments, run the same command again, and check what a user would: the exit code,
the one error line, processes left behind, temporary files, and that the resumed run's vectors.bin is
byte-identical to an uninterrupted run's (trainer.deterministic=true). Results: docs/robustness.md.

    python scripts/tools/kill_attack.py CORPUS OUT_DIR --trials 12 --seed 1 --max-seconds 14 [-- OVERRIDES...]

Trial i sends SIGKILL (half the trials), SIGINT or SIGTERM after uniform(--min-seconds, --max-seconds) seconds (a
seeded RNG), so kills land in reading, merging, training, checkpoint writes and the end of a run; even trials start
on an empty token cache (the kill can land in reading), odd ones share one. The uninterrupted reference is
OUT_DIR/ref; its files are checked unchanged at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional

TEMPORARY = (".tmp-", ".vectors", ".metrics", ".tokens-", ".stream-", ".init-")  # what an atomic write leaves


def digest(path: Path) -> Optional[str]:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12] if path.is_file() else None


def files_digest(folder: Path) -> Dict[str, Optional[str]]:
    return {p.name: digest(p) for p in folder.iterdir() if p.is_file()}


def left_behind(*folders: Path) -> List[str]:
    return [str(p) for f in folders if f.exists() for p in f.rglob("*") if p.name.startswith(TEMPORARY)]


def alive_in_group(pgid: int) -> List[str]:
    """Processes still in the killed run's process group (its reading workers, if they outlived it)."""
    out = subprocess.run(["ps", "-eo", "pid,pgid,stat,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines()[1:] if line.split()[1] == str(pgid) and line.split()[2][0] != "Z"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--min-seconds", type=float, default=0.5)
    parser.add_argument("--max-seconds", type=float, default=14.0)
    parser.add_argument("overrides", nargs="*", help="more sgns-train overrides (after --)")
    args = parser.parse_args()
    out: Path = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    settings = ["corpus=text", f"corpus.path={args.corpus}", "trainer.deterministic=true", "trainer.epochs=2",
                "model.dim=50", "eval=none", "trainer.checkpoint_every_words=500000", "trainer.progress=false",
                *args.overrides]

    def command(run_dir: Path, cache: Path) -> List[str]:
        return ["sgns-train", *settings, f"hydra.run.dir={run_dir}", f"data.cache_dir={cache}"]

    def again(run_dir: Path, cache: Path) -> str:
        done = subprocess.run(command(run_dir, cache), capture_output=True, text=True, timeout=600)
        return f"rc={done.returncode} {(done.stderr.strip().splitlines() or [''])[-1][:140]!r}"

    reference = out / "ref"
    if not (reference / "vectors.bin").exists():
        print("reference:", again(reference, out / "ref_cache"), flush=True)
    expected, reference_files = digest(reference / "vectors.bin"), files_digest(reference)
    rng = random.Random(args.seed)
    for i in range(args.trials):
        sig = rng.choice([signal.SIGKILL, signal.SIGKILL, signal.SIGINT, signal.SIGTERM])
        delay = rng.uniform(args.min_seconds, args.max_seconds)
        run_dir = out / f"t{args.seed}-{i}"
        cache = out / (f"cache-{args.seed}-{i}" if i % 2 == 0 else "shared_cache")
        shutil.rmtree(run_dir, ignore_errors=True)
        if i % 2 == 0:
            shutil.rmtree(cache, ignore_errors=True)
        proc = subprocess.Popen(command(run_dir, cache), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
        time.sleep(delay)
        log = run_dir / "train.log"
        lines = [line for line in log.read_text().splitlines() if line.strip()] if log.exists() else []
        phase = lines[-1].split(" - ", 1)[-1][:50] if lines else "(no log yet)"
        proc.send_signal(sig)
        try:
            _, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            _, err = proc.communicate()
            err += "\nHUNG after the signal"
        time.sleep(1.0)
        orphans = alive_in_group(proc.pid)
        line = (err.strip().splitlines() or [""])[-1][:140]
        litter = left_behind(run_dir, cache)
        rerun = again(run_dir, cache)
        print(f"[{i}] {signal.Signals(sig).name} at {delay:.2f}s (log: {phase!r}) -> rc={proc.returncode} "
              f"traceback={'Traceback' in err} line={line!r}\n     orphans={orphans} temporary={litter}\n"
              f"     same command: {rerun} identical={digest(run_dir / 'vectors.bin') == expected} "
              f"temporary after={left_behind(run_dir, cache)}", flush=True)
        for orphan in orphans:
            os.kill(int(orphan.split()[0]), signal.SIGKILL)
    print("reference run's files unchanged:", files_digest(reference) == reference_files)


if __name__ == "__main__":
    main()
