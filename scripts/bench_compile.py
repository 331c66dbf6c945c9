"""What numba's compiles cost a user (docs/startup.md, "First-run compiles"), each case in fresh processes.

`--kernel BASELINE_SPAN_KERNEL_PY`: seconds to compile `train_piece` for dim 100 with an empty numba cache, this
checkout's kernel against another version of sgns/pipelines/span_kernel.py (a copy, imported as its own module),
alternated. `--runs`: the default `sgns-train` (synthetic corpus) on a first-ever start (empty numba and token
caches) against a warm one, alternated, and a warm start with a new `model.dim` (its kernel not in the cache).

    git show main:sgns/pipelines/span_kernel.py > /tmp/span_main.py
    python scripts/bench_compile.py --kernel /tmp/span_main.py --repeats 3
    python scripts/bench_compile.py --runs --repeats 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

_COMPILE = """
import importlib.util, sys, time
path = sys.argv[1]
if path == "-":
    from sgns.pipelines import span_kernel as k
else:
    spec = importlib.util.spec_from_file_location("baseline_span_kernel", path)
    k = importlib.util.module_from_spec(spec); spec.loader.exec_module(k)
k.kernel_alias_table  # numba's registries are loaded by the first compile or load: timed in both
t = time.perf_counter(); k.entry_point(k.train_piece, 100); print(time.perf_counter() - t)
"""


def seconds(cmd: List[str], env: Dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return time.perf_counter() - t


def show(name: str, values: List[float]) -> None:
    print(f"{name}: median {statistics.median(values):.2f} s, range {min(values):.2f}-{max(values):.2f} "
          f"({', '.join(f'{v:.2f}' for v in values)})", flush=True)


def kernel_compiles(baseline: str, repeats: int, tmp: Path) -> None:
    times: Dict[str, List[float]] = {"this checkout": [], "baseline": []}
    for i in range(repeats):
        for name in (("this checkout", "baseline") if i % 2 == 0 else ("baseline", "this checkout")):
            cache = tmp / f"numba-{name[0]}-{i}"
            out = subprocess.run([sys.executable, "-c", _COMPILE, "-" if name == "this checkout" else baseline],
                                 check=True, capture_output=True, text=True,
                                 env={**os.environ, "NUMBA_CACHE_DIR": str(cache)}).stdout
            times[name].append(float(out.split()[-1]))
            shutil.rmtree(cache)
    for name, values in times.items():
        show(f"compile train_piece, dim 100, {name}", values)


def runs(repeats: int, tmp: Path) -> None:
    train = [sys.executable, "-m", "sgns.train", "eval.projector_words=0"]
    warm_env = {"NUMBA_CACHE_DIR": str(tmp / "numba-warm"), "SGNS_CACHE_DIR": str(tmp / "tokens-warm")}
    seconds(train + [f"hydra.run.dir={tmp / 'w0'}"], warm_env)  # fill the warm caches
    seconds(train + [f"hydra.run.dir={tmp / 'w1'}"], warm_env)
    times: Dict[str, List[float]] = {"first-ever": [], "warm": [], "new model.dim": []}
    for i in range(repeats):
        order = ("first-ever", "warm", "new model.dim") if i % 2 == 0 else ("new model.dim", "warm", "first-ever")
        for name in order:
            run_dir = tmp / f"run-{i}-{name[0]}"
            if name == "first-ever":
                env = {"NUMBA_CACHE_DIR": str(tmp / f"numba-{i}"), "SGNS_CACHE_DIR": str(tmp / f"tokens-{i}")}
                times[name].append(seconds(train + [f"hydra.run.dir={run_dir}"], env))
            elif name == "warm":
                times[name].append(seconds(train + [f"hydra.run.dir={run_dir}"], warm_env))
            else:
                times[name].append(seconds(train + [f"hydra.run.dir={run_dir}", f"model.dim={64 + 2 * i}"], warm_env))
    for name, values in times.items():
        show(f"sgns-train, {name}", values)
    ratio = statistics.median(times["first-ever"]) / statistics.median(times["warm"])
    print(f"first-ever / warm (medians): {ratio:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kernel", metavar="BASELINE_SPAN_KERNEL_PY")
    parser.add_argument("--runs", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.kernel:
            kernel_compiles(args.kernel, args.repeats, Path(tmp))
        if args.runs:
            runs(args.repeats, Path(tmp))


if __name__ == "__main__":
    main()
