"""sgns-train's fixed cost: whole-process wall and CPU time of `--help`, a tiny run and a 1M-word run vs gensim.

Every measurement is its own process, started one after the other and alternated across the systems compared,
repeated `--repeats` times; the table holds medians. Wall time is what a user waits; CPU s (user + system of
the process) is steadier on a shared machine. The cases:

- `help`: `sgns-train --help`.
- `tiny`: a 9,000-word text corpus (generated into the work dir, 300 distinct words), 1 epoch, a fresh token
  cache each run.
- `1m`: the first 1M words of the dev corpus, with scripts/benchmarks/benchmark.py's contract settings (dim 100, window
  5, 5 negatives, min_count 5, subsample 1e-3, 1 epoch; the same command line), a fresh token cache each run,
  against gensim 4 (`--workers` threads) through scripts/benchmarks/benchmark.py's gensim worker.

`--baseline DIR` adds the same sgns runs from another checkout (e.g. `git worktree add ../base main`), so a
change is measured against what it changes, side by side. A warm-up run first fills numba's on-disk cache for
each checkout, and its modules are byte-compiled (`__pycache__`), as any installation's first run does (even where
PYTHONDONTWRITEBYTECODE is set, as on this project's machines: see `compile_bytecode`).

    python scripts/benchmarks/bench_startup.py --repeats 5
    python scripts/benchmarks/bench_startup.py --cases help,tiny --baseline ../base
    python scripts/benchmarks/bench_startup.py --phases --repeats 5      # what the fixed cost is made of (after a run:
                                                              # the kernel in numba's cache)
    python scripts/benchmarks/bench_startup.py --overlap --repeats 8     # does a background import thread help?
    python scripts/benchmarks/bench_startup.py --collector --baseline ../base   # the garbage collector's share
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark import DEFAULT_CORPUS, contract_command, prefix_corpus  # noqa: E402 (a script beside this one)

ROOT = Path(__file__).resolve().parents[2]
CASES = ("help", "tiny", "1m")

# `--phases`: what the fixed cost is made of, in the order a run meets it, as CPU seconds of one process.
PHASES = """
import os, sys, time
laps = []
def lap(name):
    laps.append((name, time.process_time()))
lap("interpreter")
import numpy
lap("numpy")
import hydra, omegaconf
from hydra import compose, initialize_config_dir
lap("hydra, omegaconf")
from sgns.config import CONFIG_DIR
lap("sgns.config (the schema)")
with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
    compose("train", overrides=[], return_hydra_config=True)
lap("composing the config once")
import torch
lap("torch")
from sgns.pipelines import span, span_kernel  # noqa: F401 (span: the pipeline the loop imports)
lap("numba, sgns.pipelines.span")
from numba.core.registry import cpu_target
cpu_target.target_context.refresh()
lap("numba's registries (first compile or cache load)")
span_kernel.compiled_train_piece(100)
lap("the cached kernel itself (dim 100)")
from torch.utils.tensorboard import SummaryWriter
lap("torch.utils.tensorboard")
before = 0.0
for name, at in laps:
    print(f"{name}\t{at - before:.3f}")
    before = at
sys.stdout.flush()
if sys.argv[1] == "skip-teardown":
    os._exit(0)
