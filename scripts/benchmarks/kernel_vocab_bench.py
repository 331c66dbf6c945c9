"""Words/s of the numba span kernel at a small and a big vocabulary (docs/kernels.md, issue 18 item 3), and
against another version of the kernel (`--baseline`: a copy of another checkout's sgns/pipelines/span_kernel.py,
or of an sgns/pipelines/span.py from before the kernel had its own module).

No text: token ids are drawn from a Zipf law (P(rank r) ~ 1/r^s over `V` word types, as in the synthetic
corpus of issue 18), cut into sentences of `--sentence` tokens; counts give the subsampling and negative
tables as in a real run; the input table starts as word2vec's, the output table at zero. Every configuration
(vocabulary x kernel x table pages: plain 4 KiB, or transparent huge pages) trains through `SpanTrainer`, the
kernel's real driver, one span of `--span` tokens at a time, the configurations taking turns span by span
(the order rotating each round), so that all of them share the machine's load; a pass is `--rounds` rounds.
A configuration's words/s is its tokens over its seconds in the pass; ratios are taken within a pass.

`--check` instead trains the same spans from the same tables with both kernels (deterministic, shared and
per-context negatives) and says whether the tables come out bit-identical.

    git show main:sgns/pipelines/span_kernel.py > /tmp/span_main.py
    python scripts/benchmarks/kernel_vocab_bench.py --vocab 60000 2000000 --baseline /tmp/span_main.py --repeats 5
    python scripts/benchmarks/kernel_vocab_bench.py --vocab 60000 2000000 --baseline /tmp/span_main.py --check
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Dict, List, Optional, Tuple

import numpy as np

from sgns.pipelines import span_kernel
from sgns.pipelines.negatives import unigram_table
from sgns.pipelines.plan import keep_probabilities
from sgns.pipelines.span import SpanTrainer, advise_huge_pages
from sgns.pipelines.span_kernel import kernel_alias_table as alias_table


def huge_kib() -> str:
    """AnonHugePages of this process (Linux), to see whether the advice was taken."""
    try:
        with open("/proc/self/smaps_rollup") as f:
            return next((line.split()[1] for line in f if line.startswith("AnonHugePages")), "?")
    except OSError:
        return "?"


def zipf_ids(vocab: int, tokens: int, exponent: float, seed: int) -> np.ndarray:
    """`tokens` ids in [0, vocab), id r drawn with probability ~ 1/(r + 1)^exponent (id 0 the most frequent)."""
    p = 1.0 / np.arange(1, vocab + 1, dtype=np.float64) ** exponent
    cdf = np.cumsum(p / p.sum())
    u = np.random.default_rng(seed).random(tokens)
    return np.minimum(np.searchsorted(cdf, u), vocab - 1).astype(np.int32)


def load_kernel(path: str) -> ModuleType:
    """Another version of the kernel's module (a file outside this checkout), imported as its own module."""
    spec = importlib.util.spec_from_file_location(f"baseline_{Path(path).stem}", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def tables(vocab: int, ids: np.ndarray, dim: int, huge: bool) -> Tuple[dict, float]:
    """The trainer's arrays for `ids` (W, C faulted in) and the seconds the huge-page advice took."""
    counts = np.bincount(ids, minlength=vocab).astype(np.int64) + 1  # every row is a word (min_count is upstream)
    accept, alias = alias_table(unigram_table(counts, 0.75))
    W = np.empty((vocab, dim), dtype=np.float32)
    C = np.empty((vocab, dim), dtype=np.float32)
    start = time.perf_counter()
    advise_huge_pages(W, huge)  # before the first write: the pages are faulted in as advised
    advise_huge_pages(C, huge)
    advise_s = time.perf_counter() - start
    W[...] = (np.random.default_rng(0).random((vocab, dim), dtype=np.float32) - 0.5) / dim
    C[...] = 0.0  # every page faulted in now, not in the first timed span
    return dict(W=W, C=C, remap=np.arange(vocab, dtype=np.int32), keep=keep_probabilities(counts, 1e-3),
                accept=accept, alias=alias), advise_s


def trainer(kernel: ModuleType, arrays: dict, threads: int, per_context: bool = False,
            deterministic: bool = False):  # type: ignore[no-untyped-def]
    """A SpanTrainer over `arrays` (window 5, 5 negatives, seed 1) running `kernel`'s piece kernel (shared or, if
    `per_context`, per-context negatives). `kernel`: a version of span_kernel.py, run by this checkout's
    SpanTrainer; or an older span.py holding its own SpanTrainer, selecting the per-context kernel by flags."""
    args = (arrays["W"], arrays["C"], arrays["remap"], arrays["keep"], arrays["accept"], arrays["alias"])
    options = dict(window=5, negatives=5, seed=1, threads=threads, deterministic=deterministic)
    if hasattr(kernel, "SpanTrainer"):
        tr = kernel.SpanTrainer(*args, **options)
        tr.variant_flags = kernel.PER_CONTEXT if per_context else 0
        return tr
    return SpanTrainer(*args, **options, kernel=kernel.train_piece_per_context if per_context else kernel.train_piece)


def train_one_span(tr, ids: np.ndarray, lo: int, span_tokens: int,  # type: ignore[no-untyped-def]
                   sentence: int) -> Tuple[float, int]:
    """Seconds and tokens of one train_span over ids[lo:lo + span_tokens] (lr 0.02)."""
    hi = min(lo + span_tokens, len(ids))
    starts = np.append(np.arange(0, hi - lo, sentence), hi - lo).astype(np.int64)
    start = time.perf_counter()
    tr.train_span(ids[lo:hi], starts, 0, lo // span_tokens, 0.02, 0.02)
    return time.perf_counter() - start, hi - lo


def check_identical(kernels: Dict[str, ModuleType], ids: Dict[int, np.ndarray], dim: int, spans: int,
                    span_tokens: int, sentence: int) -> None:
    """Both kernels from the same tables over the same spans, deterministic on 2 threads: bit-identical?"""
    for vocab, vocab_ids in ids.items():
        arrays, _ = tables(vocab, vocab_ids, dim, False)
        for per_context in (False, True):
            results = []
            for kernel in kernels.values():
                own = {k: v.copy() for k, v in arrays.items()}
                tr = trainer(kernel, own, 2, per_context, deterministic=True)
                for j in range(spans):
                    train_one_span(tr, vocab_ids, j * span_tokens, span_tokens, sentence)
                results.append((own["W"], own["C"]))
            same = all(np.array_equal(r[0], results[0][0]) and np.array_equal(r[1], results[0][1]) for r in results)
            negatives = "per-context" if per_context else "shared"
            print(f"vocab {vocab:,}, {negatives} negatives: {' and '.join(kernels)} tables after {spans} spans "
                  f"{'bit-identical' if same else 'DIFFER'}", flush=True)


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vocab", type=int, nargs="+", default=[60000, 2000000])
    ap.add_argument("--tokens", type=int, default=4_000_000, help="ids per vocabulary (spans wrap around)")
    ap.add_argument("--exponent", type=float, default=1.0, help="Zipf exponent of the id law")
    ap.add_argument("--dim", type=int, default=100)
    ap.add_argument("--sentence", type=int, default=100, help="tokens per sentence")
    ap.add_argument("--span", type=int, default=131072, help="tokens per train_span call (data.span_tokens)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=10, help="spans per configuration in a pass")
    ap.add_argument("--repeats", type=int, default=3, help="passes")
    ap.add_argument("--pages", nargs="+", default=["4k"], choices=["4k", "huge"])
    ap.add_argument("--baseline", nargs="+", default=[],
                    help="other versions of sgns/pipelines/span_kernel.py (or an older span.py; files named apart) "
                    "to alternate with this one")
    ap.add_argument("--check", action="store_true", help="only check both kernels give bit-identical tables")
    args = ap.parse_args(argv)
    ids = {v: zipf_ids(v, args.tokens, args.exponent, seed=v) for v in args.vocab}
    kernels = {"this": span_kernel, **{Path(f).stem: load_kernel(f) for f in args.baseline}}
    if args.check:
        check_identical(kernels, ids, args.dim, 3, args.span, args.sentence)
        return
    configs = [(v, k, p) for v in args.vocab for k in kernels for p in args.pages]
    arrays = {}
    for vocab in args.vocab:
        for pages in args.pages:
            arrays[(vocab, pages)], advise_s = tables(vocab, ids[vocab], args.dim, pages == "huge")
            print(f"vocab {vocab:,}, {pages} pages: advice {advise_s:.2f} s, {huge_kib()} KiB of anonymous huge "
                  "pages in the process now", flush=True)
    trainers = {c: trainer(kernels[c[1]], arrays[(c[0], c[2])], args.threads) for c in configs}
    for c, tr in trainers.items():  # compile (or load) outside the timing, and warm the tables
        for j in range(2):
            train_one_span(tr, ids[c[0]], j * args.span, args.span, args.sentence)
    cursor = {v: 0 for v in args.vocab}
    speeds: Dict[tuple, List[float]] = {c: [] for c in configs}
    for rep in range(args.repeats):
        seconds = {c: 0.0 for c in configs}
        words = {c: 0 for c in configs}
        for r in range(args.rounds):
            for q in range(len(configs)):
                c = configs[(q + r) % len(configs)]  # every configuration once a round, the order rotating
                vocab = c[0]
                dt, n = train_one_span(trainers[c], ids[vocab], cursor[vocab], args.span, args.sentence)
                cursor[vocab] = (cursor[vocab] + n) % len(ids[vocab])
                seconds[c] += dt
                words[c] += n
        for c in configs:
            speeds[c].append(words[c] / seconds[c])
        print(f"[{rep + 1}/{args.repeats}] " + ", ".join(f"{v:,} {k} {p}: {speeds[(v, k, p)][-1]:,.0f}"
                                                          for v, k, p in configs), flush=True)
    base = configs[0]
    print(f"\n{args.tokens:,} Zipf({args.exponent}) ids per vocabulary, dim {args.dim}, window 5, negatives 5, "
          f"{args.threads} threads, spans of {args.span:,}; {args.repeats} passes of {args.rounds} spans per "
          f"configuration, configurations alternating span by span; medians (min-max) over passes\n")
    first = next(iter(kernels))
    print(f"| vocabulary | kernel | table pages | words/s | vs {base[0]:,} {base[1]} {base[2]} "
          f"| vs {first}, same vocabulary and pages |")
    print("|---|---|---|---|---|---|")

    def ratio(c: tuple, b: tuple) -> str:
        r = [x / y for x, y in zip(speeds[c], speeds[b], strict=True)]
        return f"{statistics.median(r):.2f}x ({min(r):.2f}-{max(r):.2f})"

    for v, k, p in configs:
        print(f"| {v:,} | {k} | {p} | {statistics.median(speeds[(v, k, p)]):,.0f} | {ratio((v, k, p), base)} "
              f"| {ratio((v, k, p), (v, first, p))} |")


if __name__ == "__main__":
    main()
