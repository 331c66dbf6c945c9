"""Variants of the numba span kernel's window update, side by side on one corpus (docs/kernel_quality.md).

Each variant is a bit set of scripts/studies/kernel_variants.py (PER_CONTEXT_NEGATIVES, SEQUENTIAL, PER_WORD_LR...),
trained by the study's kernel `kernel_variants.variant_kernel(flags)`; "default" and "per_context_batch" are
the product's own kernels (`train_piece`, and `train_piece_per_context`: data.window_negatives=false). The
corpus is read once (token cache) and every run trains a fresh model in this process through the real
pipeline (`make_pipeline`, the training loop's lr schedule), then scores the input vectors with sgns.evaluate:
Google analogies (overall, semantic, syntactic; top 30k words), WordSim353 and SimLex-999. Variants run
alternately, one run of each per seed in turn, so their words/s (training only) share the machine's load; the
ratios are what to read on a shared machine.

    SGNS_DATA_DIR=DATA python scripts/studies/kernel_variants_study.py --epochs 1 --seeds 1 2 3 \\
        --variants default per_context sequential word2vec --out study-e1.jsonl
    python scripts/studies/kernel_variants_study.py --summarize study-e1.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
VARIANTS = {  # name -> variant flags (see scripts/studies/kernel_variants.py); 0 and 17: the product's kernels
    "default": 0,
    "per_context": 1,  # a draw of K negatives per (context, center) pair
    "per_context_batch": 17,  # the same step, its row passes two rows at a time (data.window_negatives=false)
    "sequential": 2,  # pair-by-pair exact update, the window's shared negatives
    "word2vec": 3,  # both: word2vec's (and gensim's) inner loop
    "word2vec_fused": 11,  # the same, each pair's logits first, then one pass over its output rows
    "per_word_lr": 4,  # lr decayed per center word
    "per_context_lr": 5,
}
EVAL = ("questions-words.txt", "wordsim353.tsv", "simlex999.txt")


def compose(overrides: List[str]) -> Any:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from sgns.config import typed_config

    with initialize_config_dir(config_dir=str(ROOT / "sgns" / "conf"), version_base="1.3"):
        return typed_config(hydra_compose("train", overrides=overrides))


def train_once(cfg: Any, corpus: Any, vocab: Any, flags: int, max_spans: int = 0) -> Dict[str, Any]:
    """Train a fresh model with `flags` (only its first `max_spans` spans if > 0); training seconds, words/s
    and the input table."""
    import torch
    from kernel_variants import PER_CONTEXT, variant_kernel

    from sgns.model import make_model
    from sgns.pipelines import learning_rate, make_pipeline, resolve
    from sgns.pipelines.span_kernel import train_piece, train_piece_per_context
    from sgns.train.state import seed_everything

    seed_everything(cfg.trainer.seed)
    model = make_model(cfg.model, len(vocab))
    cpu = torch.device("cpu")
    backend = make_pipeline(resolve(cfg, cpu, corpus.total_tokens), corpus, vocab, model, cpu)
    # the product's kernels where a variant is one (bit for bit), else the study's
    product = {0: train_piece, PER_CONTEXT: train_piece_per_context}
    backend.trainer.kernel = product.get(flags) or variant_kernel(flags)
    backend.trainer.train_span(np.zeros(2, np.int32), np.array([0, 2]), 0, 0, 0.0, 0.0)  # compile outside the timing
    done = 0.0
    start = time.perf_counter()
    for i, batch in enumerate(backend.batches((0, 0, 0))):
        if max_spans and i == max_spans:
            break
        backend.step(batch, learning_rate(cfg.optimizer, done / backend.total_words))
        done = batch.words_done
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "words_per_sec": done / seconds,
            "vectors": model.input.weight.detach().numpy().copy()}


def score(words: List[str], vectors: Any, eval_dir: Path) -> Dict[str, Optional[float]]:
    from sgns.evaluate import evaluate_analogies, evaluate_similarity

    a = evaluate_analogies(words, vectors, eval_dir / EVAL[0], 30000)
    return {"overall": a["accuracy"], "semantic": a["semantic_accuracy"], "syntactic": a["syntactic_accuracy"],
            "ws353": evaluate_similarity(words, vectors, eval_dir / EVAL[1])["spearman"],
            "simlex": evaluate_similarity(words, vectors, eval_dir / EVAL[2])["spearman"],
            "sections": {k: v["accuracy"] for k, v in a["sections"].items()}}


def summarize(paths: List[Path]) -> None:
    rows: Dict[tuple, List[dict]] = {}
    for path in paths:
        for line in path.read_text().splitlines():
            r = json.loads(line)
            rows.setdefault((r["epochs"], r["variant"]), []).append(r)
    print("| epochs | variant | runs | semantic | syntactic | overall | WS353 | SimLex | words/s (median) "
          "| speed vs default |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (epochs, variant), rs in sorted(rows.items(), key=lambda kv: (kv[0][0], VARIANTS.get(kv[0][1], 99))):
        base = rows.get((epochs, "default"))
        # the ratio pairs each run with the default run of the same seed (run alternately, same load)
        ratios = [r["words_per_sec"] / b["words_per_sec"] for r in rs for b in base or []
                  if b["seed"] == r["seed"] and b["file"] == r["file"]]

        def span(key: str, rs: List[dict] = rs) -> str:
            values = [r[key] for r in rs if r[key] is not None]
            lo, hi = min(values), max(values)
            return f"{statistics.mean(values):.4f}" + (f" ({lo:.4f}-{hi:.4f})" if len(values) > 1 else "")

        ratio = f"{statistics.median(ratios):.2f}" if ratios else "-"
        print(f"| {epochs} | {variant} | {len(rs)} | {span('semantic')} | {span('syntactic')} | {span('overall')} "
              f"| {span('ws353')} | {span('simlex')} | {statistics.median(r['words_per_sec'] for r in rs):,.0f} "
              f"| {ratio} |")


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1])
    ap.add_argument("--variants", nargs="+", default=["default", "per_context"], choices=sorted(VARIANTS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--override", action="append", default=[], help="an extra Hydra override for every run")
    ap.add_argument("--speed-spans", type=int, default=0,
                    help="speed only: train each variant on this many spans, no scores (repeat with more seeds)")
    ap.add_argument("--out", type=Path, help="append one JSON line per run here")
    ap.add_argument("--summarize", type=Path, nargs="+", help="print the table of these result files and exit")
    args = ap.parse_args(argv)
    if args.summarize:
        summarize(args.summarize)
        return
    import os

    from sgns.train.loop import read_corpus

    eval_dir = Path(os.environ["SGNS_DATA_DIR"]) / "eval"
    overrides = ["experiment=gutenberg_baseline", "model.dim=100", "data.window=5", "data.negatives=5",
                 "data.min_count=5", "data.subsample=1e-3", "optimizer.lr=0.025", "trainer.device=cpu",
                 f"trainer.epochs={args.epochs}", f"trainer.threads={args.threads}", "trainer.run_dir=/nonexistent",
                 *args.override]
    cfg = compose(overrides)
    corpus, vocab = read_corpus(cfg)
    speeds: Dict[str, List[float]] = {}
    for seed in args.seeds:
        for variant in args.variants:
            run_cfg = compose(overrides + [f"trainer.seed={seed}"])
            result = train_once(run_cfg, corpus, vocab, VARIANTS[variant], args.speed_spans)
            if args.speed_spans:
                print(f"{variant} seed {seed}: {result['words_per_sec']:,.0f} words/s", flush=True)
                speeds.setdefault(variant, []).append(result["words_per_sec"])
                continue
            row = {"variant": variant, "flags": VARIANTS[variant], "seed": seed, "epochs": args.epochs,
                   "threads": args.threads, "overrides": args.override, "file": str(args.out),
                   "seconds": result["seconds"], "words_per_sec": result["words_per_sec"],
                   **score(vocab.words, result["vectors"], eval_dir)}
            print(json.dumps({k: v for k, v in row.items() if k != "sections"}), file=sys.stderr, flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")
    if speeds:
        base = speeds.get(args.variants[0])
        print(f"\nwords/s over the first {args.speed_spans} spans, median of {len(args.seeds)} alternating runs")
        for variant, values in speeds.items():
            ratios = [v / b for v, b in zip(values, base or [], strict=False)]
            print(f"| {variant} | {statistics.median(values):,.0f} | "
                  f"{statistics.median(ratios) if ratios else float('nan'):.3f} |")


if __name__ == "__main__":
    main()
