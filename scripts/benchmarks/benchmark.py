"""sgns against gensim on one corpus, same hyperparameters, whole-process wall time, alternating runs.

Every run is its own process (sgns through its real command line, `python -m sgns.train`; gensim through
this script's `--gensim-worker` mode), started one after the other so they never overlap, repeated
`--repeats` times in turn. Wall time covers the whole process (start-up, vocabulary, data, training, saving
vectors); CPU s is its user + system time (steadier than wall time on a shared machine); peak RSS is the
process's maximum resident set. "Beyond imports" subtracts the peak RSS of a process that only imports
what the run imports (sgns.cli.train and the train loop; gensim's Word2Vec), so the libraries' fixed size (torch, numba,
scipy) does not count. Both vector files are then scored by the same evaluator (sgns.evaluate: analogies
over the top-30k words as gensim's evaluate_word_analogies, WordSim353 and SimLex-999 Spearman). Prints a
markdown table of medians and ratios. By default it times sgns's default, its deterministic mode and gensim.

    python scripts/benchmarks/benchmark.py --repeats 3
    python scripts/benchmarks/benchmark.py --max-words 2000000 --variant torch=trainer.kernel=torch
    python scripts/benchmarks/benchmark.py --epochs 3 --no-gensim --no-deterministic

Each sgns run gets a fresh token cache (cold: tokenising is timed, as gensim's build_vocab is) unless
`--warm-cache`. A short sgns warm-up run first compiles the numba kernels into numba's on-disk cache, as any
installation does on its first run; pass `--no-warmup` to time that too.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import BinaryIO, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CORPUS = ROOT.parent / "shared" / "data" / "corpora" / "gutenberg_dev.txt.gz"
EVAL_DIR = ROOT.parent / "shared" / "data" / "eval"


def contract_command(corpus: Path, run_dir: Path, epochs: int, extra: List[str]) -> List[str]:
    """The benchmark's sgns command line: word2vec's hyperparameters, as gensim gets them below."""
    return [sys.executable, "-m", "sgns.train", "corpus=text", f"corpus.path={corpus}", "model.dim=100",
            "data.window=5", "data.negatives=5", "data.min_count=5", "data.subsample=1e-3",
            f"trainer.epochs={epochs}", "optimizer.lr=0.025", "trainer.device=cpu", "trainer.seed=1",
            f"hydra.run.dir={run_dir}", "trainer.progress=false", *extra]


def timed(cmd: List[str], env: Dict[str, str], log_path: Path, cwd: Optional[Path] = None) -> Dict[str, float]:
    """Run `cmd` to completion in `cwd` (default: this checkout); its wall seconds, CPU seconds and peak RSS in
    MiB (raises if it fails)."""
    # Linux carries a process's peak RSS across fork + exec, so a child forked straight from this (large,
    # torch-importing) process would report at least our size: start it through /usr/bin/time, whose own
    # child is forked from a small process, and read that child's peak from time's report.
    rss_file = log_path.with_suffix(".rss")
    launcher = ["/usr/bin/time", "-f", "%U %S %M", "-o", str(rss_file)] if Path("/usr/bin/time").exists() else []
    with open(log_path, "w") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(launcher + cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=cwd or ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace")[-2000:]
        raise SystemExit(f"benchmark: {' '.join(cmd[:4])} ... failed ({proc.returncode}); log tail:\n{tail}")
    if launcher:
        user, system, peak_kib = rss_file.read_text().split()[-3:]
        cpu, peak = float(user) + float(system), int(peak_kib)
    else:
        cpu, peak = usage.ru_utime + usage.ru_stime, usage.ru_maxrss  # KiB on Linux
    return {"wall": wall, "cpu": cpu, "rss_mib": peak / 1024}


IMPORTS = {  # what each kind of run imports before it reads any data
    "sgns": "import sgns.cli.train, sgns.train.loop",  # the command imports the loop (torch, numba) when it runs
    "gensim": "from gensim.models import Word2Vec; from gensim.models.word2vec import LineSentence",
}


def import_rss(kind: str, env: Dict[str, str], workdir: Path, repeats: int = 3) -> float:
    """Median peak RSS (MiB) of a process that only does the imports of a `kind` run."""
    return statistics.median(timed([sys.executable, "-c", IMPORTS[kind]], env, workdir / f"imports-{kind}.log")
                             ["rss_mib"] for _ in range(repeats))


def gensim_worker(corpus: str, out: str, epochs: int, workers: int, mode: str = "iterable") -> None:
    """Train gensim's skip-gram with the same hyperparameters and save word2vec binary vectors. `mode`:
    iterable (LineSentence) or corpus_file (C++ reading in every worker; its lr decays per worker)."""
    from gensim.models import Word2Vec
    from gensim.models.word2vec import LineSentence

    source = {"corpus_file": corpus} if mode == "corpus_file" else {"sentences": LineSentence(corpus)}
    model = Word2Vec(**source, vector_size=100, window=5, negative=5, sample=1e-3, min_count=5,
                     alpha=0.025, min_alpha=0.0001, epochs=epochs, workers=workers, sg=1, hs=0, seed=1)
    model.wv.save_word2vec_format(out, binary=True)


GENSIM_CORPUS_FILE = "gensim corpus_file"  # the row of gensim's corpus_file mode (--gensim-corpus-file)


def is_gzip(corpus: Path) -> bool:
    with open(corpus, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def open_corpus(corpus: Path) -> BinaryIO:
    """`corpus` opened for reading bytes, gzip or plain."""
    return gzip.open(corpus, "rb") if is_gzip(corpus) else open(corpus, "rb")


def plain_corpus(corpus: Path, folder: Path) -> Path:
    """`corpus` as a plain text file (gensim's corpus_file mode reads no gzip): a copy made once, not timed."""
    if not is_gzip(corpus):
        return corpus
    out = folder / "plain-corpus.txt"
    if not out.exists():
        with gzip.open(corpus, "rb") as f, open(out, "wb") as g:
            shutil.copyfileobj(f, g)
    return out


def count_words(corpus: Path) -> int:
    with open_corpus(corpus) as f:
        return sum(len(line.split()) for line in f)


def prefix_corpus(corpus: Path, max_words: int, folder: Path) -> Path:
    """The first `max_words` words of `corpus` (whole lines), as a plain text file both tools read."""
    out = folder / f"prefix-{max_words}.txt"
    words = 0
    with open_corpus(corpus) as f, open(out, "wb") as g:
        for line in f:
            if words >= max_words:
                break
            words += len(line.split())
            g.write(line)
    return out


def score(vectors: Path, restrict: int) -> Dict[str, Optional[float]]:
    from sgns.evaluate import evaluate_analogies, evaluate_similarity
    from sgns.vectors import load_word2vec

    words, matrix = load_word2vec(vectors)
    analogies = evaluate_analogies(words, matrix, EVAL_DIR / "questions-words.txt", restrict)
    result: Dict[str, Optional[float]] = {"analogy": analogies["accuracy"],
                                          "semantic": analogies["semantic_accuracy"],
                                          "syntactic": analogies["syntactic_accuracy"]}
    for name, file in (("ws353", "wordsim353.tsv"), ("simlex", "simlex999.txt")):
        result[name] = evaluate_similarity(words, matrix, EVAL_DIR / file)["spearman"]
    return result


def ratio_spread(numerators: List[float], denominators: List[float]) -> Dict[str, float]:
    """The per-pair ratios numerators[i] / denominators[i] (pair i: the i-th of two alternated series of runs)
    summed up as min, median and max, with the number of pairs: one lucky pair shows as a wide spread, not as
    the headline."""
    if len(numerators) != len(denominators) or not numerators:
        raise ValueError(f"pairs need as many runs on each side, at least one: {len(numerators)} vs "
                         f"{len(denominators)}")
    ratios = [n / d for n, d in zip(numerators, denominators, strict=True)]
    return {"min": min(ratios), "median": statistics.median(ratios), "max": max(ratios), "pairs": len(ratios)}


def describe_spread(spread: Dict[str, float], unit: str = "x") -> str:
    """'median 3.94x (min 3.34x, max 4.03x; 3 pairs)'."""
    pairs = int(spread["pairs"])
    return (f"median {spread['median']:.2f}{unit} (min {spread['min']:.2f}{unit}, max {spread['max']:.2f}{unit}; "
            f"{pairs} pair{'s' if pairs != 1 else ''})")


def median(values: List[Optional[float]]) -> Optional[float]:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value: Optional[float], spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--max-words", type=int, default=0, help="benchmark on this many leading words only")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2, help="gensim worker threads")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=OVERRIDE[,OVERRIDE...]",
                    help="an extra sgns configuration to time, e.g. torch=trainer.kernel=torch")
    ap.add_argument("--sgns-extra", default="", help="comma-separated overrides for every sgns run")
    ap.add_argument("--no-gensim", action="store_true")
    ap.add_argument("--gensim-corpus-file", action="store_true",
                    help="also time gensim's corpus_file mode (a plain copy of a compressed corpus is made first)")
    ap.add_argument("--no-deterministic", action="store_true", help="skip the trainer.deterministic=true row")
    ap.add_argument("--warm-cache", action="store_true", help="reuse one token cache across sgns runs")
    ap.add_argument("--no-warmup", action="store_true", help="skip the numba-compiling warm-up run")
    ap.add_argument("--restrict-vocab", type=int, default=30000)
    ap.add_argument("--workdir", type=Path, default=None, help="keep runs here (default: a temp dir)")
    ap.add_argument("--json", type=Path, default=None, help="also write every measurement here")
    ap.add_argument("--gensim-worker", nargs=5, metavar=("CORPUS", "OUT", "EPOCHS", "WORKERS", "MODE"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.gensim_worker:
        corpus, out, epochs, workers, mode = args.gensim_worker
        gensim_worker(corpus, out, int(epochs), int(workers), mode)
        return

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="sgns-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    corpus = args.corpus.resolve()
    if not corpus.exists():
        raise SystemExit(f"benchmark: corpus not found: {corpus}")
    if args.max_words:
        corpus = prefix_corpus(corpus, args.max_words, workdir)
    words = count_words(corpus)
    common = [o for o in args.sgns_extra.split(",") if o]
    systems: Dict[str, Optional[List[str]]] = {"sgns": common}
    if not args.no_deterministic:
        systems["sgns-deterministic"] = common + ["trainer.deterministic=true"]
    for spec in args.variant:
        name, _, overrides = spec.partition("=")
        systems[name] = common + [o for o in overrides.split(",") if o]
    if not args.no_gensim:
        systems["gensim"] = None
        if args.gensim_corpus_file:
            systems[GENSIM_CORPUS_FILE] = None
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("SGNS_CACHE_DIR", None)
    warm_cache = workdir / "cache-warm"

    if not args.no_warmup:  # compile numba's kernels once (cached on disk), on a tiny corpus
        tiny = workdir / "warmup.txt"
        tiny.write_text(("the quick brown fox jumps over the lazy dog " * 20 + "\n") * 50)
        for name, extra in systems.items():
            if extra is not None:
                timed(contract_command(tiny, workdir / f"warmup-{name}", 1, extra + ["data.min_count=1"]),
                      dict(env, SGNS_CACHE_DIR=str(workdir / "cache-warmup")), workdir / f"warmup-{name}.log")

    base_rss = {kind: import_rss(kind, env, workdir) for kind in IMPORTS if kind != "gensim" or not args.no_gensim}
    runs: Dict[str, List[Dict[str, float]]] = {name: [] for name in systems}
    for rep in range(args.repeats):
        for name, extra in systems.items():  # alternate: one run of each system per repetition
            run_dir = workdir / f"{name}-{rep}"
            shutil.rmtree(run_dir, ignore_errors=True)
            if extra is None:
                run_dir.mkdir(parents=True)
                vectors = run_dir / "vectors.bin"
                mode = "corpus_file" if name == GENSIM_CORPUS_FILE else "iterable"
                source = plain_corpus(corpus, workdir) if mode == "corpus_file" else corpus
                cmd = [sys.executable, __file__, "--gensim-worker", str(source), str(vectors), str(args.epochs),
                       str(args.workers), mode]
                run_env = env
            else:
                vectors = run_dir / "vectors.bin"
                cmd = contract_command(corpus, run_dir, args.epochs, extra)
                cache = warm_cache if args.warm_cache else workdir / f"cache-{name}-{rep}"
                run_env = dict(env, SGNS_CACHE_DIR=str(cache))
            run_dir.mkdir(parents=True, exist_ok=True)
            result = timed(cmd, run_env, workdir / f"{name}-{rep}.log")
            if extra is not None and not args.warm_cache:
                shutil.rmtree(workdir / f"cache-{name}-{rep}", ignore_errors=True)
            result["rss_beyond_mib"] = result["rss_mib"] - base_rss["gensim" if extra is None else "sgns"]
            result.update(score(vectors, args.restrict_vocab))
            result["words_per_sec"] = words * args.epochs / result["wall"]
            runs[name].append(result)
            print(f"[{rep + 1}/{args.repeats}] {name}: {result['wall']:.1f} s, {result['cpu']:.1f} CPU s, "
                  f"{result['words_per_sec']:,.0f} w/s, {result['rss_mib']:.0f} MiB ({result['rss_beyond_mib']:.0f} "
                  f"beyond imports), analogy {result['analogy']:.4f} (semantic {result['semantic']:.4f}, syntactic "
                  f"{result['syntactic']:.4f}), ws353 {fmt(result['ws353'], '.4f')}",
                  file=sys.stderr, flush=True)

    table = {name: {k: median([r[k] for r in rs]) for k in rs[0]} for name, rs in runs.items()}
    print(f"\ncorpus: {args.corpus}{f' (first {args.max_words:,} words)' if args.max_words else ''}, "
          f"{words:,} words, {args.epochs} epoch(s); medians of {args.repeats} alternating runs; "
          f"{os.cpu_count()} CPUs; gensim workers={args.workers}; sgns extra: {common or 'none'}; peak RSS of the "
          f"imports alone: " + ", ".join(f"{k} {v:.0f} MiB" for k, v in base_rss.items()) + "\n")
    print("| run | wall s | CPU s | words/s | peak RSS MiB | beyond imports MiB | analogy top-30k | semantic "
          "| syntactic | WS353 | SimLex | speed vs gensim | CPU s vs gensim | beyond imports vs gensim |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    ref = table.get("gensim")
    for name, m in table.items():
        speed = f"{m['words_per_sec'] / ref['words_per_sec']:.2f}x" if ref else "-"
        cpu = f"{m['cpu'] / ref['cpu']:.2f}x" if ref else "-"
        rss = f"{m['rss_beyond_mib'] / ref['rss_beyond_mib']:.2f}x" if ref else "-"
        label = name if systems[name] is None else f"{name} ({' '.join(systems[name][len(common):]) or 'default'})"
        print(f"| {label} | {m['wall']:.1f} | {m['cpu']:.1f} | {m['words_per_sec']:,.0f} | {m['rss_mib']:.0f} | "
              f"{m['rss_beyond_mib']:.0f} | {fmt(m['analogy'], '.4f')} | {fmt(m['semantic'], '.4f')} | "
              f"{fmt(m['syntactic'], '.4f')} | {fmt(m['ws353'], '.4f')} | "
              f"{fmt(m['simlex'], '.4f')} | {speed} | {cpu} | {rss} |")
    spreads = {}
    if ref:
        print("\nspeed vs gensim per pair (repetition i's run against repetition i's gensim run), across the "
              f"{args.repeats} pair(s):")
        for name in table:
            if systems[name] is not None or name == GENSIM_CORPUS_FILE:
                spreads[name] = ratio_spread([r["words_per_sec"] for r in runs[name]],
                                             [r["words_per_sec"] for r in runs["gensim"]])
                print(f"  {name}: {describe_spread(spreads[name])}")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "medians": table, "words": words, "import_rss": base_rss,
                                         "speed_vs_gensim_per_pair": spreads}, indent=2))
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