"""


def timed(cmd: List[str], env: Dict[str, str], cwd: Path, log: Path) -> Tuple[float, float]:
    """Run `cmd` to completion: (wall seconds, CPU seconds of the process and its children); raises if it fails."""
    with open(log, "w") as out:
        start = time.perf_counter()
        child = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"bench_startup: {' '.join(cmd[:6])} ... failed ({child.returncode}); see {log}")
    return wall, usage.ru_utime + usage.ru_stime


def compile_bytecode(root: Path) -> None:
    """Write the checkout's `__pycache__/*.pyc`, as `pip install` does for the installed packages (gensim's, torch's)
    and as Python's first import does for an editable install, unless PYTHONDONTWRITEBYTECODE is set: on a
    machine that sets it (this project's does) every run would compile sgns's own modules again, ~0.13 s that no
    user's second run pays (docs/startup.md). Reading `.pyc` files is not affected by the variable."""
    packages = [str(root / name) for name in ("sgns", "hydra_plugins") if (root / name).is_dir()]
    subprocess.run([sys.executable, "-m", "compileall", "-q", *packages], check=True, stdout=subprocess.DEVNULL)


def tiny_corpus(folder: Path, words: int = 9000, vocabulary: int = 300, line_words: int = 15) -> Path:
    """A deterministic text file of `words` words drawn uniformly from `vocabulary` distinct ones."""
    path = folder / "tiny.txt"
    rng = random.Random(0)
    names = [f"w{i}" for i in range(vocabulary)]
    lines = [" ".join(rng.choice(names) for _ in range(line_words)) for _ in range(words // line_words)]
    path.write_text("\n".join(lines) + "\n")
    return path


def phases(repeats: int) -> None:
    """Print the median CPU seconds of each part of the fixed cost (PHASES), and of the interpreter's teardown
    at exit (a process ending normally against one ending with os._exit, alternated)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    parts: Dict[str, List[float]] = {}
    teardown: Dict[str, List[float]] = {"normal": [], "skip-teardown": []}
    for _ in range(repeats):
        for mode in teardown:
            before = os.times()
            out = subprocess.run([sys.executable, "-c", PHASES, mode], env=env, capture_output=True, text=True,
                                 check=True).stdout
            after = os.times()
            teardown[mode].append(after.children_user + after.children_system - before.children_user
                                  - before.children_system)
            for line in out.splitlines():
                name, seconds = line.split("\t")
                parts.setdefault(name, []).append(float(seconds))
    print(f"median CPU seconds of {repeats} x 2 processes; load average {os.getloadavg()[0]:.1f}\n")
    print("| part | CPU s |")
    print("|---|---|")
    for name, values in parts.items():
        print(f"| {name} | {statistics.median(values):.3f} |")
    cost = statistics.median(teardown["normal"]) - statistics.median(teardown["skip-teardown"])
    print(f"| the interpreter's teardown at exit (normal exit minus os._exit) | {cost:.3f} |")


OVERLAP = """
import resource, sys, threading, time
start = time.perf_counter()
def import_torch():
    import torch
def the_rest():  # what a run does besides: numba's registries (loading the cached kernel), composing the config
    from numba.core.registry import cpu_target
    cpu_target.target_context.refresh()
    from hydra import compose, initialize_config_dir
    from sgns.config import CONFIG_DIR
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        compose("train", overrides=[])
if sys.argv[1] == "thread":
    thread = threading.Thread(target=import_torch)
    thread.start()
    the_rest()
    thread.join()
else:
    import_torch()
    the_rest()
usage = resource.getrusage(resource.RUSAGE_SELF)
print(time.perf_counter() - start, usage.ru_utime + usage.ru_stime)
"""


def overlap(repeats: int) -> None:
    """Whether importing torch in a background thread, while the main thread does the rest of the start-up's
    slow imports, saves time: median wall and CPU seconds of `repeats` alternated pairs of processes."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    runs: Dict[str, List[Tuple[float, float]]] = {"one after the other": [], "torch in a thread": []}
    for _ in range(repeats):
        for name, mode in (("one after the other", "serial"), ("torch in a thread", "thread")):
            out = subprocess.run([sys.executable, "-c", OVERLAP, mode], env=env, capture_output=True, text=True,
                                 check=True).stdout.split()
            runs[name].append((float(out[0]), float(out[1])))
    print(f"medians of {repeats} alternated pairs; load average {os.getloadavg()[0]:.1f}\n")
    print("| imports | wall s | CPU s |")
    print("|---|---|---|")
    for name, values in runs.items():
        print(f"| {name} | {statistics.median(w for w, _ in values):.2f} | "
              f"{statistics.median(c for _, c in values):.2f} |")


# `--collector`: the cyclic garbage collector's share of a tiny run: CPU seconds inside collections (timed by a
# gc callback) and of the whole process, read at its os._exit (sgns.cli.common.exit_without_teardown).
COLLECTOR = """
import gc, os, resource, sys, time
spent, started = [0.0, 0], []
def timer(phase, info):
    if phase == "start":
        started[:] = [time.process_time()]
    else:
        spent[0] += time.process_time() - started[0]
        spent[1] += 1
gc.callbacks.append(timer)
real_exit, pid = os._exit, os.getpid()
def report(status):
    if os.getpid() == pid:  # not a forked child's exit
        usage = resource.getrusage(resource.RUSAGE_SELF)
        print(f"COLLECTOR {spent[0]:.3f} {spent[1]} {usage.ru_utime + usage.ru_stime:.3f}", file=sys.stderr, flush=True)
    real_exit(status)
os._exit = report
sys.argv = ["sgns-train", *sys.argv[1:]]
from sgns.cli.train import main
main()
"""


def collector(repeats: int, checkouts: Dict[str, Path], tiny: Path, workdir: Path, base_env: Dict[str, str]) -> None:
    """Median CPU seconds spent in garbage collections, their number, and the process's own CPU seconds (the
    TensorBoard writer process not included) of a tiny run, per checkout, alternated."""
    runs: Dict[str, List[Tuple[float, int, float]]] = {name: [] for name in checkouts}
    for rep in range(repeats):
        for name, root in checkouts.items():
            run_dir = workdir / f"collector-{name}-{rep}"
            cmd = contract_command(tiny, run_dir, 1, [])
            cmd[1:3] = ["-c", COLLECTOR]  # instead of `-m sgns.train`
            env = dict(base_env, PYTHONPATH=str(root), SGNS_CACHE_DIR=str(workdir / f"cache-collector-{rep}"))
            out = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True, check=True).stderr
            line = [x for x in out.splitlines() if x.startswith("COLLECTOR ")][-1].split()
            runs[name].append((float(line[1]), int(line[2]), float(line[3])))
            shutil.rmtree(workdir / f"cache-collector-{rep}", ignore_errors=True)
    print(f"medians of {repeats} alternated tiny runs; load average {os.getloadavg()[0]:.1f}\n")
    print("| system | CPU s in collections | collections | CPU s of the process |")
    print("|---|---|---|---|")
    for name, values in runs.items():
        seconds, count, cpu = (statistics.median(v[i] for v in values) for i in range(3))
        print(f"| {name} | {seconds:.3f} | {count:.0f} | {cpu:.2f} |")


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--baseline", type=Path, default=None, help="another checkout's root, timed alongside")
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="the 1m case's corpus (its first words)")
    ap.add_argument("--words", type=int, default=1_000_000, help="the 1m case's number of leading words")
    ap.add_argument("--workers", type=int, default=2, help="gensim worker threads")
    ap.add_argument("--workdir", type=Path, default=None, help="keep runs here (default: a temp dir)")
    ap.add_argument("--phases", action="store_true", help="instead: the fixed cost's parts, in CPU seconds")
    ap.add_argument("--collector", action="store_true",
                    help="instead: CPU seconds in garbage collections of a tiny run (with --baseline: both)")
    ap.add_argument("--overlap", action="store_true",
                    help="instead: importing torch in a background thread against one import after the other")
    args = ap.parse_args(argv)
    if args.phases:
        phases(args.repeats)
        return
    if args.overlap:
        overlap(args.repeats)
        return
    cases = [c for c in args.cases.split(",") if c]
    if set(cases) - set(CASES):
        ap.error(f"unknown case(s): {', '.join(sorted(set(cases) - set(CASES)))}")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="sgns-startup-"))
    workdir.mkdir(parents=True, exist_ok=True)
    checkouts = {"sgns": ROOT}
    if args.baseline is not None:
        checkouts["baseline"] = args.baseline.resolve()
    base_env = {k: v for k, v in os.environ.items() if k not in ("SGNS_CACHE_DIR", "PYTHONPATH")}
    base_env["PYTHONUNBUFFERED"] = "1"
    tiny = tiny_corpus(workdir)
    if args.collector:
        for name, root in checkouts.items():  # numba's on-disk cache first, as below
            compile_bytecode(root)
            env = dict(base_env, PYTHONPATH=str(root), SGNS_CACHE_DIR=str(workdir / f"cache-warmup-{name}"))
            timed(contract_command(tiny, workdir / f"warmup-{name}", 1, []), env, root, workdir / f"warmup-{name}.log")
        collector(args.repeats, checkouts, tiny, workdir, base_env)
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
        return
    million = prefix_corpus(args.corpus.resolve(), args.words, workdir) if "1m" in cases else None

    def sgns_command(case: str, run_dir: Path) -> List[str]:
        if case == "help":
            return [sys.executable, "-m", "sgns.train", "--help"]
        corpus = tiny if case == "tiny" else million
        assert corpus is not None
        return contract_command(corpus, run_dir, 1, [])

    for name, root in checkouts.items():  # numba compiles the kernel once per checkout into its on-disk cache
        compile_bytecode(root)
        env = dict(base_env, PYTHONPATH=str(root), SGNS_CACHE_DIR=str(workdir / f"cache-warmup-{name}"))
        for case in ("tiny", "1m") if million else ("tiny",):  # a non-ASCII corpus compiles the UTF-8 reader too
            timed(sgns_command(case, workdir / f"warmup-{name}-{case}"), env, root, workdir / f"warmup-{name}.log")

    results: Dict[Tuple[str, str], List[Tuple[float, float]]] = {}
    for case in cases:
        systems = list(checkouts) + (["gensim"] if case == "1m" else [])
        for rep in range(args.repeats):
            for system in systems:  # alternate: one run of each per repetition
                tag = f"{case}-{system}-{rep}"
                run_dir = workdir / tag
                shutil.rmtree(run_dir, ignore_errors=True)
                if system == "gensim":
                    assert million is not None
                    run_dir.mkdir(parents=True)
                    cmd = [sys.executable, str(ROOT / "scripts" / "benchmarks" / "benchmark.py"), "--gensim-worker",
                           str(million), str(run_dir / "vectors.bin"), "1", str(args.workers), "iterable"]
                    env, cwd = base_env, ROOT
                else:
                    cmd = sgns_command(case, run_dir)
                    cache = workdir / f"cache-{tag}"
                    env = dict(base_env, PYTHONPATH=str(checkouts[system]), SGNS_CACHE_DIR=str(cache))
                    cwd = checkouts[system]
                wall, cpu = timed(cmd, env, cwd, workdir / f"{tag}.log")
                shutil.rmtree(workdir / f"cache-{tag}", ignore_errors=True)
                results.setdefault((case, system), []).append((wall, cpu))
                print(f"[{rep + 1}/{args.repeats}] {case} {system}: {wall:.2f} s wall, {cpu:.2f} s CPU",
                      file=sys.stderr, flush=True)

    load = os.getloadavg()
    print(f"\nmedians of {args.repeats} alternating runs; {os.cpu_count()} CPUs; load average at the end "
          f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}; gensim workers={args.workers}"
          + (f"; 1m: first {args.words:,} words of {args.corpus}" if million else "") + "\n")
    print("| case | system | wall s | CPU s | wall vs first | speed vs gensim (wall) |")
    print("|---|---|---|---|---|---|")
    for case in cases:
        first = statistics.median(w for w, _ in results[(case, "sgns")])
        gensim = statistics.median(w for w, _ in results[(case, "gensim")]) if (case, "gensim") in results else None
        for (c, system), runs in results.items():
            if c != case:
                continue
            wall, cpu = statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs)
            print(f"| {case} | {system} | {wall:.2f} | {cpu:.2f} | {wall / first:.2f}x | "
                  f"{f'{gensim / wall:.2f}x' if gensim else '-'} |")
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
