"""sgns.fit beside gensim's Word2Vec on the same sentences in memory: wall time and the same evaluator's scores.

    python scripts/benchmarks/fit_vs_gensim.py --corpus gutenberg_dev.txt.gz --words 4000000 --eval-dir DIR

Both train skip-gram with negative sampling at word2vec's defaults (dim 100, window 5, 5 negatives, min_count 5,
subsample 1e-3, lr 0.025 decaying to 0.025e-4) for --epochs epochs on every core; both sets of vectors are scored
by sgns's evaluator (gensim's numbers, restrict_vocab 30000). Times include building the vocabulary (and, for
sgns, streaming the sentences to the token cache). Output: one JSON line per system.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import tempfile
import time
from pathlib import Path
from typing import List


def read_lines(path: Path, words: int) -> List[str]:
    lines, total = [], 0
    with gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8") as f:
        for line in f:
            lines.append(line.rstrip("\n"))
            total += len(line.split())
            if total >= words:
                break
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", type=Path, required=True)
    p.add_argument("--words", type=int, default=4_000_000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--eval-dir", type=Path, required=True, help="holds questions-words.txt, wordsim353.tsv")
    args = p.parse_args()
    lines = read_lines(args.corpus, args.words)
    analogies, pairs = args.eval_dir / "questions-words.txt", args.eval_dir / "wordsim353.tsv"
    threads = os.cpu_count() or 1

    from gensim.models import Word2Vec

    import sgns

    def scores(wv: sgns.WordVectors) -> dict:
        r = wv.evaluate(analogies=analogies, similarities=pairs)
        return {"analogy": round(r["questions-words"]["accuracy"], 4), "ws353": round(r["wordsim353"]["spearman"], 4)}

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        run = sgns.fit(lines, Path(tmp) / "run", epochs=args.epochs, threads=threads, progress=False,
                       projector_words=0)
        seconds = time.perf_counter() - started
        print(json.dumps({"system": "sgns.fit", "words": sum(len(x.split()) for x in lines),
                          "seconds": round(seconds, 1), "vocab": len(run.wv), **scores(run.wv)}), flush=True)

    sentences = [line.split() for line in lines]
    started = time.perf_counter()
    model = Word2Vec(sentences, vector_size=100, window=5, min_count=5, negative=5, sample=1e-3, sg=1, hs=0,
                     alpha=0.025, min_alpha=0.025e-4, epochs=args.epochs, workers=threads, seed=1)
    seconds = time.perf_counter() - started
    wv = sgns.WordVectors.from_gensim(model.wv)
    print(json.dumps({"system": "gensim Word2Vec", "words": sum(map(len, sentences)), "seconds": round(seconds, 1),
                      "vocab": len(wv), **scores(wv)}), flush=True)


if __name__ == "__main__":
    main()
