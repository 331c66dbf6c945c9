"""model=subword's kernel design, A/B on a real corpus (docs/kernels.md, "The subword kernel"): h computed once per
center and carried through its window (`train_piece_subword`, the product) against h recomputed from the rows for
every (center, context) pair as fastText's loop does (`subword_piece_kernel(HIDDEN_PER_PAIR)`) and against every
pair of a window taken from h before the window, one batch step (HIDDEN_WINDOW, "window"), with plain SGNS's kernel
(`train_piece`) on the same spans as the yardstick for issue 31's "subword at most 2.5x SGNS".

The corpus is read through sgns's token cache and vocabulary (min_count 5); subsampling, the negative table and the
n-gram rows are a run's (minn 3, maxn 6, `--bucket`); tables start as a run's (subword: fastText's uniform(-1/dim,
1/dim); SGNS: word2vec's). Every configuration trains through `SpanTrainer` on `--threads` threads (Hogwild) the
same consecutive spans of `--span` tokens, each span trained by every configuration in turn before the next span
(the order rotating span by span), so they share the machine's load; lr falls linearly over all the spans. A pair
is `--spans` spans; each configuration's time over a pair gives the pair's ratios, and only the median ratio over
the pairs is reported (a shared machine: absolute words/s are not a benchmark). The sampled loss per pair over the
last pair's spans and WS353/SimLex on the final tables (a word's vector: the mean of its rows) show the quality.

    python scripts/benchmarks/subword_kernel_ab.py --corpus ../shared/data/corpora/gutenberg_dev.txt.gz --pairs 3
    git show COMMIT:sgns/pipelines/subword_kernel.py > /tmp/old.py   # the kernel before a change, as "baseline"
    python scripts/benchmarks/subword_kernel_ab.py --corpus ... --configs per_center baseline --baseline /tmp/old.py
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

from sgns.config import CorpusConfig
from sgns.corpus import encode, make_source
from sgns.evaluate import evaluate_similarity
from sgns.pipelines.negatives import unigram_table
from sgns.pipelines.plan import keep_probabilities, read_ids, span_starts
from sgns.pipelines.span import SpanTrainer, advise_huge_pages
from sgns.pipelines.span_kernel import entry_point, kernel_alias_table, train_piece
from sgns.pipelines.subword_kernel import HIDDEN_PER_PAIR, HIDDEN_WINDOW, subword_piece_kernel, train_piece_subword
from sgns.subwords import subword_table
from sgns.vocab import Vocabulary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--cache-dir", default="~/.cache/sgns")
    ap.add_argument("--dim", type=int, default=100)
    ap.add_argument("--bucket", type=int, default=2_000_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--span", type=int, default=131_072)
    ap.add_argument("--spans", type=int, default=4, help="spans per pair")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--configs", nargs="+", default=["per_center", "per_pair", "sgns"],
                    help="per_center, per_pair, window, sgns, baseline (--baseline); the first is the base")
    ap.add_argument("--baseline", help="another version of sgns/pipelines/subword_kernel.py (a file), as 'baseline'")
    ap.add_argument("--eval-dir", help="WS353 and SimLex files (default: eval/ beside the corpus's folder)")
    args = ap.parse_args()
    eval_dir = Path(args.eval_dir or Path(args.corpus).resolve().parents[1] / "eval")

    corpus = encode(make_source(CorpusConfig(kind="text", path=args.corpus), args.cache_dir), args.cache_dir)
    vocab = Vocabulary.build(corpus.words, corpus.counts, 5)
    remap = vocab.remap(len(corpus.counts))
    keep = keep_probabilities(vocab.counts, 1e-3).astype(np.float32)
    accept, alias = kernel_alias_table(unigram_table(vocab.counts, 0.75))
    t0 = time.perf_counter()
    table = subword_table(vocab.words, 3, 6, args.bucket)
    print(f"vocabulary {len(vocab):,} words, {len(table.rows):,} row entries "
          f"({len(table.rows) / len(vocab):.1f} a word; the table in {time.perf_counter() - t0:.1f} s)")
    n_words, dim, rng = len(vocab), args.dim, np.random.default_rng(0)

    kernels = {"per_center": train_piece_subword, "per_pair": subword_piece_kernel(HIDDEN_PER_PAIR),
               "window": subword_piece_kernel(HIDDEN_WINDOW), "sgns": train_piece}
    if args.baseline:
        spec = importlib.util.spec_from_file_location(f"baseline_{Path(args.baseline).stem}", args.baseline)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # numba's cache looks the module up by name
        spec.loader.exec_module(module)
        kernels["baseline"] = module.subword_piece_kernel(0)  # its product kernel
    trainers: Dict[str, SpanTrainer] = {}
    for name in args.configs:
        subword = name != "sgns"
        rows = table.input_rows if subword else n_words
        scale = 1.0 / dim if subword else 0.5 / dim
        W = rng.uniform(-scale, scale, (rows, dim)).astype(np.float32)
        C = np.zeros((n_words, dim), np.float32)
        for t in (W, C):
            if t.nbytes >= 64 << 20:
                advise_huge_pages(t)
        t0 = time.perf_counter()
        entry_point(kernels[name], dim)
        print(f"{name}: kernel ready in {time.perf_counter() - t0:.1f} s")
        trainers[name] = SpanTrainer(W, C, remap, keep, accept, alias, 5, 5, 1, args.threads, kernel=kernels[name],
                                     subwords=table if subword else None)

    total_spans = args.pairs * args.spans
    if total_spans * args.span > corpus.total_tokens:
        raise SystemExit(f"the corpus has {corpus.total_tokens:,} tokens: fewer pairs or spans")
    seconds: Dict[str, List[float]] = {name: [0.0] * args.pairs for name in args.configs}
    last_loss: Dict[str, List[float]] = {name: [0.0, 0.0] for name in args.configs}
    words = 0
    for s in range(total_spans):
        lo, hi = s * args.span, (s + 1) * args.span
        raw, starts = read_ids(corpus.ids, lo, hi), span_starts(corpus.offsets, lo, hi)
        words += hi - lo
        lr0, lr1 = 0.025 * (1 - s / total_spans), 0.025 * (1 - (s + 1) / total_spans)
        order = args.configs[s % len(args.configs):] + args.configs[: s % len(args.configs)]
        for name in order:
            t0 = time.perf_counter()
            loss, sampled, _ = trainers[name].train_span(raw, starts, 0, s, lr0, lr1)
            seconds[name][s // args.spans] += time.perf_counter() - t0
            if s // args.spans == args.pairs - 1:
                last_loss[name][0] += loss
                last_loss[name][1] += sampled
    base = args.configs[0]
    print(f"{total_spans} spans of {args.span:,} tokens, {args.threads} threads, dim {dim}, bucket {args.bucket:,}")
    for name in args.configs:
        ratios = [seconds[name][p] / seconds[base][p] for p in range(args.pairs)]
        wps = [args.spans * args.span / t for t in seconds[name]]
        tr = trainers[name]
        if name == "sgns":
            vectors = tr.W
        else:  # a word's vector: the mean of its rows
            sums = np.zeros((n_words, dim), np.float64)
            np.add.at(sums, np.repeat(np.arange(n_words), np.diff(table.offsets)), tr.W[table.rows])
            vectors = (sums / np.diff(table.offsets)[:, None]).astype(np.float32)
        scores = {bench: evaluate_similarity(vocab.words, vectors, eval_dir / file)["spearman"]
                  for bench, file in (("ws353", "wordsim353.tsv"), ("simlex", "simlex999.txt"))}
        print(f"{name:>10}: time / {base}'s per pair {', '.join(f'{r:.2f}' for r in ratios)} "
              f"(median {statistics.median(ratios):.2f}x); words/s per pair {', '.join(f'{w:,.0f}' for w in wps)}; "
              f"last pair's loss per pair {last_loss[name][0] / max(last_loss[name][1], 1):.4f}; "
              f"ws353 {scores['ws353']:.3f} simlex {scores['simlex']:.3f}")


if __name__ == "__main__":
    main()
