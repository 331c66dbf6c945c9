"""model=subword's quality against fastText's C++ trainer, seed by seed (docs/subwords.md, "Quality against fastText").

Trains one program (sgns `model=subword` with optional overrides, or fastText's `train_unsupervised`) on
bench_subword.py's settings once per seed, scores each run with bench_subword.py's evaluator (the same code for
every program: analogies over the top 30k words; WS353 and SimLex Spearman over the pairs both of whose words the
run's vocabulary holds, and over every pair with unseen words answered from n-grams), deletes the run, and
appends one JSON line per run to --out:

    python scripts/studies/subword_quality.py --program fasttext --seeds 1,2,3 --out q.jsonl
    python scripts/studies/subword_quality.py --label ns05 --sgns-extra data.ns_exponent=0.5 --out q.jsonl
    python scripts/studies/subword_quality.py --summary q.jsonl          # each run, then mean ± sd per label
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts" / "benchmarks"))
import bench_subword  # noqa: E402
from bench_subword import SETTINGS, loaded, score, sgns_command  # noqa: E402
from benchmark import DEFAULT_CORPUS, plain_corpus, timed  # noqa: E402

METRICS = ("analogy", "ws353", "simlex", "ws353_all", "simlex_all")


def fasttext_worker(corpus: str, out: str, threads: int, seed: int, extra: str) -> None:
    import fasttext
    import fasttext.FastText

    fasttext.FastText.unsupervised_default["seed"] = seed  # train_unsupervised takes no seed; it reads this default
    s = SETTINGS
    options = dict(model="skipgram", dim=s["dim"], ws=s["window"], neg=s["negatives"], minCount=s["min_count"],
                   minn=s["minn"], maxn=s["maxn"], bucket=s["bucket"], epoch=s["epochs"], lr=s["lr"],
                   t=s["subsample"], thread=threads, verbose=0)
    for item in filter(None, extra.split(",")):
        key, value = item.split("=")
        options[key] = type(options[key])(value)
    fasttext.train_unsupervised(corpus, **options).save_model(str(Path(out) / "model.bin"))


def summary(path: Path) -> None:
    runs: Dict[str, List[dict]] = defaultdict(list)
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            runs[row["label"]].append(row)
    print("| variant | seed | " + " | ".join(METRICS) + " |")
    print("|---|---|" + "---|" * len(METRICS))
    for label, rows in runs.items():
        for r in sorted(rows, key=lambda r: r["seed"]):
            print(f"| {label} | {r['seed']} | " + " | ".join(f"{r[m]:.4f}" for m in METRICS) + " |")
    print()
    print("| variant | seeds | " + " | ".join(METRICS) + " |")
    print("|---|---|" + "---|" * len(METRICS))
    for label, rows in runs.items():
        cells = []
        for m in METRICS:
            values = [r[m] for r in rows]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.4f} ± {sd:.4f}")
        print(f"| {label} | {','.join(str(r['seed']) for r in rows)} | " + " | ".join(cells) + " |")


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--program", choices=("sgns", "fasttext"), default="sgns")
    ap.add_argument("--label", default="")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--sgns-extra", default="", help="comma-separated overrides for the sgns runs")
    ap.add_argument("--fasttext-extra", default="", help="comma-separated fastText options, e.g. neg=5")
    ap.add_argument("--eval-dir", type=Path, default=bench_subword.EVAL_DIR, help="the benchmark files' folder")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/sgns-subword-quality"))
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--summary", type=Path, default=None)
    ap.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        corpus, out, threads, seed, extra = args.worker
        fasttext_worker(corpus, out, int(threads), int(seed), extra)
        return
    if args.summary:
        summary(args.summary)
        return
    from sgns.evaluate import evaluate_analogies

    args.workdir.mkdir(parents=True, exist_ok=True)
    bench_subword.EVAL_DIR = args.eval_dir  # score() reads the module's
    corpus = plain_corpus(args.corpus.resolve(), args.workdir)
    label = args.label or (args.program + (f" {args.sgns_extra}" if args.sgns_extra else ""))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "SGNS_CACHE_DIR": str(args.workdir / "cache")}  # read once, shared by every sgns run
    for seed in (int(s) for s in args.seeds.split(",")):
        out = args.workdir / f"{''.join(c if c.isalnum() else '_' for c in label)}-{seed}"  # Hydra parses the path
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        if args.program == "sgns":
            extra = [o for o in args.sgns_extra.split(",") if o]
            cmd = [f"trainer.seed={seed}" if a.startswith("trainer.seed=") else a
                   for a in sgns_command(corpus, out / "run", args.threads, extra)]
        else:
            cmd = [sys.executable, __file__, "--worker", str(corpus), str(out), str(args.threads), str(seed),
                   args.fasttext_extra]
        cost = timed(cmd, env, out / "log.txt")
        model = loaded(args.program, out / "run" if args.program == "sgns" else out)
        quality = score({label: model}, 30000)[label]
        analogies = evaluate_analogies(model[0], model[1], args.eval_dir / "questions-words.txt", 30000)
        quality.update(semantic=analogies["semantic_accuracy"], syntactic=analogies["syntactic_accuracy"])
        row = {"label": label, "program": args.program, "seed": seed, "sgns_extra": args.sgns_extra,
               "fasttext_extra": args.fasttext_extra, **quality, "wall": cost["wall"]}
        print(json.dumps(row), flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
