"""How many rows of each table one rank changes between two merges (2 ranks), from the real batch stream.

    python scripts/studies/rows_touched.py data/corpora/gutenberg_dev.txt.gz

No training: it walks the pairs and negatives the first rank would train and marks the rows they touch.
This decides between merging whole tables and merging only the changed rows (see README, Scaling out).
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import torch

from sgns.config import DataConfig
from sgns.corpus import encode, text_source
from sgns.pipelines.negatives import NegativeSampler, unigram_table
from sgns.pipelines.pairs import PairBatches
from sgns.vocab import Vocabulary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus")
    parser.add_argument("--cache-dir", default=os.environ.get("SGNS_CACHE_DIR", os.path.expanduser("~/.cache/sgns")))
    args = parser.parse_args()
    corpus = encode(text_source(args.corpus, 10000, False), args.cache_dir, log=lambda _: None)
    vocab = Vocabulary.build(corpus.words, corpus.counts, 5, None)
    sampler = NegativeSampler(unigram_table(vocab.counts, 0.75), torch.device("cpu"), 1)
    for per_rank in (5_000, 50_000, 500_000):
        data = DataConfig(window=5, subsample=1e-3, batch_size=4096, chunk_tokens=1_000_000, prefetch=False)
        pairs = PairBatches(corpus, vocab, data, 1, 1, torch.device("cpu"))
        changed_in, changed_out = np.zeros(len(vocab), bool), np.zeros(len(vocab), bool)
        for batch in pairs:
            changed_in[batch.centers.numpy()] = True
            changed_out[batch.contexts.numpy()] = True
            changed_out[sampler.draw(batch.pairs, 5, 1).numpy().ravel()] = True
            if batch.words_done >= per_rank:
                break
        print(f"merge every {2 * per_rank:>9,} words (2 ranks): input rows changed {changed_in.mean():.1%}, "
              f"output rows changed {changed_out.mean():.1%} of V={len(vocab):,}")


if __name__ == "__main__":
    main()
