"""Words/s of the numba span kernel at a small and a big vocabulary (docs/kernel_quality.md, issue 18 item 3).

No text: token ids are drawn from a Zipf law (P(rank r) ~ 1/r^s over `V` word types, as in the synthetic
corpus of issue 18), cut into sentences of `--sentence` tokens; counts give the subsampling and negative
tables as in a real run; the input table starts as word2vec's, the output table at zero. Each configuration
(vocabulary x table memory: plain 4 KiB pages, or transparent huge pages) trains one pass over the same ids
through `SpanTrainer`, the kernel's real driver, alternating configurations repeat by repeat so that they
share the machine's load.

    python scripts/kernel_vocab_bench.py --vocab 60000 2000000 --tokens 10000000 --repeats 3
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import sys
import time
from typing import Dict, List, Optional, Tuple

import numpy as np

from sgns.pipelines.negatives import unigram_table
from sgns.pipelines.plan import keep_probabilities
from sgns.pipelines.span import SpanTrainer
from sgns.pipelines.span import kernel_alias_table as alias_table

HUGE_PAGE = 1 << 21
_MADV_HUGEPAGE, _MADV_COLLAPSE = 14, 25  # Linux madvise advice values (COLLAPSE: Linux >= 6.1)


def advise_huge_pages(table: np.ndarray) -> bool:
    """Back `table`'s memory with 2 MiB transparent huge pages where Linux allows (THP `madvise` mode): the
    kernel's rows are random accesses, and with 4 KiB pages a big table misses the TLB on nearly every row.
    MADV_COLLAPSE converts the already-written pages now (older kernels: khugepaged, later). Returns whether
    the advice was taken; a no-op elsewhere and for tables under a huge page."""
    if not sys.platform.startswith("linux") or table.nbytes < 2 * HUGE_PAGE:
        return False
    lo = (table.ctypes.data + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1)
    hi = (table.ctypes.data + table.nbytes) & ~(HUGE_PAGE - 1)
    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return False
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    if madvise(lo, hi - lo, _MADV_HUGEPAGE) != 0:
        return False
    madvise(lo, hi - lo, _MADV_COLLAPSE)  # best effort: EINVAL before Linux 6.1, EAGAIN/ENOMEM under pressure
    return True



def zipf_ids(vocab: int, tokens: int, exponent: float, seed: int) -> np.ndarray:
    """`tokens` ids in [0, vocab), id r drawn with probability ~ 1/(r + 1)^exponent (id 0 the most frequent)."""
    p = 1.0 / np.arange(1, vocab + 1, dtype=np.float64) ** exponent
    cdf = np.cumsum(p / p.sum())
    u = np.random.default_rng(seed).random(tokens)
    return np.minimum(np.searchsorted(cdf, u), vocab - 1).astype(np.int32)


def setup(vocab: int, ids: np.ndarray, dim: int, huge: bool, threads: int) -> Tuple[SpanTrainer, float]:
    counts = np.bincount(ids, minlength=vocab).astype(np.int64) + 1  # every row is a word (min_count is upstream)
    accept, alias = alias_table(unigram_table(counts, 0.75))
    rng = np.random.default_rng(0)
    W = ((rng.random((vocab, dim), dtype=np.float32) - 0.5) / dim)
    C = np.zeros((vocab, dim), dtype=np.float32)
    start = time.perf_counter()
    if huge:
        advise_huge_pages(W)
        advise_huge_pages(C)
    advise_s = time.perf_counter() - start
    trainer = SpanTrainer(W, C, np.arange(vocab, dtype=np.int32), keep_probabilities(counts, 1e-3), accept, alias,
                          window=5, negatives=5, seed=1, threads=threads)
    return trainer, advise_s


def one_pass(trainer: SpanTrainer, ids: np.ndarray, sentence: int, span: int) -> float:
    """Seconds for one pass over `ids` in spans of `span` tokens, lr falling 0.025 -> 0."""
    n = len(ids)
    start = time.perf_counter()
    for lo in range(0, n, span):
        hi = min(lo + span, n)
        starts = np.append(np.arange(0, hi - lo, sentence), hi - lo).astype(np.int64)
        trainer.train_span(ids[lo:hi], starts, 0, lo // span, 0.025 * (1 - lo / n), 0.025 * (1 - hi / n))
    return time.perf_counter() - start


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vocab", type=int, nargs="+", default=[60000, 2000000])
    ap.add_argument("--tokens", type=int, default=10_000_000)
    ap.add_argument("--exponent", type=float, default=1.0, help="Zipf exponent of the id law")
    ap.add_argument("--dim", type=int, default=100)
    ap.add_argument("--sentence", type=int, default=100, help="tokens per sentence")
    ap.add_argument("--span", type=int, default=131072, help="tokens per train_span call (data.span_tokens)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--pages", nargs="+", default=["4k", "huge"], choices=["4k", "huge"])
    args = ap.parse_args(argv)
    ids = {v: zipf_ids(v, args.tokens, args.exponent, seed=v) for v in args.vocab}
    configs = [(v, p) for v in args.vocab for p in args.pages]
    speeds: Dict[Tuple[int, str], List[float]] = {c: [] for c in configs}
    warm, _ = setup(1000, ids[args.vocab[0]] % 1000, args.dim, False, 1)
    one_pass(warm, ids[args.vocab[0]][:20000] % 1000, args.sentence, args.span)  # compile outside the timing
    for rep in range(args.repeats):
        for vocab, pages in configs:
            trainer, advise_s = setup(vocab, ids[vocab], args.dim, pages == "huge", args.threads)
            seconds = one_pass(trainer, ids[vocab], args.sentence, args.span)
            speeds[(vocab, pages)].append(args.tokens / seconds)
            print(f"[{rep + 1}/{args.repeats}] vocab {vocab:,} {pages} pages: {args.tokens / seconds:,.0f} words/s "
                  f"(advise {advise_s:.2f} s)", flush=True)
            del trainer
    print(f"\n{args.tokens:,} Zipf({args.exponent}) tokens, dim {args.dim}, window 5, negatives 5, "
          f"{args.threads} threads; medians of {args.repeats} alternating passes\n")
    print("| vocabulary | table pages | words/s | vs 4k pages, same vocabulary |")
    print("|---|---|---|---|")
    for vocab, pages in configs:
        med = statistics.median(speeds[(vocab, pages)])
        base = speeds.get((vocab, "4k"))
        ratio = f"{med / statistics.median(base):.2f}x" if base else "-"
        print(f"| {vocab:,} | {pages} | {med:,.0f} | {ratio} |")


if __name__ == "__main__":
    main()
