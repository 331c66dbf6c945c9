"""sgns phrases (word2phrase on cached token ids) against gensim's Phrases on one corpus, alternating runs.

Both sides get the same sentences: sgns its cached token ids, gensim the same tokens as lists of strings,
already in memory (reading the corpus is not timed for either). gensim is given word2phrase's threshold
rescaled to its own score: gensim multiplies by len(vocab) (unigram + bigram types) where word2phrase
multiplies by the total word count, so threshold_gensim = threshold * len(vocab) / total_words picks the
same pairs. gensim's time is Phrases() (counting) + freeze() + applying the frozen model to every sentence;
sgns's is `phrase_stream` (counting + joining + the new id stream). Each later pass runs on the previous
pass's output, on both sides. Prints a markdown table of medians, and how far the phrases found agree.

    flock /tmp/sgns-bench.lock python scripts/benchmarks/bench_phrases.py --repeats 3 --passes 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Dict, List

import numpy as np

from sgns.corpus import encode, text_source
from sgns.corpus.phrases import PhraseStream, phrase_stream

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CORPUS = ROOT.parent / "shared" / "data" / "corpora" / "gutenberg_dev.txt.gz"


def run_sgns(stream: PhraseStream, passes: int, threshold: float, min_count: int) -> tuple[float, PhraseStream]:
    start = time.perf_counter()
    out = phrase_stream(stream, passes, threshold, min_count, log=lambda m: None)
    return time.perf_counter() - start, out


def run_gensim(sentences: List[List[str]], passes: int, threshold: float,
               min_count: int) -> tuple[float, List[List[str]]]:
    from gensim.models.phrases import Phrases

    start = time.perf_counter()
    for _ in range(passes):
        model = Phrases(sentences, min_count=min_count, threshold=threshold, delimiter="_")
        model.threshold = threshold * len(model.vocab) / model.corpus_word_count
        frozen = model.freeze()
        sentences = [frozen[s] for s in sentences]
    return time.perf_counter() - start, sentences


def phrase_types(sentences_or_tokens, original: set) -> Counter:
    return Counter(w for w in sentences_or_tokens if "_" in w and w not in original)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--cache-dir", type=Path, default=Path("/tmp/sgns-bench-phrases"))
    ap.add_argument("--passes", type=int, default=1)
    ap.add_argument("--threshold", type=float, default=100.0)
    ap.add_argument("--min-count", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    corpus = encode(text_source(args.corpus, 10000, False), args.cache_dir)
    stream = PhraseStream(np.asarray(corpus.ids), np.asarray(corpus.offsets), list(corpus.words),
                          np.asarray(corpus.counts))
    words = np.asarray(corpus.words, dtype=object)
    off = stream.offsets.tolist()
    sentences = [words[stream.ids[a:b]].tolist() for a, b in zip(off[:-1], off[1:], strict=True)]
    run_sgns(PhraseStream(stream.ids[:1000], np.array([0, 1000]), stream.words, stream.counts), 1, 1.0, 1)

    times: Dict[str, List[float]] = {"sgns": [], "gensim": []}
    for r in range(args.repeats):
        t, sgns_out = run_sgns(stream, args.passes, args.threshold, args.min_count)
        times["sgns"].append(t)
        t, gensim_out = run_gensim(sentences, args.passes, args.threshold, args.min_count)
        times["gensim"].append(t)
        print(f"repeat {r + 1}: sgns {times['sgns'][-1]:.1f} s, gensim {times['gensim'][-1]:.1f} s", flush=True)

    original = set(corpus.words)
    sgns_words = np.asarray(sgns_out.words, dtype=object)
    sgns_found = phrase_types(sgns_words[sgns_out.ids].tolist(), original)
    gensim_found = phrase_types((w for s in gensim_out for w in s), original)
    so = sgns_out.offsets.tolist()
    same_sentences = sum(
        sgns_words[sgns_out.ids[a:b]].tolist() == g for a, b, g in zip(so[:-1], so[1:], gensim_out, strict=True))
    both = set(sgns_found) & set(gensim_found)
    result = {
        "corpus": str(args.corpus), "tokens": corpus.total_tokens, "sentences": len(sentences),
        "passes": args.passes, "threshold": args.threshold, "min_count": args.min_count,
        "sgns_s": statistics.median(times["sgns"]), "gensim_s": statistics.median(times["gensim"]),
        "times": times, "sgns_phrase_types": len(sgns_found), "gensim_phrase_types": len(gensim_found),
        "shared_phrase_types": len(both), "sgns_phrase_tokens": sum(sgns_found.values()),
        "gensim_phrase_tokens": sum(gensim_found.values()), "identical_sentences": same_sentences,
        "top_phrases": [w for w, _ in sgns_found.most_common(15)],
    }
    print(f"\n| | sgns | gensim |\n|---|---|---|\n"
          f"| time, median of {args.repeats} (s) | {result['sgns_s']:.1f} | {result['gensim_s']:.1f} |\n"
          f"| phrase types found | {len(sgns_found):,} | {len(gensim_found):,} |\n"
          f"| phrase tokens written | {result['sgns_phrase_tokens']:,} | {result['gensim_phrase_tokens']:,} |\n"
          f"\nspeed-up {result['gensim_s'] / result['sgns_s']:.1f}x; {len(both):,} phrase types shared; "
          f"{same_sentences:,} of {len(sentences):,} sentences identical")
    print("most frequent:", ", ".join(result["top_phrases"]))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
