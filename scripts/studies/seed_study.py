"""Quality over seeds: `sgns-train` configurations side by side, each trained with several seeds, scored alike.

Every run is its own `python -m sgns.train` process with the benchmark's contract settings (dim 100,
window 5, 5 negatives, subsample 1e-3, min_count 5, lr 0.025; scripts/benchmarks/benchmark.py) plus the variant's
overrides and `trainer.seed=S`; its vectors are scored by scripts/benchmarks/benchmark.py's evaluator (questions-words
top-30k, WordSim353, SimLex-999). Prints every run, then the mean, sample standard deviation and range of each
variant over its seeds. Quality only: the runs share a machine, so no speed is read from them.

    python scripts/studies/seed_study.py --seeds 1,2,3 --variant cpu= --variant torch=trainer.kernel=torch \\
        --lock /tmp/sgns-bench.lock --json /tmp/seeds.jsonl

`--json` appends one line per finished run and skips runs already there, so a stopped study continues.
`--lock` runs each training process under `flock LOCK` (never two measurements at once on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from benchmark import DEFAULT_CORPUS, contract_command, prefix_corpus, score, timed  # noqa: E402


def parse_variant(spec: str) -> tuple:
    name, _, overrides = spec.partition("=")
    return name, [o for o in overrides.split(",") if o]


def summary(values: List[float]) -> str:
    if not values:
        return "n/a"
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.4f} ± {sd:.4f} ({min(values):.4f}–{max(values):.4f})"


def main(argv: List[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--max-words", type=int, default=0, help="train on this many leading words only (0: all)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--seeds", default="1,2,3", help="comma-separated trainer.seed values")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=OVERRIDE[,OVERRIDE...]")
    ap.add_argument("--lock", default=None, help="run each training process under `flock LOCK`")
    ap.add_argument("--workdir", type=Path, default=None, help="keep run dirs here (default: a temp dir)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    variants = [parse_variant(v) for v in args.variant] or [("cpu", []), ("torch", ["trainer.kernel=torch"])]
    seeds = [int(s) for s in args.seeds.split(",")]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="sgns-seeds-"))
    workdir.mkdir(parents=True, exist_ok=True)
    corpus = args.corpus.resolve()
    if args.max_words:
        corpus = prefix_corpus(corpus, args.max_words, workdir)
    env = dict(os.environ)
    env.setdefault("SGNS_CACHE_DIR", str(workdir / "cache"))  # one token cache for all runs

    done: Dict[tuple, Dict] = {}
    if args.json and args.json.exists():
        for line in args.json.read_text().splitlines():
            r = json.loads(line)
            done[(r["variant"], r["seed"], r["epochs"], r["corpus"])] = r
    results = []
    for seed in seeds:  # seeds outermost: a stopped study has every variant at the seeds it reached
        for name, overrides in variants:
            key = (name, seed, args.epochs, str(corpus))
            if key in done:
                results.append(done[key])
                continue
            run_dir = workdir / f"{name}-s{seed}-e{args.epochs}"
            cmd = contract_command(corpus, run_dir, args.epochs,
                                   [*overrides, f"trainer.seed={seed}", "eval.projector_words=0"])
            if args.lock:
                cmd = ["flock", args.lock, *cmd]
            log = workdir / f"{name}-s{seed}-e{args.epochs}.log"
            r = {"variant": name, "overrides": overrides, "seed": seed, "epochs": args.epochs, "corpus": str(corpus)}
            try:
                timed(cmd, env, log)
            except SystemExit:  # a failed run (e.g. sgns-train stopping a diverged loss) is a result too
                error = [line for line in log.read_text(errors="replace").splitlines() if "error:" in line]
                r.update(loss=None, steps=None, analogy=None, ws353=None, simlex=None,
                         error=error[-1] if error else "failed")
                print(f"{name} seed {seed}: {r['error']}", flush=True)
            else:
                metrics = json.loads((run_dir / "metrics.json").read_text())
                r.update(loss=metrics["loss"], steps=metrics["steps"], train_seconds=metrics["train_seconds"],
                         **score(run_dir / "vectors.bin", 30000))
                print(f"{name} seed {seed}: loss {r['loss']:.4f} analogy {r['analogy']:.4f} "
                      f"ws353 {r['ws353']:.4f}", flush=True)
            results.append(r)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(r) + "\n")

    print(f"\ncorpus {corpus}, {args.epochs} epoch(s), seeds {args.seeds}\n")
    print("| variant | overrides | seeds | loss | analogy top-30k | WS353 | SimLex-999 |")
    print("|---|---|---|---|---|---|---|")
    for name, overrides in variants:
        rs = [r for r in results if r["variant"] == name]
        col = {k: [r[k] for r in rs if r[k] is not None] for k in ("loss", "analogy", "ws353", "simlex")}
        failed = sum(r["loss"] is None for r in rs)
        loss = f"{statistics.fmean(col['loss']):.4f}" if col["loss"] else "n/a"
        print(f"| {name} | {' '.join(overrides) or '(defaults)'} | {','.join(str(r['seed']) for r in rs)} | "
              f"{loss}{f' ({failed} failed)' if failed else ''} | {summary(col['analogy'])} | "
              f"{summary(col['ws353'])} | {summary(col['simlex'])} |")


if __name__ == "__main__":
    main()
