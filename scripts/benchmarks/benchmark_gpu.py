"""The GPU benchmark: sgns-train on CUDA (the device pipeline) on gutenberg_dev, and the CPU default beside it.

Each configuration is one `sgns-train` process (`python -m sgns.train`, the real command line, started through a
small wrapper that records the process's peak GPU memory); the figures come from the run's own metrics.json:
`words_per_sec` is training throughput (corpus words per second of the training loop, tokenising and evaluation
excluded), quality is the run's final evaluation (questions-words top-30k 3CosAdd, WordSim353 Spearman). One
command runs the whole set and writes `gpu_benchmark.md` and `gpu_benchmark.json` under `--out` (default: $OUT,
else ./), rewriting both after every run so a stopped benchmark keeps what it measured:

    python scripts/benchmarks/benchmark_gpu.py --out "$OUT"
    python scripts/benchmarks/benchmark_gpu.py --smoke --device cpu --out /tmp/gpu-smoke  # all of it, tiny, no GPU

Rows (all window 5, subsample 1e-3, min_count 5, lr 0.025 decayed linearly, seed 1, the torch pipeline's
defaults for batch size, row cap and lr scale):
1. `--device`, trainer.kernel=torch: dim 100 / 5 negatives at 1 and 5 epochs; dim 300 / 15 negatives, 1 epoch;
2. dim 100 / 5 negatives, 1 epoch, once per other `--torch-steps` value (trainer.torch_step: the fixed-shape
   step eager, under torch.compile, replayed as a CUDA graph);
3. the CPU default (trainer.kernel=auto: the numba span kernel) on the same machine, dim 100 / 5 negatives,
   1 epoch, at each `--threads` count (1/2/4/8/16: the threads-scaling line).

`--smoke`: the first 100,000 words, the 1-epoch rows only, threads 1 and 2, on `--device` (cpu without a GPU).
The token cache is shared across runs (tokenising happens once and is not timed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts" / "benchmarks"))
from benchmark import DEFAULT_CORPUS, EVAL_DIR, prefix_corpus  # noqa: E402 (a script beside this one: stdlib only)

SMOKE_WORDS = 100_000

CONFIGS = [  # name, overrides (the torch pipeline on --device)
    ("dim100 neg5 1 epoch", ["model.dim=100", "data.negatives=5", "trainer.epochs=1"]),
    ("dim100 neg5 5 epochs", ["model.dim=100", "data.negatives=5", "trainer.epochs=5"]),
    ("dim300 neg15 1 epoch", ["model.dim=300", "data.negatives=15", "trainer.epochs=1"]),
]

# Runs sgns.train in this process and, at exit (sgns-train ends with sys.exit), writes its peak GPU memory.
PEAK_WRAPPER = """
import atexit, json, runpy, sys
peak_file, sys.argv = sys.argv[1], ["sgns.train", *sys.argv[2:]]
def write_peak():
    import torch
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        peak = {"allocated": torch.cuda.max_memory_allocated(), "reserved": torch.cuda.max_memory_reserved()}
    else:
        peak = None
    with open(peak_file, "w") as f:
        json.dump(peak, f)
