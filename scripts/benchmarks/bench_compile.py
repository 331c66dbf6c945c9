"""What numba's compiles cost a user (docs/startup.md, "First-run compiles"), each case in fresh processes.

`--kernel BASELINE_SPAN_KERNEL_PY`: seconds to compile `train_piece` for dim 100 with an empty numba cache, this
checkout's kernel against another version of sgns/pipelines/span_kernel.py (a copy, imported as its own module),
alternated. `--runs`: the default `sgns-train` (synthetic corpus) on a first-ever start (empty numba and token
caches) against a warm one, alternated, and a warm start with a new `model.dim` (its kernel not in the cache).

    git show main:sgns/pipelines/span_kernel.py > /tmp/span_main.py
    python scripts/benchmarks/bench_compile.py --kernel /tmp/span_main.py --repeats 3
    python scripts/benchmarks/bench_compile.py --runs --repeats 3
    python scripts/benchmarks/bench_compile.py --warm /tmp/span_main.py --repeats 5  # warm speed and bits, same process

`--warm`: one `train_piece` call (dim 100, 1M Zipf tokens over 2,512 words, one thread) with each kernel,
alternated, and whether the tables come out bit-identical.
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


def load_module(path: str):  # type: ignore[no-untyped-def]
    import importlib.util

    spec = importlib.util.spec_from_file_location("baseline_span_kernel", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def warm_speed(baseline: str, repeats: int, dim: int = 100, vocab: int = 2512) -> None:
    import numpy as np

    from sgns.pipelines import span_kernel
    from sgns.pipelines.negatives import unigram_table
    from sgns.pipelines.plan import keep_probabilities

    rng = np.random.default_rng(0)
    p = 1.0 / np.arange(1, vocab + 1)
    ids = np.minimum(np.searchsorted(np.cumsum(p / p.sum()), rng.random(1_000_000)), vocab - 1).astype(np.int32)
    counts = np.bincount(ids, minlength=vocab).astype(np.int64) + 1
    starts = np.arange(0, len(ids) + 1, 20, dtype=np.int64)
    accept, alias = span_kernel.kernel_alias_table(unigram_table(counts, 0.75))
    keep = keep_probabilities(counts, 1e-3).astype(np.float32)
    remap = np.arange(vocab, dtype=np.int32)
    other = load_module(baseline)
    kernels = {"this checkout": span_kernel.entry_point(span_kernel.train_piece, dim),
               "baseline": other.entry_point(other.train_piece, dim)}
    W0 = ((rng.random((vocab, dim), dtype=np.float32) - 0.5) / dim).astype(np.float32)

    def run(name: str):  # type: ignore[no-untyped-def]
        W, C = W0.copy(), np.zeros_like(W0)
        t = time.perf_counter()
        kernels[name](W, C, ids, remap, starts, 0, len(starts) - 1, keep, accept, alias, 5, 5, 0.025, 0.0001,
                      np.uint64(1), 16, dim)
        return time.perf_counter() - t, W.tobytes() + C.tobytes()

    times: Dict[str, List[float]] = {name: [] for name in kernels}
    tables = {name: run(name)[1] for name in kernels}  # warm-up, and the bits
    for i in range(repeats):
        for name in (list(kernels) if i % 2 == 0 else list(reversed(kernels))):
            times[name].append(run(name)[0])
    for name, values in times.items():
        show(f"train_piece, dim {dim}, V {vocab}, {name}", values)
    print(f"bit-identical tables: {tables['this checkout'] == tables['baseline']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kernel", metavar="BASELINE_SPAN_KERNEL_PY")
    parser.add_argument("--runs", action="store_true")
    parser.add_argument("--warm", metavar="BASELINE_SPAN_KERNEL_PY")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.kernel:
            kernel_compiles(args.kernel, args.repeats, Path(tmp))
        if args.runs:
            runs(args.repeats, Path(tmp))
        if args.warm:
            warm_speed(args.warm, args.repeats)


if __name__ == "__main__":
    main()
