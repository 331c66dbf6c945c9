"""Operator calls and host synchronisations per training step of the torch device pipeline, on any device.

Builds the pipeline `sgns-train trainer.kernel=torch` runs (DevicePairBatches + DevicePipeline) on a corpus,
runs the training loop's per-batch work (next batch, lr, step, the loop's bookkeeping: `TrainState.advance`)
for warm-up steps, then records `--steps` steps with torch.profiler and prints, per step:

- top-level operator calls (each is at least one kernel launch on a GPU), split into data (pairs, batch
  slicing, negatives), update (the step) and loop;
- host synchronisations: calls of the operators that read a device value back or size their output from
  device data (`_local_scalar_dense` is what .item(), float(t), int(t) and bool(t) run; nonzero, unique,
  masked_select, ...). On the CPU nothing actually waits, so these are counted by name: they are exactly the
  calls that would block a CUDA stream.

A chunk's pair building (subsampling, windows, shuffle) happens once per chunk; its cost is reported per chunk
and spread over the chunk's steps in the "per step, amortised" column.

    python scripts/benchmarks/profile_device_step.py                        # the default step, a synthetic corpus
    python scripts/benchmarks/profile_device_step.py --step static          # the fixed-shape (CUDA-graph-ready) step
    python scripts/benchmarks/profile_device_step.py --step compiled        # the fixed-shape step under torch.compile
    python scripts/benchmarks/profile_device_step.py --corpus /tmp/prefix-1000000.txt --batch-size 65536
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile, record_function

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sgns.config import DataConfig  # noqa: E402
from sgns.corpus import encode, text_source  # noqa: E402
from sgns.model import SGNS  # noqa: E402
from sgns.pipelines.device import DEVICE_LR_SCALE, DEVICE_ROW_CAP, DevicePairBatches, DevicePipeline  # noqa: E402
from sgns.train.state import TrainState  # noqa: E402
from sgns.vocab import Vocabulary  # noqa: E402

# Operators that make the host wait for the device (a value read back, or an output sized by device data).
SYNCING = {"aten::_local_scalar_dense", "aten::item", "aten::nonzero", "aten::nonzero_static", "aten::unique",
           "aten::_unique", "aten::_unique2", "aten::unique_consecutive", "aten::unique_dim", "aten::masked_select",
           "aten::repeat_interleave", "aten::is_nonzero", "aten::equal", "aten::allclose"}
PHASES = ("data", "update", "loop")
# Operators that only make a view (no kernel, no copy): counted apart from the ops that launch work.
VIEWS = {"aten::view", "aten::slice", "aten::select", "aten::unsqueeze", "aten::squeeze", "aten::transpose", "aten::t",
         "aten::expand", "aten::reshape", "aten::as_strided", "aten::detach", "aten::alias", "aten::narrow",
         "aten::_unsafe_view", "aten::permute", "aten::_reshape_alias", "aten::lift_fresh"}


def zipf_corpus(path: Path, words: int, vocab: int = 20000, line_len: int = 20, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    p = 1.0 / (np.arange(vocab) + 2.7)
    ids = rng.choice(vocab, size=words, p=p / p.sum())
    path.write_text("\n".join(" ".join(f"w{i}" for i in ids[s:s + line_len]) for s in range(0, words, line_len)))
    return path


# torch.compile's wrappers: not work themselves; the compiled graph's kernels and library calls inside count.
COMPILED_GRAPH = "## Call CompiledFxGraph"
WRAPPERS = ("Torch-Compiled Region", "TorchDynamo Cache Lookup", "Pregraph bytecode", "AOTDispatcher",
            COMPILED_GRAPH)


def top_level(events: List) -> List:
    """Operator events not nested in another operator (what the Python code called), and the kernels a compiled
    graph runs in place of its operators."""
    def counted(e) -> bool:
        parent = e.cpu_parent
        while parent is not None and parent.name.startswith(WRAPPERS[:-1]):
            parent = parent.cpu_parent  # a wrapper's child is at the wrapper's level
        return parent is None or parent.name in PHASES + ("chunk",) or parent.name.startswith(COMPILED_GRAPH)
    return [e for e in events if counted(e) and not e.name.startswith(WRAPPERS)]


def phase_of(event) -> str:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name in PHASES or parent.name == "chunk":
            return parent.name
        parent = parent.cpu_parent
    return "other"


def count(prof, steps: int) -> Dict[str, Dict[str, float]]:
    events = [e for e in prof.events() if e.device_type.name == "CPU"]
    ops = [e for e in events if e.name not in PHASES + ("chunk",) and not e.name.startswith("ProfilerStep")]
    per: Dict[str, Dict[str, float]] = collections.defaultdict(lambda: collections.defaultdict(float))
    names: Dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for e in top_level(ops):
        phase = phase_of(e)
        per[phase]["views" if e.name in VIEWS else "ops"] += 1
        names[phase][e.name] += 1
    for e in ops:  # syncs at any depth: a composite op may sync inside
        if e.name in SYNCING:
            per[phase_of(e)]["syncs"] += 1
    return {"per": per, "names": names}


def main(argv: List[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", type=Path, default=None, help="a text file (default: a synthetic Zipf corpus)")
    ap.add_argument("--words", type=int, default=1_200_000, help="size of the synthetic corpus")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=8192)
    ap.add_argument("--chunk-tokens", type=int, default=1_000_000, help="data.chunk_tokens")
    ap.add_argument("--dim", type=int, default=100)
    ap.add_argument("--negatives", type=int, default=5)
    ap.add_argument("--step", default="reference", choices=["reference", "static", "compiled"],
                    help="reference: sgd_step on the batch as sliced; static: the fixed-shape masked step; "
                         "compiled: the static step under torch.compile")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--show", type=int, default=12, help="list the most frequent operators of each phase")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if args.step == "compiled":  # name inductor's C++ kernels in the profile (CUDA's Triton launches are named)
        from torch._inductor import config as inductor_config

        inductor_config.cpp.enable_kernel_profile = True
    tmp = Path(tempfile.mkdtemp(prefix="sgns-profile-"))
    path = args.corpus or zipf_corpus(tmp / "zipf.txt", args.words)
    corpus = encode(text_source(path, 10000, False), tmp / "cache", log=lambda _: None)
    vocab = Vocabulary.build(corpus.words, corpus.counts, 5)
    settings = DataConfig(window=5, subsample=1e-3, batch_size=args.batch_size, chunk_tokens=args.chunk_tokens,
                          negatives=args.negatives)
    data = DevicePairBatches(corpus, vocab, settings, 1, 1, device=device)
    model = SGNS(len(vocab), args.dim).to(device)
    mode = {} if args.step == "reference" else {"step_mode": args.step}
    backend = DevicePipeline(data, model, DEVICE_ROW_CAP, lr_scale=DEVICE_LR_SCALE, **mode)
    state = TrainState(loss_sum=torch.zeros((), device=device))
    sync = (lambda: torch.cuda.synchronize()) if device.type == "cuda" else (lambda: None)

    it = iter(backend.batches((0, 0, 0)))

    def one_step() -> None:
        with record_function("data"):
            batch = next(it)
        lr = 0.025 * (1 - state.words_done / backend.total_words)
        with record_function("update"):
            loss = backend.step(batch, lr)
        with record_function("loop"):
            state.advance(batch, loss)

    for _ in range(args.warmup):
        one_step()
    sync()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(args.steps):
            one_step()
        sync()
    with profile(activities=[ProfilerActivity.CPU]) as chunk_prof:
        with record_function("chunk"):
            pairs = data.chunk_pairs(0, 1)
    steps_per_chunk = max(1, -(-len(pairs) // args.batch_size))

    c, ch = count(prof, args.steps), count(chunk_prof, 1)
    n = args.steps
    print(f"corpus {path.name}: {corpus.total_tokens:,} words, vocabulary {len(vocab):,}; device {device}; "
          f"batch {args.batch_size:,} pairs, dim {args.dim}, {args.negatives} negatives, step={args.step}; "
          f"torch {torch.__version__}; {n} steps profiled after {args.warmup} warm-up steps; "
          f"a chunk of {args.chunk_tokens:,} tokens = {steps_per_chunk} steps\n")
    print("| phase | ops per step (launch work) | view ops per step | host syncs per step |")
    print("|---|---|---|---|")
    total_ops = total_views = total_syncs = 0.0
    for phase in PHASES + ("other",):
        ops, views, syncs = (c["per"][phase][key] / n for key in ("ops", "views", "syncs"))
        if ops or views or syncs or phase != "other":
            print(f"| {phase} | {ops:.1f} | {views:.1f} | {syncs:.1f} |")
        total_ops, total_views, total_syncs = total_ops + ops, total_views + views, total_syncs + syncs
    chunk_ops, chunk_views, chunk_syncs = (ch["per"]["chunk"][key] for key in ("ops", "views", "syncs"))
    print(f"| **per step** | **{total_ops:.1f}** | **{total_views:.1f}** | **{total_syncs:.1f}** |")
    print(f"| chunk's pairs (once per chunk) | {chunk_ops:.0f} | {chunk_views:.0f} | {chunk_syncs:.0f} |")
    spread = steps_per_chunk
    print(f"| per step, amortised over the chunk's {spread} steps | {total_ops + chunk_ops / spread:.1f} | "
          f"{total_views + chunk_views / spread:.1f} | {total_syncs + chunk_syncs / spread:.1f} |")
    if args.show:
        for phase in PHASES:
            common = ", ".join(f"{name} x{k / n:g}" for name, k in c["names"][phase].most_common(args.show))
            print(f"\n{phase}: {common}")


if __name__ == "__main__":
    main()
