"""Exploration (issue 18.3): prefetch variants of the span kernel (`span.train_piece_pf`, bits PF_*), every
(vocabulary, variant) configuration trained span by span in rotation, so that all share the machine's load.

    PYTHONPATH=$PWD python scripts/kernel_prefetch_bench.py --vocab 60000 2000000 --pf 0 1 8 9 --tokens 4000000 \
        --rounds 10 --repeats 5
"""
import argparse
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, __import__("os").path.dirname(__file__))
import kernel_vocab_bench as kvb

from sgns.pipelines import span

_E = {}
def entry(dim, pf):
    if (dim, pf) not in _E:
        fn = span.train_piece_pf
        W = np.zeros((1, dim), dtype=np.float32)
        fn(W, W.copy(), np.zeros(1, np.int32), np.zeros(1, np.int32), np.array([0, 1], np.int64), 0, 0,
           np.ones(1, np.float32), np.ones(1, np.int64), np.zeros(1, np.int32), 1, 1, 0.0, 0.0, np.uint64(0), 0, pf,
           dim)
        e = None
        for sig, c in fn.overloads.items():
            if getattr(sig[-1], "literal_value", None) == dim and getattr(sig[-2], "literal_value", None) == pf:
                e = c.entry_point
        assert e is not None
        _E[(dim, pf)] = e
    return _E[(dim, pf)]

ap = argparse.ArgumentParser()
ap.add_argument("--vocab", type=int, nargs="+", default=[60000, 2000000])
ap.add_argument("--pf", type=int, nargs="+", default=[0, 1, 2, 4, 7])
ap.add_argument("--tokens", type=int, default=2_000_000)
ap.add_argument("--repeats", type=int, default=3)
ap.add_argument("--rounds", type=int, default=8)
ap.add_argument("--huge", action="store_true")
ap.add_argument("--threads", type=int, default=2)
a = ap.parse_args()
for pf in a.pf:
    entry(100, pf)
orig = span.compiled_train_piece
ids = {v: kvb.zipf_ids(v, a.tokens, 1.0, seed=v) for v in a.vocab}
SPAN = 131072
configs = [(v, pf) for v in a.vocab for pf in a.pf]
sp = {c: [] for c in configs}
trainers, cursor = {}, {}
for v in a.vocab:
    trainers[v], _ = kvb.setup(v, ids[v], 100, a.huge, a.threads)
    trainers[v].C[...] = 0.0  # fault the zero pages in before any timed span
    kvb.one_pass(trainers[v], ids[v][:300000], 100, SPAN)  # warm
    cursor[v] = 0
def run_span(v, pf):
    span.compiled_train_piece = lambda dim, variant=False, pf=pf: (lambda *x: entry(dim, pf)(*x[:-1], pf, x[-1]))
    lo = cursor[v]
    hi = min(lo + SPAN, len(ids[v]))
    cursor[v] = 0 if hi == len(ids[v]) else hi
    starts = np.append(np.arange(0, hi - lo, 100), hi - lo).astype(np.int64)
    t = time.perf_counter()
    trainers[v].train_span(ids[v][lo:hi], starts, 0, lo // SPAN, 0.02, 0.02)
    return time.perf_counter() - t, hi - lo
P = len(configs)
for rep in range(a.repeats):
    sec = {c: 0.0 for c in configs}
    words = {c: 0 for c in configs}
    for r in range(a.rounds):
        for q in range(P):
            c = configs[(q + r) % P]  # every configuration once a round, order rotated
            dt, n = run_span(*c)
            sec[c] += dt
            words[c] += n
    for c in configs:
        sp[c].append(words[c] / sec[c])
    print(f"[{rep}] " + ", ".join(f"{v}/{pf} {words[(v, pf)]/sec[(v, pf)]:,.0f}" for v, pf in configs), flush=True)
base = configs[0]
print(f"| vocab | pf | words/s median | ratio vs vocab {base[0]} pf {base[1]} | ratio vs pf {a.pf[0]} same vocab |")
for v, pf in configs:
    r = [x / y for x, y in zip(sp[(v, pf)], sp[base], strict=False)]
    r2 = [x / y for x, y in zip(sp[(v, pf)], sp[(v, a.pf[0])], strict=False)]
    print(f"| {v:,} | {pf} | {statistics.median(sp[(v, pf)]):,.0f} "
          f"| {statistics.median(r):.3f} ({min(r):.3f}-{max(r):.3f}) "
          f"| {statistics.median(r2):.3f} ({min(r2):.3f}-{max(r2):.3f}) |")
