"""Why negative sampling: the full softmax it replaces, measured (README section "Why negative sampling").

1. Time per training step against vocabulary size, for skip-gram with the full softmax (|V| dot products
   and an update of every output row per pair) and with negative sampling, K = 5 and K = 20 (K + 1 dot
   products per pair), on random tables and pairs of the given size (the cost does not depend on the
   values). Each is the step sgns trains with on this device: `model=full_softmax`'s torch step, and
   the default SGNS kernel (`trainer.kernel=auto`: numba on CPU, torch on CUDA).
2. Quality in equal training time on the planted corpus (the default synthetic corpus): each objective
   trains through sgns's own data and step for the same wall-clock budget (the learning rate decays
   linearly over the budget instead of over epochs), and the planted analogies are scored along the way
   (evaluation time not counted).

    flock /tmp/sgns-bench.lock python scripts/studies/why_negative_sampling.py --out docs/why_negative_sampling
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

import torch

from sgns.config import CONFIG_DIR, typed_config
from sgns.corpus.synthetic import evaluation_config
from sgns.device import resolve_device
from sgns.model import SGNS, FullSoftmax, make_model
from sgns.pipelines import make_pipeline, resolve
from sgns.pipelines.softmax import full_softmax_sgd_step
from sgns.pipelines.torch_step import sgd_step
from sgns.train.loop import evaluate, read_corpus


def seconds_per_step(step: Callable[[], object], device: torch.device, min_seconds: float = 1.0,
                     max_steps: int = 30) -> float:
    """Median seconds of one call, after a warm-up call, over enough calls to fill `min_seconds` (3 at least)."""
    def timed() -> float:
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    timed()
    times = [timed()]
    while (sum(times) < min_seconds or len(times) < 3) and len(times) < max_steps:
        times.append(timed())
    return statistics.median(times)


def time_per_step(vocab_sizes: List[int], batch: int, dim: int, device: torch.device) -> Dict[str, List[float]]:
    g = torch.Generator().manual_seed(0)
    kernel = sgd_step
    results: Dict[str, List[float]] = {"full_softmax": [], "ns_k5": [], "ns_k20": []}
    for v in vocab_sizes:
        centers = torch.randint(0, v, (batch,), generator=g).to(device)
        contexts = torch.randint(0, v, (batch,), generator=g).to(device)
        softmax = FullSoftmax(v, dim).to(device)
        results["full_softmax"].append(seconds_per_step(
            lambda m=softmax, c=centers, x=contexts: full_softmax_sgd_step(m, c, x, 1e-4), device))
        sgns = SGNS(v, dim).to(device)
        for k in (5, 20):
            negatives = torch.randint(0, v, (batch, k), generator=g).to(device)
            results[f"ns_k{k}"].append(seconds_per_step(
                lambda m=sgns, c=centers, x=contexts, n=negatives: kernel(m, c, x, n, 1e-4), device))
        print(f"|V|={v:>7,}: " + ", ".join(f"{name} {times[-1] * 1e3:8.2f} ms" for name, times in results.items()),
              flush=True)
    return results


def compose(overrides: List[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return typed_config(hydra_compose("train", overrides=overrides))


def equal_time(objective: str, budget: float, points: int, device: torch.device, overrides: List[str],
               work: Path) -> Dict[str, List[float]]:
    """Train `objective` for `budget` seconds of steps; planted-analogy accuracy at `points` times."""
    model_override = ["model=full_softmax"] if objective == "full_softmax" else [
        f"data.negatives={objective.removeprefix('ns_k')}"]
    run_dir = work / objective
    cfg = compose([f"trainer.run_dir={run_dir}", "trainer.progress=false", f"trainer.device={device}",
                   "trainer.epochs=1000", *model_override, *overrides])
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.trainer.seed)
    corpus, vocab = read_corpus(cfg)
    model = make_model(cfg.model, len(vocab)).to(device)
    backend = make_pipeline(resolve(cfg, device, corpus.total_tokens), corpus, vocab, model, device)
    eval_cfg = evaluation_config(cfg.eval, cfg.corpus, cfg.data.cache_dir)
    lr0, floor = cfg.optimizer.lr, cfg.optimizer.min_lr_ratio
    curve: Dict[str, List[float]] = {"seconds": [], "accuracy": [], "pairs": []}
    spent, pairs, next_point = 0.0, 0, budget / points

    def budget_lr(_progress: float = 0.0) -> float:
        return lr0 * max(1.0 - spent / budget, floor)

    if hasattr(backend, "lr_at"):  # the numba span kernel interpolates lr within a span: the same budget schedule
        backend.lr_at = budget_lr
    for batch in backend.batches((0, 0, 0)):
        start = time.perf_counter()
        backend.step(batch, budget_lr())
        if device.type == "cuda":
            torch.cuda.synchronize()
        spent += time.perf_counter() - start
        pairs += batch.pairs
        if spent >= next_point or spent >= budget:
            results = evaluate(eval_cfg, vocab, model, device)
            accuracy = next(m["accuracy"] for m in results.values() if "accuracy" in m)
            curve["seconds"].append(spent)
            curve["accuracy"].append(accuracy)
            curve["pairs"].append(pairs)
            print(f"  {objective}: {spent:6.1f} s, {pairs:>11,} pairs, planted analogies {accuracy:.3f}", flush=True)
            next_point += budget / points
            if spent >= budget:
                break
    curve["vocab_size"] = len(vocab)
    return curve


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"full_softmax": "full softmax", "ns_k5": "negative sampling, K=5", "ns_k20": "negative sampling, K=20"}
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    sizes = result["vocab_sizes"]
    for name, times in result["time_per_step"].items():
        left.plot(sizes, [t * 1e3 for t in times], "o-", label=labels[name])
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel("vocabulary size |V|")
    left.set_ylabel(f"ms per step ({result['batch']} pairs, dim {result['dim']})")
    left.set_title("Time per step")
    left.legend()
    left.grid(True, which="both", alpha=0.3)
    for name, curve in result["equal_time"].items():
        right.plot(curve["seconds"], curve["accuracy"], "o-", label=labels[name])
    right.set_xlabel("training seconds (same budget for each)")
    right.set_ylabel("planted analogy accuracy")
    vocab = next(iter(result["equal_time"].values()))["vocab_size"]
    right.set_title(f"Quality in equal time (planted corpus, |V|={vocab:,})")
    right.legend()
    right.grid(True, alpha=0.3)
    fig.suptitle(f"{result['machine']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("why_negative_sampling"), help="writes OUT.json and OUT.png")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--vocab-sizes", default="1000,3000,10000,30000,100000")
    ap.add_argument("--batch", type=int, default=1024, help="pairs per step for the timing")
    ap.add_argument("--dim", type=int, default=100)
    ap.add_argument("--budget", type=float, default=60.0, help="training seconds per objective")
    ap.add_argument("--points", type=int, default=8, help="evaluations along the budget")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch (and numba) threads; 1 measures the cost per core on a shared machine")
    ap.add_argument("--machine", default=None, help="how the plot names the machine (default: CPU model)")
    ap.add_argument("overrides", nargs="*", help="config overrides for the equal-time runs (e.g. data.batch_size=1024)")
    args = ap.parse_args()
    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    args.overrides = [f"trainer.threads={args.threads}", *args.overrides]
    if args.machine is None:
        args.machine = (torch.cuda.get_device_name(device) if device.type == "cuda"
                        else f"{cpu_model()}, {args.threads} thread(s)")
    sizes = [int(v) for v in args.vocab_sizes.split(",")]
    result: dict = {"machine": args.machine, "device": str(device), "batch": args.batch, "dim": args.dim,
                    "vocab_sizes": sizes, "budget": args.budget, "overrides": args.overrides}
    print("time per step:")
    result["time_per_step"] = time_per_step(sizes, args.batch, args.dim, device)
    print(f"equal time ({args.budget:.0f} s each) on the planted corpus:")
    with tempfile.TemporaryDirectory() as work:
        result["equal_time"] = {name: equal_time(name, args.budget, args.points, device, args.overrides, Path(work))
                                for name in ("full_softmax", "ns_k5", "ns_k20")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    plot(result, args.out.with_suffix(".png"))
    print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
