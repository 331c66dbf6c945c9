"""Subword (fastText skip-gram) training: sgns `model=subword` against gensim's FastText(sg=1) and fastText's own
C++ trainer (a maintained fastText package's `train_unsupervised`), same settings, whole process, alternating.

Every run is its own process started through /usr/bin/time (wall s, CPU s, peak RSS), one after the other, the
three programs in turn, `--repeats` rounds. Settings (all three): skip-gram, dim 100, window 5, 5 negatives,
min_count 5, minn 3, maxn 6, bucket 2,000,000, 1 epoch, lr 0.05 and subsampling 1e-4 (fastText's skip-gram
defaults), `--threads` threads; sgns reads with a fresh token cache each run. Each program writes its own
full model (sgns: vectors + the final checkpoint; gensim: `save`; fastText: `save_model`), as a user's run would.

Quality, the same evaluator for all three (sgns.evaluate): analogies over each program's top-30k words, and
WS353 / SimLex Spearman twice: over the pairs whose words are all in-vocabulary for every program, and over
every pair, each program answering its out-of-vocabulary words from n-grams (the count is reported).

    python scripts/benchmarks/bench_subword.py --repeats 3
    python scripts/benchmarks/bench_subword.py --max-words 2000000 --repeats 1   # a quick look
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark import DEFAULT_CORPUS, EVAL_DIR, count_words, plain_corpus, prefix_corpus, timed  # noqa: E402

SETTINGS = {"dim": 100, "window": 5, "negatives": 5, "min_count": 5, "minn": 3, "maxn": 6, "bucket": 2_000_000,
            "epochs": 1, "lr": 0.05, "subsample": 1e-4}
PROGRAMS = ("sgns", "gensim", "fasttext")


def sgns_command(corpus: Path, out: Path, threads: int, extra: Sequence[str]) -> List[str]:
    s = SETTINGS
    return [sys.executable, "-m", "sgns.train", "corpus=text", f"corpus.path={corpus}", "model=subword",
            f"model.dim={s['dim']}", f"model.minn={s['minn']}", f"model.maxn={s['maxn']}",
            f"model.bucket={s['bucket']}", f"data.window={s['window']}", f"data.negatives={s['negatives']}",
            f"data.min_count={s['min_count']}", f"data.subsample={s['subsample']}", f"trainer.epochs={s['epochs']}",
            f"optimizer.lr={s['lr']}", f"trainer.threads={threads}", "trainer.device=cpu", "trainer.seed=1",
            "trainer.progress=false", "eval=none", f"hydra.run.dir={out}", *extra]


def gensim_worker(corpus: str, out: str, threads: int) -> None:
    from gensim.models import FastText
    from gensim.models.word2vec import LineSentence

    s = SETTINGS
    model = FastText(LineSentence(corpus), sg=1, hs=0, vector_size=s["dim"], window=s["window"],
                     negative=s["negatives"], min_count=s["min_count"], min_n=s["minn"], max_n=s["maxn"],
                     bucket=s["bucket"], epochs=s["epochs"], alpha=s["lr"], sample=s["subsample"],
                     workers=threads, seed=1)
    model.save(str(Path(out) / "model"))


def fasttext_worker(corpus: str, out: str, threads: int) -> None:
    import fasttext

    s = SETTINGS
    model = fasttext.train_unsupervised(corpus, model="skipgram", dim=s["dim"], ws=s["window"], neg=s["negatives"],
                                        minCount=s["min_count"], minn=s["minn"], maxn=s["maxn"], bucket=s["bucket"],
                                        epoch=s["epochs"], lr=s["lr"], t=s["subsample"], thread=threads,
                                        verbose=0)
    model.save_model(str(Path(out) / "model.bin"))


def loaded(program: str, out: Path) -> Tuple[List[str], np.ndarray, Callable[[str], Optional[np.ndarray]]]:
    """A trained model's words (by frequency), their vectors, and the vector of any word (None: none known)."""
    if program == "sgns":
        from sgns.train.runs import Run

        wv = Run.load(out).wv
        words = list(wv.index_to_key)

        def vector(word: str) -> Optional[np.ndarray]:
            try:
                return np.asarray(wv[word])
            except KeyError:
                return None

        return words, np.asarray(wv.vectors), vector
    if program == "gensim":
        from gensim.models import FastText

        kv = FastText.load(str(out / "model")).wv
        return list(kv.index_to_key), kv.vectors, lambda w: kv[w]
    import fasttext

    model = fasttext.load_model(str(out / "model.bin"))
    words = [w for w in model.get_words() if w != "</s>"]
    return words, np.stack([model.get_word_vector(w) for w in words]), model.get_word_vector


def similarity_rows(path: Path) -> List[Tuple[str, str, float]]:
    from sgns.evaluate import load_pairs

    return [(a.lower(), b.lower(), s) for a, b, s in load_pairs(path)[0]]


def spearman(model_scores: List[float], human: List[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(model_scores, human).correlation)


def cosine(a: Optional[np.ndarray], b: Optional[np.ndarray]) -> float:
    if a is None or b is None:
        return 0.0
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b) / norm if norm else 0.0


