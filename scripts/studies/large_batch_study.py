"""Quality of the torch device pipeline at large batch sizes, on the CPU: update rules side by side.

Trains in this process (no run dirs, checkpoints or logs: only the pipeline, the step and the lr schedule
of `sgns-train`) on the first `--max-words` words of a corpus, then scores the vectors on questions-words
(top-30k 3CosAdd, as the benchmark) and WordSim353. Each `--run NAME=key:value,...` is one configuration:

    batch   positive pairs per step (default 4096)
    cap     row_cap of the step: a row's summed gradient is scaled by min(1, cap / n) (0: plain sum)
    lr      starting learning rate, decayed linearly as word2vec does (default 0.025)
    scale   lr multiplier of the torch step (optimizer.lr_scale; default 1)
    shared  positives sharing one draw of negatives (default 1)
    kernel  torch (the device pipeline, default) | numba (the CPU default: the fused span kernel, all cores)

Both train through the pipelines `sgns-train` uses (sgns.pipelines: DevicePipeline, SpanPipeline). For whole
`sgns-train` runs over several seeds see scripts/studies/seed_study.py.

    python scripts/studies/large_batch_study.py --max-words 4000000 --run ref=kernel:numba \\
        --run b64k=batch:65536 --run b64k_cap8=batch:65536,cap:8 --json /tmp/study.jsonl

Prints a markdown table; `--json` appends one line per finished run (partial sweeps keep their results).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from benchmark import DEFAULT_CORPUS, EVAL_DIR, prefix_corpus  # noqa: E402

from sgns.config import DataConfig, TrainerConfig  # noqa: E402
from sgns.corpus import encode, text_source  # noqa: E402
from sgns.evaluate import evaluate_analogies, evaluate_similarity  # noqa: E402
from sgns.model import SGNS  # noqa: E402
from sgns.pipelines.device import DevicePairBatches, DevicePipeline  # noqa: E402
from sgns.pipelines.span import SpanPipeline, TokenSpans  # noqa: E402
from sgns.vocab import Vocabulary  # noqa: E402

DEFAULTS = {"batch": 4096, "cap": 0.0, "lr": 0.025, "scale": 1.0, "shared": 1, "kernel": "torch"}


def parse_run(spec: str) -> Dict:
    name, _, rest = spec.partition("=")
    run = dict(DEFAULTS, name=name)
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition(":")
        if key not in DEFAULTS:
            raise SystemExit(f"study: unknown key {key!r} in --run {spec}")
        run[key] = type(DEFAULTS[key])(value)
    return run


def train_one(run: Dict, corpus, vocab: Vocabulary, args) -> Dict:
    torch.manual_seed(args.seed)
    model = SGNS(len(vocab), args.dim)
    device = torch.device(args.device)
    model.to(device)
    def schedule(progress: float) -> float:
        return run["lr"] * max(1.0 - progress, 1e-4)

    if run["kernel"] == "numba":
        data = DataConfig(window=args.window, negatives=args.negatives, subsample=1e-3, ns_exponent=0.75)
        backend = SpanPipeline(TokenSpans(corpus, 131_072, args.epochs), model, vocab, data,
                               TrainerConfig(seed=args.seed, threads=0, deterministic=False), schedule)
    else:
        pair_data = DataConfig(window=args.window, subsample=1e-3, batch_size=run["batch"],
                               chunk_tokens=args.chunk_tokens, negatives=args.negatives,
                               shared_negatives=run["shared"], ns_exponent=0.75)
        data = DevicePairBatches(corpus, vocab, pair_data, args.epochs, args.seed, device)
        backend = DevicePipeline(data, model, run["cap"], lr_scale=run["scale"])

    total = backend.total_words
    words_done, loss_sum, pairs, steps = 0.0, torch.zeros((), device=device), 0, 0
    start = time.perf_counter()
    for batch in backend.batches((0, 0, 0)):
        loss_sum += backend.step(batch, schedule(words_done / total))
        pairs += batch.pairs
        steps += 1
        words_done = batch.words_done
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    vectors = model.input.weight.detach().cpu()
    finite = bool(torch.isfinite(vectors).all())
    analogy = evaluate_analogies(vocab.words, vectors, EVAL_DIR / "questions-words.txt", 30000)["accuracy"] \
        if finite else None
    ws353 = evaluate_similarity(vocab.words, vectors, EVAL_DIR / "wordsim353.tsv")["spearman"] if finite else None
    return {**run, "steps": steps, "pairs": pairs, "seconds": seconds, "words_per_sec": total / seconds,
            "loss": float(loss_sum) / max(pairs, 1), "analogy": analogy, "ws353": ws353,
            "max_words": args.max_words, "epochs": args.epochs, "dim": args.dim, "seed": args.seed,
            "device": str(device)}


def fmt(v, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def main(argv: List[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--max-words", type=int, default=4_000_000, help="0: the whole corpus")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--dim", type=int, default=100)
    ap.add_argument("--window", type=int, default=5)
    ap.add_argument("--negatives", type=int, default=5)
    ap.add_argument("--chunk-tokens", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--run", action="append", default=[], metavar="NAME=key:value,...")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "sgns-study-cache")
    args = ap.parse_args(argv)
    runs = [parse_run(s) for s in args.run] or [parse_run("default=")]

    corpus_path = args.corpus.resolve()
    if args.max_words:
        folder = args.cache_dir / "prefixes"
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / f"prefix-{args.max_words}.txt").exists():
            prefix_corpus(corpus_path, args.max_words, folder)
        corpus_path = folder / f"prefix-{args.max_words}.txt"
    corpus = encode(text_source(corpus_path, 10000, False), args.cache_dir, log=lambda _: None)
    vocab = Vocabulary.build(corpus.words, corpus.counts, 5)
    print(f"corpus {corpus_path}: {corpus.total_tokens:,} words, vocabulary {len(vocab):,}", flush=True)
    results = []
    print("| run | kernel | batch | row_cap | lr | lr_scale | shared | steps | train s | words/s | loss | analogy "
          "| WS353 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    for run in runs:
        r = train_one(run, corpus, vocab, args)
        results.append(r)
        print(f"| {r['name']} | {r['kernel']} | {r['batch']} | {r['cap']:g} | {r['lr']:g} | {r['scale']:g} | "
              f"{r['shared']} | "
              f"{r['steps']} | {r['seconds']:.1f} | {r['words_per_sec']:,.0f} | {r['loss']:.4f} | "
              f"{fmt(r['analogy'], '.4f')} | {fmt(r['ws353'], '.4f')} |", flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
