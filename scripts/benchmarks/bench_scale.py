"""sgns and gensim at scale, on a generated Zipf corpus of N words over V types, one command.

The corpus is written once under --cache-dir and reused; it is never part of the repository. Two generators
(--generator), seed fixed, words named by their rank in base 26 (shorter for more frequent ones):

* `zipf` (default): lines of 5-30 words drawn from a Zipf law with exponent 1 over V types (default 2M);
* `flat`: exponent 1.05 over 3.9M types, lines of 10-30 words (~20), issue 32's second corpus: a Zipf law
  that falls faster keeps fewer rare words (2.05M at min_count 5 at 200M words against 2.98M for `zipf` over
  8M types) and its frequent words are more frequent, so subsampling drops more of them.

Then, each run its own process:

* reading A/B (--reader-pairs K): the corpus stage alone (token ids + counts + the min_count=5 vocabulary,
  cold token cache each time) with the reader of another checkout (--old DIR, e.g. a `git worktree` of main)
  and with this one's, alternated K times; medians, and words/s per core;
* whole runs (unless --no-runs): sgns with word2vec's settings for --epochs, and gensim 4 in both its modes,
  iterable (LineSentence) and corpus_file (C++ reading in every worker); whole-process wall time, reading
  (+ vocabulary) time, training words/s and peak RSS (/usr/bin/time's maximum resident set of the main
  process; reading worker processes are counted apart, as their own maximum). --repeats K alternates them K
  times: medians, and sgns's whole-process speed against each gensim mode pair by pair (min, median, max of
  the per-pair ratios), as the reading A/B prints its per-pair spread: one lucky pair is no headline.

A Zipf corpus has no analogies or similarities to score, so no quality column: gensim's corpus_file mode
decays the learning rate per worker, which changes its 1-epoch quality on real text (see the dev-corpus
benchmark, scripts/benchmarks/benchmark.py). Run under `nice` on a shared machine.

    python scripts/benchmarks/bench_scale.py --words 50_000_000 --types 2_000_000 --reader-pairs 3 --no-runs
    python scripts/benchmarks/bench_scale.py --words 200_000_000 --types 8_000_000 --reader-pairs 1
    python scripts/benchmarks/bench_scale.py --generator flat --words 200_000_000 --cache-dir /tmp/sgns-bench
    python scripts/benchmarks/bench_scale.py --words 1_000_000_000 --types 20_000_000 --gensim-workers 32  # big machine
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts" / "benchmarks"))
from benchmark import contract_command, describe_spread, ratio_spread, timed  # noqa: E402

BLOCK_WORDS = 5_000_000  # words generated at a time (memory stays flat)


class Generator(NamedTuple):
    exponent: float  # of the Zipf law: P(rank r) ~ r ** -exponent
    line_words: Tuple[int, int]  # words per line: uniform in [low, high)
    types: int  # default number of types


GENERATORS = {
    "zipf": Generator(1.0, (5, 31), 2_000_000),
    "flat": Generator(1.05, (10, 31), 3_900_000),
}


def type_names(types: int) -> np.ndarray:
    """V distinct lowercase names, shorter for more frequent types (base-26 of the rank), as bytes objects."""
    names, letters = [], "abcdefghijklmnopqrstuvwxyz"
    for rank in range(types):
        s, n = "", rank
        while True:
            s, n = letters[n % 26] + s, n // 26 - 1
            if n < 0:
                break
        names.append(s.encode())
    return np.asarray(names, dtype=object)


def zipf_corpus(words: int, types: int, seed: int, cache_dir: Path, generator: str = "zipf") -> Path:
    """The corpus file for (generator, words, types, seed), generated on first use (written to a temp name, then
    renamed). The `zipf` generator's files keep their earlier name, zipf-WORDS-TYPES-SEED.txt."""
    law = GENERATORS[generator]
    path = cache_dir / f"{generator}-{words}-{types}-{seed}.txt"
    if path.exists():
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cdf = np.cumsum(np.arange(1, types + 1, dtype=np.float64) ** -law.exponent)
    cdf /= cdf[-1]
    names = type_names(types)
    spaced, ended = names + b" ", names + b"\n"
    tmp = path.with_suffix(".tmp")
    done = 0
    with open(tmp, "wb") as f:
        while done < words:
            n = min(BLOCK_WORDS, words - done)
            ranks = np.minimum(np.searchsorted(cdf, rng.random(n)), types - 1)
            lengths = rng.integers(*law.line_words, size=n // law.line_words[0] + 1)
            ends = np.cumsum(lengths)
            line_end = np.zeros(n, dtype=bool)
            line_end[ends[ends <= n] - 1] = True
            line_end[-1] = True
            f.write(b"".join(np.where(line_end, ended[ranks], spaced[ranks]).tolist()))
            done += n
    os.rename(tmp, path)
    return path


GENSIM_MODES = ("iterable", "corpus_file")

READER = """
import json, sys, time
start = time.perf_counter()
import sgns.corpus
from sgns.corpus import encode, text_source
from sgns.vocab import Vocabulary
imported = time.perf_counter()
corpus = encode(text_source(sys.argv[1], 10000, False), sys.argv[2], log=lambda _: None)
vocab = Vocabulary.build(corpus.words, corpus.counts, 5)
done = time.perf_counter()
print(json.dumps({"sgns": sgns.corpus.__file__, "seconds": done - imported, "tokens": corpus.total_tokens,
                  "distinct": len(corpus.words), "vocab": len(vocab)}))
"""


def read_once(checkout: Path, corpus: Path, workdir: Path, name: str) -> Dict[str, float]:
    """The corpus stage of `checkout` in a fresh process with a cold token cache: seconds (after imports)."""
    cache = workdir / f"cache-{name}"
    shutil.rmtree(cache, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    log = workdir / f"read-{name}.log"
    # In the checkout: `python -c` puts the working directory first on sys.path, ahead of PYTHONPATH, so run
    # from this checkout it would import this checkout's sgns for the other reader too.
    usage = timed([sys.executable, "-c", READER, str(corpus), str(cache)], env, log, cwd=checkout)
    shutil.rmtree(cache, ignore_errors=True)
    result = json.loads(log.read_text().strip().splitlines()[-1])
    return {**result, "wall": usage["wall"], "cpu": usage["cpu"], "rss_mib": usage["rss_mib"]}


def gensim_worker(mode: str, corpus: str, out: str, workers: int, epochs: int, report: str) -> None:
    """gensim skip-gram with word2vec's settings, reading `corpus` as an iterable or through corpus_file."""
    from gensim.models import Word2Vec
    from gensim.models.word2vec import LineSentence

    model = Word2Vec(vector_size=100, window=5, negative=5, sample=1e-3, min_count=5, alpha=0.025,
                     min_alpha=0.0001, workers=workers, sg=1, hs=0, seed=1)
    source = {"corpus_iterable": LineSentence(corpus)} if mode == "iterable" else {"corpus_file": corpus}
    start = time.perf_counter()
    model.build_vocab(**source)
    read = time.perf_counter() - start
    start = time.perf_counter()
    model.train(**source, total_examples=model.corpus_count, total_words=model.corpus_total_words, epochs=epochs)
    train = time.perf_counter() - start
    model.wv.save_word2vec_format(out, binary=True)
    Path(report).write_text(json.dumps({"read_s": read, "train_s": train, "vocab": len(model.wv),
                                        "words_per_s": model.corpus_total_words * epochs / train}))


def sgns_run(corpus: Path, workdir: Path, epochs: int, extra: List[str]) -> Dict[str, float]:
    run_dir = workdir / "sgns-run"
    shutil.rmtree(run_dir, ignore_errors=True)
    cache = workdir / "cache-run"
    shutil.rmtree(cache, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SGNS_CACHE_DIR": str(cache)}
    usage = timed(contract_command(corpus, run_dir, epochs, extra), env, workdir / "sgns-run.log")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    shutil.rmtree(cache, ignore_errors=True)
    train_s = metrics["train_seconds"]
    return {**usage, "read_s": reading_seconds(workdir / "sgns-run.log"), "train_s": train_s,
            "words_per_s": metrics["words_per_sec"], "vocab": metrics["vocab_size"]}


def reading_seconds(log: Path) -> Optional[float]:
    """Seconds between the run log's `corpus: reading` line and its `corpus: N words, vocabulary` line."""
    stamps = {}
    for line in log.read_text(errors="replace").splitlines():
        for key, marker in (("start", "corpus: reading"), ("end", "words, vocabulary")):
            if marker in line and line.startswith("["):
                stamps.setdefault(key, time.mktime(time.strptime(line[1:20], "%Y-%m-%d %H:%M:%S"))
                                  + int(line[21:24]) / 1000)
    return stamps["end"] - stamps["start"] if len(stamps) == 2 else None


def gensim_run(mode: str, corpus: Path, workdir: Path, epochs: int, workers: int) -> Dict[str, float]:
    report = workdir / f"gensim-{mode}.json"
    cmd = [sys.executable, __file__, "--gensim-worker", mode, str(corpus), str(workdir / f"gensim-{mode}.bin"),
           str(workers), str(epochs), str(report)]
    usage = timed(cmd, dict(os.environ), workdir / f"gensim-{mode}.log")
    return {**usage, **json.loads(report.read_text())}


def fmt(value: Optional[float], spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--words", type=int, default=50_000_000)
    ap.add_argument("--generator", choices=sorted(GENERATORS), default="zipf",
                    help="zipf: exponent 1, lines of 5-30 words; flat: exponent 1.05, lines of 10-30 words")
    ap.add_argument("--types", type=int, default=None,
                    help="types in the Zipf law (seen: fewer); default 2M for zipf, 3.9M for flat")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cache-dir", type=Path, default=Path(os.environ.get("HOME", ".")) / ".cache" / "sgns-bench")
    ap.add_argument("--workdir", type=Path, default=None, help="run folders (default: under --cache-dir)")
    ap.add_argument("--old", type=Path, default=None, help="checkout whose reader is the A/B baseline")
    ap.add_argument("--reader-pairs", type=int, default=0, help="alternated old/new reads (needs --old)")
    ap.add_argument("--no-runs", action="store_true", help="only the reading A/B")
    ap.add_argument("--no-gensim", action="store_true")
    ap.add_argument("--repeats", type=int, default=1, help="alternated repetitions of the whole runs")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--gensim-workers", type=int, default=2)
    ap.add_argument("--gensim-modes", default=",".join(GENSIM_MODES), help="comma-separated, of: iterable,corpus_file")
    ap.add_argument("--sgns-extra", default="", help="comma-separated overrides for the sgns run")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--gensim-worker", nargs=6, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.gensim_worker:
        mode, corpus, out, workers, epochs, report = args.gensim_worker
        gensim_worker(mode, corpus, out, int(workers), int(epochs), report)
        return

    if args.types is None:
        args.types = GENERATORS[args.generator].types
    start = time.perf_counter()
    corpus = zipf_corpus(args.words, args.types, args.seed, args.cache_dir, args.generator)
    print(f"corpus {corpus} ({corpus.stat().st_size / 2**20:,.0f} MiB; ready in {time.perf_counter() - start:.0f}s)")
    workdir = args.workdir or args.cache_dir / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    cores = len(os.sched_getaffinity(0))
    results: Dict[str, object] = {"generator": args.generator, "words": args.words, "types": args.types,
                                  "cores": cores}

    if args.reader_pairs and args.old:
        rows: Dict[str, List[dict]] = {"old": [], "new": []}
        for i in range(args.reader_pairs):
            for name, checkout in (("old", args.old), ("new", ROOT)):
                rows[name].append(read_once(checkout, corpus, workdir, name))
                r = rows[name][-1]
                print(f"pair {i + 1} {name}: {r['seconds']:.1f}s, {r['tokens'] / r['seconds']:,.0f} words/s, "
                      f"peak RSS {r['rss_mib']:,.0f} MiB", flush=True)
        results["reader"] = rows
        old, new = (statistics.median(r["seconds"] for r in rows[k]) for k in ("old", "new"))
        first = rows["new"][0]
        print(f"\nreading + vocabulary, {first['tokens']:,} words, {first['distinct']:,} distinct, vocabulary "
              f"{first['vocab']:,} (min_count 5), {cores} cores, medians of {args.reader_pairs}:\n")
        print("| reader | seconds | words/s | words/s per core | peak RSS MiB |\n|---|---|---|---|---|")
        for name, secs, used in (("old (one core)", old, 1), ("new (every core)", new, cores)):
            rss = statistics.median(r["rss_mib"] for r in rows[name.split()[0]])
            print(f"| {name} | {secs:.1f} | {first['tokens'] / secs:,.0f} | {first['tokens'] / secs / used:,.0f} "
                  f"| {rss:,.0f} |")
        spread = ratio_spread([r["seconds"] for r in rows["new"]], [r["seconds"] for r in rows["old"]])
        results["reader_new_over_old_per_pair"] = spread
        print(f"\nnew / old time: {new / old:.2f} (medians); per pair: {describe_spread(spread)}")

    if not args.no_runs:
        modes = [m for m in args.gensim_modes.split(",") if m]
        if any(m not in GENSIM_MODES for m in modes):
            raise SystemExit(f"bench_scale: --gensim-modes takes {', '.join(GENSIM_MODES)}, not {args.gensim_modes}")
        names = ["sgns"] + ([] if args.no_gensim else [f"gensim {mode}" for mode in modes])
        runs: Dict[str, List[dict]] = {name: [] for name in names}
        extra = [x for x in args.sgns_extra.split(",") if x]
        for i in range(args.repeats):  # alternated: one run of each per repetition, never two at once
            for name in names:
                r = (sgns_run(corpus, workdir, args.epochs, extra) if name == "sgns" else
                     gensim_run(name.split()[1], corpus, workdir, args.epochs, args.gensim_workers))
                runs[name].append(r)
                print(f"[{i + 1}/{args.repeats}] {name}: {r['wall']:.0f} s whole, peak RSS {r['rss_mib']:,.0f} MiB",
                      flush=True)
        results["runs"] = runs
        print(f"\nwhole runs, {args.words:,} words ({args.generator} generator, {args.types:,} types), "
              f"{args.epochs} epoch(s), {cores} cores, medians of {args.repeats}:\n")
        print("| run | whole process s | reading + vocabulary s | training s | training words/s | peak RSS MiB "
              "| vocabulary |\n|---|---|---|---|---|---|---|")
        for name, rs in runs.items():
            m = {k: statistics.median(r[k] for r in rs) if rs[0][k] is not None else None for k in rs[0]}
            print(f"| {name} | {m['wall']:.0f} | {fmt(m['read_s'], '.0f')} | {m['train_s']:.0f} | "
                  f"{m['words_per_s']:,.0f} | {m['rss_mib']:,.0f} | {rs[0]['vocab']:,} |")
        spreads = {}
        for name in names[1:]:  # whole-process speed: gensim's wall time over sgns's, pair by pair
            spreads[name] = ratio_spread([r["wall"] for r in runs[name]], [r["wall"] for r in runs["sgns"]])
            print(f"\nsgns's whole-process speed vs {name}, per pair: {describe_spread(spreads[name])}", end="")
        print()
        results["sgns_speed_vs_gensim_per_pair"] = spreads
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