def score(models: Dict[str, Tuple[List[str], np.ndarray, Callable]], restrict: int) -> Dict[str, Dict[str, float]]:
    from sgns.evaluate import evaluate_analogies

    shared = set.intersection(*(set(words) for words, _, _ in models.values()))
    result: Dict[str, Dict[str, float]] = {p: {} for p in models}
    for program, (words, matrix, vector) in models.items():
        analogies = evaluate_analogies(words, matrix, EVAL_DIR / "questions-words.txt", restrict)
        result[program]["analogy"] = analogies["accuracy"]
        for name, file in (("ws353", "wordsim353.tsv"), ("simlex", "simlex999.txt")):
            rows = similarity_rows(EVAL_DIR / file)
            known = [(a, b, s) for a, b, s in rows if a in shared and b in shared]
            result[program][name] = spearman([cosine(vector(a), vector(b)) for a, b, _ in known],
                                             [s for _, _, s in known])
            result[program][f"{name}_all"] = spearman([cosine(vector(a), vector(b)) for a, b, _ in rows],
                                                      [s for _, _, s in rows])
            vocab = set(words)
            result[program][f"{name}_oov_words"] = len({w for a, b, _ in rows for w in (a, b) if w not in vocab})
    return result


def main(argv: Optional[List[str]] = None) -> None:
    global EVAL_DIR
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--max-words", type=int, default=0, help="benchmark on this many leading words only")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--programs", default=",".join(PROGRAMS), help="comma-separated subset of " + ",".join(PROGRAMS))
    ap.add_argument("--sgns-extra", default="", help="comma-separated overrides for the sgns runs")
    ap.add_argument("--restrict-vocab", type=int, default=30000)
    ap.add_argument("--eval-dir", type=Path, default=EVAL_DIR, help="the benchmark files' folder")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--worker", nargs=4, metavar=("PROGRAM", "CORPUS", "OUT", "THREADS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        program, corpus, out, threads = args.worker
        {"gensim": gensim_worker, "fasttext": fasttext_worker}[program](corpus, out, int(threads))
        return

    import os

    EVAL_DIR = args.eval_dir  # score() reads it
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="sgns-subword-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    corpus = plain_corpus(args.corpus.resolve(), workdir)  # fastText reads no gzip
    if args.max_words:
        corpus = prefix_corpus(corpus, args.max_words, workdir)
    words = count_words(corpus)
    programs = [p for p in args.programs.split(",") if p]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                                        os.environ.get("PYTHONPATH", "")])}
    extra = [o for o in args.sgns_extra.split(",") if o]
    if "sgns" in programs:  # compile the kernels once, as any installation's first run does
        timed(sgns_command(corpus, workdir / "warmup", args.threads, extra) + ["data.max_vocab_size=2000"],
              dict(env, SGNS_CACHE_DIR=str(workdir / "cache-warmup")), workdir / "warmup.log")
    runs: Dict[str, List[Dict[str, float]]] = {p: [] for p in programs}
    for r in range(args.repeats):
        for program in programs:
            out = workdir / f"{program}-{r}"
            out.mkdir(parents=True, exist_ok=True)
            run_env = env
            if program == "sgns":  # a fresh token cache: reading is timed, as the others' is
                cmd = sgns_command(corpus, out / "run", args.threads, extra)
                run_env = dict(env, SGNS_CACHE_DIR=str(out / "cache"))
            else:
                cmd = [sys.executable, __file__, "--worker", program, str(corpus), str(out), str(args.threads)]
            runs[program].append(timed(cmd, run_env, out / "log.txt"))
            shutil.rmtree(out / "cache", ignore_errors=True)
            print(f"round {r}: {program} {runs[program][-1]}", flush=True)
    last = args.repeats - 1
    models = {p: loaded(p, workdir / f"{p}-{last}" / ("run" if p == "sgns" else "")) for p in programs}
    quality = score(models, args.restrict_vocab)

    print(f"\ncorpus {args.corpus.name}{f' (first {args.max_words:,} words)' if args.max_words else ''}: {words:,} "
          f"words; {args.repeats} rounds, {args.threads} threads; medians (range)\n")
    print("| program | whole process s | CPU s | peak RSS MiB | words/s | analogy | WS353 | SimLex | WS353 all "
          "(OOV words) | SimLex all (OOV words) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for p in programs:
        wall = [x["wall"] for x in runs[p]]
        q = quality[p]
        print(f"| {p} | {statistics.median(wall):.1f} ({min(wall):.1f}-{max(wall):.1f}) | "
              f"{statistics.median(x['cpu'] for x in runs[p]):.1f} | "
              f"{statistics.median(x['rss_mib'] for x in runs[p]):,.0f} | "
              f"{words / statistics.median(wall):,.0f} | {q['analogy']:.4f} | {q['ws353']:.4f} | {q['simlex']:.4f} | "
              f"{q['ws353_all']:.4f} ({q['ws353_oov_words']}) | {q['simlex_all']:.4f} ({q['simlex_oov_words']}) |")
    if "sgns" in programs:
        for p in programs:
            if p != "sgns":
                ratios = [o["wall"] / s["wall"] for s, o in zip(runs["sgns"], runs[p], strict=True)]
                print(f"\nsgns vs {p}, whole process, per round: " + ", ".join(f"{x:.2f}x" for x in ratios)
                      + f"; median {statistics.median(ratios):.2f}x (min {min(ratios):.2f}, max {max(ratios):.2f},"
                      f" {len(ratios)} pairs)")
    if args.json:
        args.json.write_text(json.dumps({"corpus": str(args.corpus), "words": words, "runs": runs,
                                         "quality": quality, "settings": SETTINGS}, indent=1))


if __name__ == "__main__":
    main()