atexit.register(write_peak)
runpy.run_module("sgns.train", run_name="__main__")
"""


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        try:
            import torch

            if not torch.cuda.is_available():
                return "CUDA unavailable"
            p = torch.cuda.get_device_properties(0)
            return f"{p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}"
        except Exception as e:  # noqa: BLE001 - reported in the table, never fatal
            return f"unknown ({e})"
    return cpu_name()


def cpu_name() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} CPUs"


def train_command(corpus: Path, run_dir: Path, peak_file: Path, device: str, kernel: str, overrides: List[str],
                  eval_dir: Path) -> List[str]:
    return [sys.executable, "-c", PEAK_WRAPPER, str(peak_file), "corpus=text", f"corpus.path={corpus}",
            "data.window=5", "data.min_count=5", "data.subsample=1e-3", "optimizer.lr=0.025",
            f"trainer.device={device}", f"trainer.kernel={kernel}", "trainer.seed=1", "trainer.progress=false",
            "eval.projector_words=0", f"eval.analogies=[{eval_dir / 'questions-words.txt'}]",
            f"eval.similarities=[{eval_dir / 'wordsim353.tsv'}]", f"hydra.run.dir={run_dir}", *overrides]


def run_one(name: str, cmd: List[str], run_dir: Path, peak_file: Path, env: Dict[str, str],
            timeout: float) -> Dict:
    log = run_dir.with_suffix(".log")
    start = time.perf_counter()
    try:
        with open(log, "w") as f:
            proc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, timeout=timeout)
        failed = proc.returncode != 0
    except subprocess.TimeoutExpired:
        failed = True
    wall = time.perf_counter() - start
    if failed or not (run_dir / "metrics.json").is_file():
        return {"name": name, "error": log.read_text(errors="replace")[-1500:], "wall": wall}
    m = json.loads((run_dir / "metrics.json").read_text())
    peak = json.loads(peak_file.read_text()) if peak_file.is_file() else None
    analogy = next((v["accuracy"] for v in m["eval"].values() if "accuracy" in v), None)
    ws353 = next((v["spearman"] for v in m["eval"].values() if "spearman" in v), None)
    return {"name": name, "wall": wall, "words_per_sec": m["words_per_sec"], "train_seconds": m["train_seconds"],
            "train_words": m["train_words"], "steps": m["steps"], "analogy": analogy, "ws353": ws353,
            "device": m.get("device"), "peak_gpu_mib": peak["allocated"] / 2**20 if peak else None}


def fmt(v: Optional[float], spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def table(results: List[Dict], header: str) -> str:
    lines = [header, "",
             "| configuration | device | words/s (training) | train s | wall s | steps | peak GPU MiB | "
             "analogy top-30k | WS353 |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['name']} | failed: see runs/*.log | | | {r['wall']:.1f} | | | | |")
            continue
        lines.append(f"| {r['name']} | {r['device']} | {r['words_per_sec']:,.0f} | {r['train_seconds']:.1f} | "
                     f"{r['wall']:.1f} | {r['steps']} | {fmt(r['peak_gpu_mib'], ',.0f')} | "
                     f"{fmt(r['analogy'], '.4f')} | {fmt(r['ws353'], '.4f')} |")
    cpu = [r for r in results if r.get("threads") and "error" not in r]
    if cpu:
        base = cpu[0]["words_per_sec"]
        scaling = ", ".join(f"{r['threads']}: {r['words_per_sec']:,.0f} ({r['words_per_sec'] / base:.2f}x)"
                            for r in cpu)
        lines += ["", f"CPU default, threads scaling (words/s; x over {cpu[0]['threads']} thread(s)): {scaling}"]
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--eval-dir", type=Path, default=EVAL_DIR)
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="only the first configuration (and no CPU rows)")
    ap.add_argument("--smoke", action="store_true", help=f"first {SMOKE_WORDS:,} words, 1-epoch rows, threads 1,2")
    ap.add_argument("--torch-steps", default="compiled,cuda_graph,compiled_cuda_graph",
                    help="other trainer.torch_step values to run on the first configuration ('' for none)")
    ap.add_argument("--threads", default="1,2,4,8,16", help="CPU default rows' trainer.threads ('' for none)")
    ap.add_argument("--extra", default="", help="comma-separated overrides for every torch run")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per run")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.out / "runs"
    work.mkdir(exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1", SGNS_CACHE_DIR=str(work / "cache"),
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    extra = [o for o in args.extra.split(",") if o]
    corpus = args.corpus.resolve()
    configs = CONFIGS[:1] if args.quick else CONFIGS
    threads = [int(t) for t in args.threads.split(",") if t] if not args.quick else []
    if args.smoke:
        corpus = prefix_corpus(corpus, SMOKE_WORDS, Path(tempfile.mkdtemp(prefix="sgns-gpu-smoke-")))
        configs = [(name, overrides) for name, overrides in configs if "trainer.epochs=1" in overrides]
        threads = [t for t in threads if t <= 2]
    steps = [s for s in args.torch_steps.split(",") if s and s != "eager"]
    if not args.device.startswith("cuda"):
        steps = [s for s in steps if not s.endswith("cuda_graph")]
    plan = [(name, args.device, "torch", overrides + extra, None) for name, overrides in configs]
    plan += [(f"{configs[0][0]}, trainer.torch_step={s}", args.device, "torch",
              configs[0][1] + extra + [f"trainer.torch_step={s}"], None) for s in steps]
    plan += [(f"CPU default, {t} thread(s), dim100 neg5 1 epoch", "cpu", "auto",
              ["model.dim=100", "data.negatives=5", "trainer.epochs=1", f"trainer.threads={t}"], t) for t in threads]
    header = (f"device: {device_name(args.device)}; CPU: {cpu_name()}; corpus: {corpus.name}; "
              f"extra overrides: {extra or 'none'}")
    print(header, flush=True)
    results = []
    for i, (name, device, kernel, overrides, n_threads) in enumerate(plan):
        run_dir, peak_file = work / f"run{i}", work / f"run{i}.peak.json"
        cmd = train_command(corpus, run_dir, peak_file, device, kernel, overrides, args.eval_dir.resolve())
        r = run_one(name, cmd, run_dir, peak_file, env, args.timeout)
        r.update(command="python -m sgns.train " + " ".join(cmd[4:]), threads=n_threads)
        results.append(r)
        print(json.dumps({k: v for k, v in r.items() if k != "command"}), flush=True)
        (args.out / "gpu_benchmark.json").write_text(json.dumps({"header": header, "runs": results}, indent=2))
        (args.out / "gpu_benchmark.md").write_text(table(results, header))
    print(table(results, header))


if __name__ == "__main__":
    main()
