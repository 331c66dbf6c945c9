"""`sgns-eval PATH`: score vectors on analogy / similarity benchmarks, or sanity-check them by nearest neighbours.

PATH is a run directory, a checkpoint or a word2vec file (text or binary). With no benchmark argument (and no
--words or --query) it scores the English suite (sgns/benchmarks: Google analogies, WordSim-353, SimLex-999) in
one table, then shows a few frequent words' nearest neighbours (a sanity check that needs no benchmark).
The report is a table for people followed by one JSON line (the last line of stdout) for scripts.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from sgns.cli.common import OneLineParser, quiet_broken_pipe
from sgns.errors import SGNSError, exit_with_error

if TYPE_CHECKING:
    from sgns.vectors import WordVectors

# torch, sgns.evaluate, sgns.load and sgns.config (Hydra) are imported once the arguments are parsed, so that
# --help is quick; their constants the parser shows are repeated here (tests/test_cli_help.py checks they agree).
VECTOR_CHOICES = ("input", "average")  # sgns.load.VECTOR_CHOICES
METHODS = ("3cosadd", "3cosmul")  # sgns.config.ANALOGY_METHODS
RESTRICT_VOCAB = 30000  # sgns.config.RESTRICT_VOCAB

SANITY_WORDS = 5  # frequent words whose neighbours are shown when no benchmark is given


def _parser() -> OneLineParser:
    p = OneLineParser(prog="sgns-eval", description=__doc__.splitlines()[0].split(": ", 1)[1])
    p.add_argument("path", help="a run directory, a checkpoint (.pt) or a word2vec file (text or binary)")
    p.add_argument("--benchmarks", nargs="+", default=None, metavar="NAME",
                   help="benchmark names (google, ws353, simlex999), suites (english) or files; default: the "
                        "English suite when no other benchmark, --words or --query is given")
    p.add_argument("--analogies", nargs="+", default=[], metavar="FILE",
                   help="questions-words style files (`: section` lines, then `a b c d`)")
    p.add_argument("--similarities", nargs="+", default=[], metavar="FILE",
                   help="word1 TAB word2 TAB score files (`#` comments)")
    p.add_argument("--restrict-vocab", type=int, default=RESTRICT_VOCAB, metavar="N",
                   help=f"analogy questions and answers use the N most frequent words (default {RESTRICT_VOCAB})")
    p.add_argument("--method", choices=METHODS, default="3cosadd", help="analogy scoring (default 3cosadd)")
    p.add_argument("--vectors", choices=VECTOR_CHOICES, default="input",
                   help="from a checkpoint: input vectors (default) or input+output averaged")
    p.add_argument("--words", nargs="+", default=None, metavar="WORD",
                   help="show these words' nearest neighbours (default: a few frequent words, without benchmarks)")
    p.add_argument("--query", action="append", default=[], metavar="EXPR",
                   help="an analogy query such as 'king - man + woman' (repeatable)")
    p.add_argument("--topn", type=int, default=8, metavar="K", help="neighbours shown per word (default 8)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    return p


def parse_query(expr: str) -> Tuple[List[str], List[str]]:
    """'king - man + woman' -> (['king', 'woman'], ['man'])."""
    tokens = expr.replace("+", " + ").replace(" -", " - ").split()
    positive: List[str] = []
    negative: List[str] = []
    sign = "+"
    for tok in tokens:
        if tok in ("+", "-"):
            sign = tok
            continue
        (positive if sign == "+" else negative).append(tok)
        sign = "+"
    if not positive:
        raise SGNSError(f"query {expr!r} has no positive word; write it like 'king - man + woman'")
    return positive, negative


def sanity_words(wv: WordVectors, count: int = SANITY_WORDS) -> List[str]:
    """A few frequent content-looking words spread over the top of the vocabulary (skipping function words)."""
    pool = [w for w in wv.words[50:2000] if w.isalpha() and len(w) > 3]
    if len(pool) < count:
        pool = [w for w in wv.words[:2000] if w.isalpha()] or list(wv.words[:count])
    stride = max(1, len(pool) // count)
    return pool[::stride][:count]


def _pct(x: float) -> str:
    return f"{100 * x:6.2f}%"


def _print_analogies(name: str, r: Dict[str, Any], restrict_vocab: int) -> None:
    print(f"\n{name} ({r['method']}, restrict_vocab {restrict_vocab:,}): {r['seen']:,} of {r['total']:,} questions "
          f"in vocabulary (coverage {_pct(r['coverage']).strip()}), {r['oov']:,} skipped as OOV, "
          f"{r['malformed_lines']} malformed lines skipped")
    width = max([len(s) for s in r["sections"]] + [24])

    def row(label: str, correct: int, seen: int, total: Any = "") -> None:
        accuracy = _pct(correct / seen) if seen else "    n/a"
        print(f"  {label:<{width}}  {accuracy:>8}  {correct:>6}/{seen:<6}  {total:>6}".rstrip())

    print(f"  {'section':<{width}}  {'accuracy':>8}  {'correct/seen':^13}  {'total':>6}")
    for section, s in r["sections"].items():
        row(section, s["correct"], s["seen"], s["total"])
    row("semantic (not gram*)", r["semantic_correct"], r["semantic_seen"])
    row("syntactic (gram*)", r["syntactic_correct"], r["syntactic_seen"])
    row("overall", r["correct"], r["seen"], r["total"])


def _print_similarity(name: str, r: Dict[str, Any]) -> None:
    def fmt(v: Optional[float]) -> str:
        return "n/a" if v is None else f"{v:.4f}"

    print(f"\n{name}: spearman {fmt(r['spearman'])}, pearson {fmt(r['pearson'])} over {r['pairs']} of "
          f"{r['total']} pairs (OOV {_pct(r['oov_ratio']).strip()}), {r['malformed_lines']} malformed lines skipped")


def summary_rows(results: Dict[str, Any]) -> List[Tuple[str, str, str]]:
    """(benchmark, score, coverage) for each result: accuracy (with its semantic and syntactic parts) or Spearman."""
    rows = []
    for name, r in results.items():
        if "accuracy" in r:
            parts = [f"{part} {r[f'{part}_accuracy']:.4f}" for part in ("semantic", "syntactic") if r[f"{part}_seen"]]
            score = (f"accuracy {r['accuracy']:.4f}" + (f" ({', '.join(parts)})" if len(parts) == 2 else "")
                     if r["seen"] else "accuracy n/a")
            known = f"{r['seen']:,} of {r['total']:,} questions"
        else:
            score = "spearman n/a" if r["spearman"] is None else f"spearman {r['spearman']:.4f}"
            known = f"{r['pairs']:,} of {r['total']:,} pairs"
        if r.get("ngram_words"):
            known += f", {r['ngram_words']:,} words from n-grams"
        rows.append((name, score, f"{_pct(r['coverage']).strip()} ({known})"))
    return rows


def _print_summary(results: Dict[str, Any]) -> None:
    rows = [("benchmark", "score", "coverage"), *summary_rows(results)]
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    print()
    for name, score, coverage in rows:
        print(f"  {name:<{widths[0]}}  {score:<{widths[1]}}  {coverage}")


def _clean(value: Any) -> Any:
    """NaN/inf are not JSON: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def run(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    args = _parser().parse_args(argv)
    if args.restrict_vocab < 1:
        raise SGNSError(f"--restrict-vocab {args.restrict_vocab} is out of range: must be >= 1")
    if args.topn < 1:
        raise SGNSError(f"--topn {args.topn} is out of range: must be >= 1")
    for f in [*args.analogies, *args.similarities]:
        if not Path(f).is_file():
            raise SGNSError(f"benchmark file not found: {f}")
    from sgns.device import resolve_device
    from sgns.evaluate import EvalSuite, nearest, standalone_config
    from sgns.load import load_vectors

    device = resolve_device(args.device, option="--device ")
    started = time.perf_counter()
    wv = load_vectors(args.path, args.vectors)
    if len(wv) == 0:
        raise SGNSError(f"{args.path} holds no vectors")
    loaded = time.perf_counter() - started
    grams = f", words outside it from n-grams of {wv.ngrams.minn}-{wv.ngrams.maxn} characters" if wv.ngrams else ""
    print(f"vectors: {wv.source} ({args.vectors}): {len(wv):,} words x {wv.dim} dimensions{grams}, read in "
          f"{loaded:.1f}s")
    report: Dict[str, Any] = {"path": str(args.path), "source": wv.source, "vectors": args.vectors,
                              "vocab_size": len(wv), "dim": wv.dim}

    queries = [(expr, *parse_query(expr)) for expr in args.query]
    for expr, positive, negative in queries:
        missing = [w for w in [*positive, *negative] if w not in wv and not wv.from_ngrams(w)]
        if missing:
            raise SGNSError(f"query {expr!r}: not in vocabulary: {', '.join(missing)}")

    import torch

    table = torch.as_tensor(wv.vectors, device=device)
    named = args.benchmarks
    if named is None and not (args.analogies or args.similarities or args.words is not None or args.query):
        named = ["english"]
    settings = standalone_config(args.analogies, args.similarities, named or [], args.restrict_vocab, args.method)
    started = time.perf_counter()
    ngrams = (wv.ngrams.minn, wv.ngrams.maxn, wv.ngrams.bucket) if wv.ngrams is not None else None
    suite = EvalSuite(settings, wv.words, ngrams=ngrams, log=print)
    results: Dict[str, Any] = suite.score(table, device, ngram_table=wv.ngrams.table if wv.ngrams else None)
    detailed = bool(args.analogies or args.similarities or args.benchmarks)  # the bare suite: the one table only
    for name, result in results.items():
        if detailed and "accuracy" in result:
            _print_analogies(name, result, args.restrict_vocab)
        elif detailed:
            _print_similarity(name, result)
    if results:
        _print_summary(results)
        report["eval"] = results
        report["eval_seconds"] = round(time.perf_counter() - started, 3)

    given = args.analogies or args.similarities or args.benchmarks or args.query
    words = args.words if args.words is not None else ([] if given else sanity_words(wv))  # bare: suite + neighbours
    if words:
        print(f"\nnearest neighbours (cosine, top {args.topn}):")
        report["neighbours"] = {}
        for w in words:
            if w not in wv and not wv.from_ngrams(w):
                print(f"  {w}: not in vocabulary")
                report["neighbours"][w] = None
                continue
            from_ngrams = w not in wv  # a subword run's unseen word: its n-grams' vector
            found = wv.most_similar(w, topn=args.topn) if from_ngrams else nearest(wv.words, table, w, topn=args.topn)
            report["neighbours"][w] = [[x, round(s, 4)] for x, s in found]
            label = f"{w} (from n-grams)" if from_ngrams else w
            print(f"  {label}: " + ", ".join(f"{x} {s:.3f}" for x, s in found))
    if queries:
        report["queries"] = {}
        print(f"\nqueries (top {args.topn}):")
        for expr, positive, negative in queries:
            if any(w not in wv for w in [*positive, *negative]):  # a subword run's unseen word: its n-grams' vector
                found = wv.most_similar(positive, negative, topn=args.topn)
            else:
                found = nearest(wv.words, table, positive, negative, topn=args.topn)
            report["queries"][expr] = [[x, round(s, 4)] for x, s in found]
            print(f"  {expr}: " + ", ".join(f"{x} {s:.3f}" for x, s in found))
    return report


def main(argv: Optional[List[str]] = None) -> None:
    """Console entry point: `sgns-eval PATH [--analogies F ...] [--similarities F ...] [...]`."""
    try:
        report = run(argv)
    except (SGNSError, OSError) as e:
        exit_with_error("sgns-eval", e)
    with quiet_broken_pipe():
        print(json.dumps(_clean(report), default=float), flush=True)


if __name__ == "__main__":
    main()
