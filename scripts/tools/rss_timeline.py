"""Run a command and sample the resident memory of it and of its children over time (psutil).

    python scripts/tools/rss_timeline.py OUT.json -- python -m sgns.cli.train ...

OUT.json holds the exit status, wall seconds, the peak RSS of the main process and of the whole process tree (MiB),
and every sample as [unix time, main MiB, tree MiB], so phases can be matched to the run's log timestamps.
/usr/bin/time's "Maximum resident set size" gives the same main-process peak without the timeline.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from typing import List, Optional

import psutil


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="JSON file to write")
    parser.add_argument("--every", type=float, default=0.25, help="seconds between samples")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    started = time.time()
    child = subprocess.Popen(command)
    process = psutil.Process(child.pid)
    samples = []
    while child.poll() is None:
        try:
            main_rss = process.memory_info().rss
            tree_rss = main_rss + sum(c.memory_info().rss for c in process.children(recursive=True))
            samples.append((round(time.time(), 2), main_rss >> 20, tree_rss >> 20))
        except psutil.Error:  # the process or a child ended between the calls
            pass
        time.sleep(args.every)
    report = {"rc": child.wait(), "wall_s": round(time.time() - started, 1),
              "peak_main_mib": max((s[1] for s in samples), default=0),
              "peak_tree_mib": max((s[2] for s in samples), default=0), "samples": samples}
    with open(args.out, "w") as f:
        json.dump(report, f)
    print(f"rc={report['rc']} wall={report['wall_s']}s peak main {report['peak_main_mib']} MiB, "
          f"peak tree {report['peak_tree_mib']} MiB")
    return report["rc"]


if __name__ == "__main__":
    raise SystemExit(main())
