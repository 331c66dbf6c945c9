"""Scratch driver for the fused CPU kernel (sgns.fused): corpus -> vocabulary -> kernel -> vectors, no torch.

    python scripts/fused_driver.py --out /tmp/v.bin [--threads 2] [--epochs 1] [--score]

Times the whole process the way the benchmark does (the token cache under SGNS_CACHE_DIR is reused if warm).
With --score it scores the vectors (and --gensim FILE's) with sgns.evaluate after the timed part.
"""

from __future__ import annotations

import argparse
import mmap
import os
import time
from pathlib import Path

import numpy as np

from sgns.corpus import encode, text_source
from sgns.kernels.numba_kernels import SpanTrainer, alias_table
from sgns.spans import span_starts
from sgns.vectors import save_word2vec
from sgns.vocab import Vocabulary

EVAL = Path("/work/shared/data/eval")


def read_ids(ids: np.ndarray, lo: int, hi: int) -> np.ndarray:
    part = np.array(ids[lo:hi])
    base = getattr(ids, "_mmap", None)
    if base is not None and hasattr(mmap, "MADV_DONTNEED"):
        page = mmap.PAGESIZE
        start = (lo * 4) // page * page
        stop = min(-(-(hi * 4) // page) * page, len(base))
        base.madvise(mmap.MADV_DONTNEED, start, stop - start)
    return part


def rss_mib(field: str = "VmRSS") -> float:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    after_imports = rss_mib()
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default="/work/shared/data/corpora/gutenberg_dev.txt.gz")
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--dim", type=int, default=100)
    ap.add_argument("--window", type=int, default=5)
    ap.add_argument("--negatives", type=int, default=5)
    ap.add_argument("--subsample", type=float, default=1e-3)
    ap.add_argument("--lr", type=float, default=0.025)
    ap.add_argument("--chunk", type=int, default=131072)
    ap.add_argument("--piece", type=int, default=4096)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--loss-every", type=int, default=16)
    ap.add_argument("--score", action="store_true")
    ap.add_argument("--gensim", default=None)
    args = ap.parse_args()
    t0 = time.perf_counter()
    corpus = encode(text_source(args.corpus, 10000, False), os.environ.get("SGNS_CACHE_DIR", "/tmp/sgns-cache-cpu"),
                    log=lambda s: None)
    vocab = Vocabulary.build(corpus.words, corpus.counts, 5)
    remap = vocab.remap(len(corpus.words))
    f = vocab.counts / vocab.counts.sum()
    keep = np.minimum((np.sqrt(f / args.subsample) + 1) * args.subsample / f, 1.0) if args.subsample > 0 else np.ones(
        len(vocab))
    p = vocab.counts.astype(np.float64) ** 0.75
    accept, alias = alias_table(p / p.sum())
    rng = np.random.default_rng(args.seed)
    W = ((rng.random((len(vocab), args.dim), dtype=np.float32) - 0.5) / args.dim).astype(np.float32)
    C = np.zeros_like(W)
    trainer = SpanTrainer(W, C, remap, keep, accept, alias, args.window, args.negatives, args.seed, args.threads,
                          args.piece, args.loss_every)
    t1 = time.perf_counter()
    total = corpus.total_tokens * args.epochs
    done = 0
    loss, loss_pairs, pairs = 0.0, 0, 0
    n_chunks = -(-corpus.total_tokens // args.chunk)
    for epoch in range(args.epochs):
        for chunk in range(n_chunks):
            lo, hi = chunk * args.chunk, min((chunk + 1) * args.chunk, corpus.total_tokens)
            raw = read_ids(corpus.ids, lo, hi)
            starts = span_starts(corpus.offsets, lo, hi)
            lr0 = args.lr * max(1 - done / total, 1e-4)
            lr1 = args.lr * max(1 - (done + hi - lo) / total, 1e-4)
            l_, lp, p_ = trainer.train_span(raw, starts, epoch, chunk, lr0, lr1)
            loss += l_
            loss_pairs += lp
            pairs += p_
            done += hi - lo
    t2 = time.perf_counter()
    save_word2vec(args.out, vocab.words, W)
    t3 = time.perf_counter()
    print(f"prep {t1 - t0:.1f}s train {t2 - t1:.1f}s ({total / (t2 - t1):,.0f} w/s) save {t3 - t2:.1f}s "
          f"total {t3 - t0:.1f}s; pairs {pairs:,}, mean loss/pair {loss / max(loss_pairs, 1):.4f}; RSS after imports "
          f"{after_imports:.0f} MiB, peak {rss_mib('VmHWM'):.0f} MiB, "
          f"beyond imports {rss_mib('VmHWM') - after_imports:.0f} MiB",
          flush=True)
    if args.score:
        from sgns.evaluate import evaluate_analogies, evaluate_similarity
        from sgns.vectors import load_word2vec

        for name, path in (("sgns", args.out), ("gensim", args.gensim)):
            if path is None:
                continue
            words, matrix = load_word2vec(path)
            a = evaluate_analogies(words, matrix, EVAL / "questions-words.txt", 30000)["accuracy"]
            ws = evaluate_similarity(words, matrix, EVAL / "wordsim353.tsv")["spearman"]
            print(f"{name}: analogy {a:.4f} ws353 {ws:.4f}")


if __name__ == "__main__":
    main()
