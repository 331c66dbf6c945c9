"""The compiled CPU kernel (numba): token ids in, updated embeddings out, no pair arrays.

One compiled pass over a piece of the token stream does everything word2vec's inner loop does: it drops
out-of-vocabulary tokens, subsamples frequent words with word2vec's keep probability, draws each center's
window radius uniformly in [1, window], draws negatives from unigram^0.75 (Walker's alias table) and applies
the SGD update. Randomness comes from a splitmix64 stream seeded by (seed, epoch, span, piece), so any piece
can be replayed exactly: that is what makes resume exact in deterministic mode.

The update follows pWord2Vec's HogBatch (Ji et al. 2016) rather than word2vec's pair-by-pair loop. Word2vec's
skip-gram predicts the center word from each context word's input vector; here the contexts of one window
share one draw of K negatives, so for a center with contexts c_1..c_m the logits are one small (m x (K+1))
product of the contexts' input rows with the output rows of [center, negatives], and both gradients are
small products of the same loaded rows. Gradients of one window are computed from the weights as they were
before the window: exactly a batch SGD step on the BCE-with-logits loss of that window's m * (K+1) logits
(tests/test_numba_kernels.py checks it against the nn.Module reference). With data.window_negatives=false each
context draws its own K negatives instead (word2vec's draws, the same batch step; `_window_per_context`).

Pieces are aligned to sentence starts and defined by positions alone (`piece_bounds`), never by the thread
count. `SpanTrainer` runs a span's pieces on several threads at once, racing on shared rows exactly as
word2vec and gensim do (Hogwild, the fast default), or, deterministic, on one thread in piece order.
`SpanPipeline` is the training loop's view of it (sgns.pipelines.Pipeline): batches are token spans
(`TokenSpans`), the step trains one.

No pairs are built for it: a span is `data.span_tokens` consecutive corpus positions (a sentence cut by a span
edge is trained as two), read from the token cache as an in-memory copy (its pages then dropped, so memory
stays flat); the position a run continues from is (epoch, span, 0), so spans are regenerated exactly on
resume. Under torchrun a rank trains only its shard's chunks (sgns.distributed.Shard): each chunk is cut
into spans ending at the points where the ranks merge their tables, so a merge always falls between two steps.
"""

from __future__ import annotations

import ctypes
import math
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator, List, Optional, Tuple

import numpy as np
import torch
from llvmlite import ir
from numba import literally, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from sgns.corpus import EncodedCorpus
from sgns.errors import SGNSError
from sgns.model import SGNS
from sgns.pipelines.base import PipelineBase
from sgns.pipelines.negatives import alias_table, unigram_table
from sgns.pipelines.plan import ChunkPlan, Position, keep_probabilities, read_ids
from sgns.vocab import Vocabulary

if TYPE_CHECKING:
    from sgns.distributed import Shard

# Reassociation lets LLVM vectorise the dot products; the compiled code is fixed, so one machine gives
# bit-identical results run to run.
_FAST = {"reassoc", "contract", "nsz", "arcp"}

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_U32 = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)
_TO_UNIT = 1.0 / 4294967296.0


@njit(nogil=True, cache=True, inline="always")
def _mix(z: np.uint64) -> np.uint64:
    """splitmix64's finaliser: a bijective scramble of 64 bits."""
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@njit(nogil=True, cache=True, inline="always")
def _draw(state: np.uint64) -> Tuple[np.uint64, np.uint64]:
    """(next state, 64 random bits): splitmix64, a counter through a strong mixer."""
    state += _GOLDEN
    return state, _mix(state)


@njit(nogil=True, cache=True)
def piece_seed(seed: int, epoch: int, chunk: int, piece: int) -> np.uint64:
    """The start state of a piece's random stream: a hash of (seed, epoch, chunk, piece)."""
    s = _mix(np.uint64(seed) + _GOLDEN)
    s = _mix(s ^ (np.uint64(epoch) + _GOLDEN))
    s = _mix(s ^ (np.uint64(chunk) + _GOLDEN))
    return _mix(s ^ (np.uint64(piece) + _GOLDEN))


@njit(nogil=True, cache=True, inline="always")
def _kept_words(raw: np.ndarray, remap: np.ndarray, keep: np.ndarray, lo: int, hi: int, sen: np.ndarray,
                state: np.uint64) -> Tuple[int, np.uint64]:
    """Write the kept words of raw[lo:hi] into sen: in the vocabulary, then subsampled (word w stays with
    probability keep[w]). Returns (how many, next state)."""
    n = 0
    for p in range(lo, hi):
        w = remap[raw[p]]
        if w < 0:
            continue
        kp = keep[w]
        if kp < 1.0:
            state, r = _draw(state)
            if (r >> _S32) * _TO_UNIT >= kp:
                continue
        sen[n] = w
        n += 1
    return n, state


@njit(nogil=True, cache=True, inline="always")
def _radius(r: np.uint64, window: int) -> int:
    """A window radius uniform in [1, window] from 64 random bits (the high 32, scaled: no modulo bias
    beyond 2^-32)."""
    return 1 + np.int64(((r >> _S32) * np.uint64(window)) >> _S32)


@njit(nogil=True, cache=True, inline="always")
def _slot(r: np.uint64, n: int) -> int:
    """An alias-table slot in [0, n) from the high 32 bits of r."""
    return np.int64(((r >> _S32) * np.uint64(n)) >> _S32)


@njit(nogil=True, cache=True, inline="always")
def _negative(r: np.uint64, accept: np.ndarray, alias: np.ndarray) -> int:
    """A draw from the alias table: the high 32 bits pick a slot, the low 32 bits its coin."""
    slot = _slot(r, len(accept))
    return slot if np.int64(r & _U32) < accept[slot] else np.int64(alias[slot])


@njit(nogil=True, cache=True, inline="always", fastmath=_FAST)
def _logit_grad(x: np.float32, positive: bool, alpha: np.float32, with_loss: bool) -> Tuple[np.float32, float]:
    """(alpha * (label - sigmoid(x)), the BCE-with-logits loss of x if with_loss else 0), overflow-safe: one exp
    of -|x|, and log1p of it for the loss."""
    e = np.float32(math.exp(-abs(x)))
    p = np.float32(1.0) / (np.float32(1.0) + e)
    if x < 0:
        p = e * p
    label = np.float32(1.0) if positive else np.float32(0.0)
    loss = 0.0
    if with_loss:
        loss = math.log1p(e) + (max(-x, 0.0) if positive else max(x, 0.0))
    return alpha * (label - p), loss


@intrinsic
def _prefetch(typingctx, vector, i):  # type: ignore[no-untyped-def]
    """Ask the CPU to start loading vector[i]'s cache line (LLVM's prefetch: read, keep in all levels)."""

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        aryty = sig.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        index = [context.cast(builder, args[1], sig.args[1], types.intp)]
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, index)
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.void(vector, i), codegen


@njit(nogil=True, cache=True, inline="always")
def _prefetch_row(matrix: np.ndarray, row: int, d: int) -> None:
    line = matrix[row]
    for col in range(0, d, 16):  # one call per 64-byte line
        _prefetch(line, col)


# The window update, bits of `flags`: 0 is the default kernel (HogBatch's shared negatives), PER_CONTEXT is
# data.window_negatives=false. Other bits are study variants (scripts/kernel_variants.py).
PER_CONTEXT_NEGATIVES = 1  # each (context, center) pair draws its own K negatives (word2vec) instead of one per window
PER_CONTEXT_BATCH = 16  # PER_CONTEXT_NEGATIVES, row passes taken two rows at a time (`_window_per_context`)
PER_CONTEXT = PER_CONTEXT_NEGATIVES | PER_CONTEXT_BATCH  # data.window_negatives=false


@njit(nogil=True, cache=True, inline="always", fastmath=_FAST)
def _window_per_context(W: np.ndarray, C: np.ndarray, ctx: np.ndarray, m: int, center: int, negs: np.ndarray,
                        grad: np.ndarray, dw: np.ndarray, accept: np.ndarray, alias: np.ndarray, k1: int,
                        alpha: np.float32, with_loss: bool, state: np.uint64,
                        d: int) -> Tuple[np.uint64, float, int]:
    """One window, each context with its own K negatives: a batch SGD step on the window's m * (K + 1) logits,
    all from the weights before the window. Returns (next state, loss if with_loss, logits)."""
    for a in range(m):  # all draws first, each row's load started at once: the misses overlap
        negs[a, 0] = center
        for k in range(1, k1):
            state, r = _draw(state)
            negs[a, k] = _negative(r, accept, alias)
            _prefetch_row(C, negs[a, k], d)
    loss = 0.0
    logits = 0
    for a in range(m):  # logits, two output rows per pass over the input row
        wa = W[ctx[a]]
        na = negs[a]
        for k in range(0, k1, 2):
            k2 = min(k + 1, k1 - 1)
            c0 = C[na[k]]
            c1 = C[na[k2]]
            x0 = np.float32(0.0)
            x1 = np.float32(0.0)
            for t in range(d):
                x0 += wa[t] * c0[t]
                x1 += wa[t] * c1[t]
            g, l_ = _logit_grad(x0, k == 0, alpha, with_loss)
            skip = k > 0 and na[k] == center
            grad[a, k] = 0.0 if skip else g
            loss += 0.0 if skip else l_
            logits += 0 if skip else 1
            if k2 != k:
                g, l_ = _logit_grad(x1, False, alpha, with_loss)
                skip = na[k2] == center
                grad[a, k2] = 0.0 if skip else g
                loss += 0.0 if skip else l_
                logits += 0 if skip else 1
    for a in range(m):  # input-row steps from the old output rows
        da = dw[a]
        ga = grad[a]
        na = negs[a]
        for k in range(0, k1, 2):
            k2 = min(k + 1, k1 - 1)
            g0 = ga[k]
            g1 = ga[k2] if k2 != k else np.float32(0.0)
            c0 = C[na[k]]
            c1 = C[na[k2]]
            if k == 0:
                for t in range(d):
                    da[t] = g0 * c0[t] + g1 * c1[t]
            else:
                for t in range(d):
                    da[t] += g0 * c0[t] + g1 * c1[t]
    co = C[center]  # output steps from the old input rows: the center's from every context, two per pass
    for a in range(0, m, 2):
        a2 = min(a + 1, m - 1)
        g0 = grad[a, 0]
        g1 = grad[a2, 0] if a2 != a else np.float32(0.0)
        w0 = W[ctx[a]]
        w1 = W[ctx[a2]]
        for t in range(d):
            co[t] += g0 * w0[t] + g1 * w1[t]
    for a in range(m):  # ...each negative's from its one context
        wa = W[ctx[a]]
        for k in range(1, k1):
            g0 = grad[a, k]
            cn = C[negs[a, k]]
            for t in range(d):
                cn[t] += g0 * wa[t]
    for a in range(m):
        wa = W[ctx[a]]
        da = dw[a]
        for t in range(d):
            wa[t] += da[t]
    return state, loss, logits


@njit(nogil=True, cache=True, inline="always")
def _window_flagged(W: np.ndarray, C: np.ndarray, ctx: np.ndarray, m: int, out: np.ndarray, negs: np.ndarray,
                    grad: np.ndarray, dw: np.ndarray, accept: np.ndarray, alias: np.ndarray, k1: int,
                    alpha: np.float32, with_loss: bool, flags: int, state: np.uint64,
                    d: int) -> Tuple[np.uint64, float, int]:
    """A window's update when `flags` is not 0: PER_CONTEXT, the only such value in training (the study kernel
    of scripts/kernel_variants.py compiles `_train_piece` with its own function in this one's place). Returns
    (next state, loss if with_loss, logits)."""
    return _window_per_context(W, C, ctx, m, out[0], negs, grad, dw, accept, alias, k1, alpha, with_loss, state, d)


@njit(nogil=True, cache=True, inline="always")
def _center_lr(alpha: np.float32, flags: int, lr0: float, lr1: float, into_span: float, i: int, n: int,
               sentence: int, span: int) -> np.float32:
    """The lr of a flagged window: the sentence's `alpha` (the study kernel swaps in a per-word lr)."""
    return alpha


@njit(nogil=True, cache=True, inline="always")
def _prefetch_draws(accept: np.ndarray, alias: np.ndarray, state: np.uint64, skip: int, count: int) -> None:
    """Start loading the alias-table lines of the `count` negatives drawn after the next `skip` draws, without
    taking those draws: splitmix64 is a counter, so draw j after `state` is _mix(state + j * golden)."""
    for j in range(skip + 1, skip + count + 1):
        r = _mix(state + np.uint64(j) * _GOLDEN)
        slot = _slot(r, len(accept))
        _prefetch(accept, slot)
        _prefetch(alias, slot)


@njit(nogil=True, cache=True)
def train_piece(W: np.ndarray, C: np.ndarray, raw: np.ndarray, remap: np.ndarray, starts: np.ndarray,
                s0: int, s1: int, keep: np.ndarray, accept: np.ndarray, alias: np.ndarray, window: int,
                negatives: int, lr0: float, lr1: float, state: np.uint64,
                loss_every: int, dim: int) -> Tuple[float, int, int, int]:
    """Train on sentences s0..s1-1 of a span (see `_train_piece`), compiled for `dim` (W's width) as a constant
    (the row loops then vectorise without a generic remainder path)."""
    return _train_piece(W, C, raw, remap, starts, s0, s1, keep, accept, alias, window, negatives, lr0, lr1,
                        state, loss_every, literally(dim), 0)


@njit(nogil=True, cache=True)
def train_piece_variant(W: np.ndarray, C: np.ndarray, raw: np.ndarray, remap: np.ndarray, starts: np.ndarray,
                        s0: int, s1: int, keep: np.ndarray, accept: np.ndarray, alias: np.ndarray, window: int,
                        negatives: int, lr0: float, lr1: float, state: np.uint64,
                        loss_every: int, flags: int, dim: int) -> Tuple[float, int, int, int]:
    """`train_piece` with window update `flags` (PER_CONTEXT: data.window_negatives=false)."""
    return _train_piece(W, C, raw, remap, starts, s0, s1, keep, accept, alias, window, negatives, lr0, lr1,
                        state, loss_every, literally(dim), flags)


@njit(nogil=True, cache=True, fastmath=_FAST)
def _train_piece(W: np.ndarray, C: np.ndarray, raw: np.ndarray, remap: np.ndarray, starts: np.ndarray,
                 s0: int, s1: int, keep: np.ndarray, accept: np.ndarray, alias: np.ndarray, window: int,
                 negatives: int, lr0: float, lr1: float, state: np.uint64,
                 loss_every: int, d: int, flags: int) -> Tuple[float, int, int, int]:
    """Train on sentences s0..s1-1 of a span; returns (summed loss of the sampled windows, their positive
    pairs, all positive pairs, logits computed).

    raw: the span's token ids in corpus (first-seen) order; remap: corpus id -> vocabulary id or -1.
    starts: sentence start offsets within the span, plus the span length at the end.
    keep: per-word keep probability (float32); accept/alias: Walker's alias table of the negative
    distribution (accept as a threshold in [0, 2^32] in an int64 array). lr falls linearly from lr0 to lr1
    over the piece. The loss (a log per logit) is summed over a random 1 in `loss_every` windows (0: none),
    an unbiased sample for the logged mean. flags: 0, or PER_CONTEXT (`_window_flagged`).

    Rows and table lines are prefetched ahead of use (docs/kernels.md, "A big vocabulary"): the next
    sentence's remap and keep entries, the alias-table lines of the negatives two centers ahead, the output
    rows of the next center and of its negatives, the input row of the word entering the next window.
    Prefetches change no arithmetic.
    """
    k1 = negatives + 1
    lo, hi = starts[s0], starts[s1]
    span = max(hi - lo, 1)
    longest = 0
    for s in range(s0, s1):
        longest = max(longest, starts[s + 1] - starts[s])
    sen = np.empty(longest, dtype=np.int32)  # the kept words of the current sentence
    ctx = np.empty(2 * window, dtype=np.int32)  # the current window's context words
    out = np.empty(k1, dtype=np.int32)  # center word, then the shared negatives
    ahead = np.empty(k1, dtype=np.int32)  # the next center's negatives, drawn early to prefetch their rows
    grad = np.empty((2 * window, k1), dtype=np.float32)  # lr * (label - sigmoid(logit))
    dw = np.empty((2 * window, d), dtype=np.float32)  # pending input-row updates
    negs = np.empty((2 * window if flags else 0, k1), dtype=np.int32)  # flagged: each context's output rows
    loss = 0.0
    loss_pairs = 0
    pairs = 0
    logits = 0
    for s in range(s0, s1):
        # 1. the sentence's kept words; the next sentence's remap entries start loading
        n, state = _kept_words(raw, remap, keep, starts[s], starts[s + 1], sen, state)
        if s + 1 < s1:
            for p in range(starts[s + 1], starts[s + 2]):
                _prefetch(remap, raw[p])
        alpha = np.float32(lr0 + (lr1 - lr0) * (starts[s] - lo) / span)
        for k in range(1, k1):
            state, r = _draw(state)
            ahead[k] = _negative(r, accept, alias)
        for i in range(n):
            # 2. this center's negatives (drawn one center ahead), one draw shared by the whole window;
            # a negative equal to the center is skipped. Then the next center's, prefetched.
            center = sen[i]
            out[0] = center
            for k in range(1, k1):
                out[k] = ahead[k]
            if i == n // 2 and s + 1 < s1:  # the next sentence's keep entries (its remap lines have arrived)
                for p in range(starts[s + 1], starts[s + 2]):
                    w = remap[raw[p]]
                    if w >= 0:
                        _prefetch(keep, w)
            if flags == 0 and i + 2 < n:  # the center after next's negatives: after this center's k1 draws
                _prefetch_draws(accept, alias, state, k1, negatives)
            if i + 1 < n:
                for k in range(1, k1):
                    state, r = _draw(state)
                    ahead[k] = _negative(r, accept, alias)
                    _prefetch_row(C, ahead[k], d)
                _prefetch_row(C, sen[i + 1], d)
                if i + 1 + window < n:
                    _prefetch_row(W, sen[i + 1 + window], d)
            # 3. the window: radius uniform in [1, window]
            state, r = _draw(state)
            radius = _radius(r, window)
            with_loss = loss_every > 0 and np.int64(r & _U32) % loss_every == 0
            m = 0
            for j in range(max(0, i - radius), min(n, i + radius + 1)):
                if j != i:
                    ctx[m] = sen[j]
                    m += 1
            if m == 0:
                continue
            if flags:
                alpha = _center_lr(alpha, flags, lr0, lr1, starts[s] - lo, i, n, starts[s + 1] - starts[s], span)
                state, l_, x_ = _window_flagged(W, C, ctx, m, out, negs, grad, dw, accept, alias, k1, alpha,
                                                with_loss, flags, state, d)
                loss += l_
                logits += x_
                pairs += m
                if with_loss:
                    loss_pairs += m
                continue
            # 4. logits and their gradients, all from the weights before this window. Rows are taken two
            # at a time (an odd last one twice), so each pass over a loaded row serves two products.
            for a in range(m):
                wa = W[ctx[a]]
                for k in range(0, k1, 2):
                    k2 = min(k + 1, k1 - 1)
                    c0 = C[out[k]]
                    c1 = C[out[k2]]
                    x0 = np.float32(0.0)
                    x1 = np.float32(0.0)
                    for t in range(d):
                        x0 += wa[t] * c0[t]
                        x1 += wa[t] * c1[t]
                    g, l_ = _logit_grad(x0, k == 0, alpha, with_loss)
                    skip = k > 0 and out[k] == center  # word2vec skips a negative equal to the center
                    grad[a, k] = 0.0 if skip else g
                    loss += 0.0 if skip else l_
                    logits += 0 if skip else 1
                    if k2 != k:
                        g, l_ = _logit_grad(x1, False, alpha, with_loss)
                        skip = out[k2] == center
                        grad[a, k2] = 0.0 if skip else g
                        loss += 0.0 if skip else l_
                        logits += 0 if skip else 1
            # 5. input-row steps (from the old output rows), then output rows (from the old input rows)
            for a in range(m):
                da = dw[a]
                ga = grad[a]
                for k in range(0, k1, 2):
                    k2 = min(k + 1, k1 - 1)
                    g0 = ga[k]
                    g1 = ga[k2] if k2 != k else np.float32(0.0)
                    c0 = C[out[k]]
                    c1 = C[out[k2]]
                    if k == 0:
                        for t in range(d):
                            da[t] = g0 * c0[t] + g1 * c1[t]
                    else:
                        for t in range(d):
                            da[t] += g0 * c0[t] + g1 * c1[t]
            for k in range(k1):
                co = C[out[k]]
                for a in range(0, m, 2):
                    a2 = min(a + 1, m - 1)
                    g0 = grad[a, k]
                    g1 = grad[a2, k] if a2 != a else np.float32(0.0)
                    w0 = W[ctx[a]]
                    w1 = W[ctx[a2]]
                    for t in range(d):
                        co[t] += g0 * w0[t] + g1 * w1[t]
            for a in range(m):
                wa = W[ctx[a]]
                da = dw[a]
                for t in range(d):
                    wa[t] += da[t]
            pairs += m
            if with_loss:
                loss_pairs += m
    return loss, loss_pairs, pairs, logits


def kernel_alias_table(probs: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """The alias table of `probs` as the kernel reads it: (accept threshold as an integer in [0, 2^32], int32
    alias index)."""
    accept, alias = alias_table(probs)
    return np.minimum(np.round(accept * 4294967296.0), 4294967296.0).astype(np.int64), alias.astype(np.int32)


def piece_bounds(starts: np.ndarray, piece_tokens: int) -> np.ndarray:
    """Sentence indices that cut a span into pieces: a piece holds the sentences starting in one
    `piece_tokens`-long stretch of positions. A function of the positions only, never of the thread count."""
    n_sent = len(starts) - 1
    marks = np.searchsorted(starts[:-1], np.arange(0, int(starts[-1]), piece_tokens))
    return np.unique(np.concatenate([marks, [n_sent]])).astype(np.int64)


HUGE_PAGE = 1 << 21
HUGE_PAGE_TABLE_BYTES = 64 << 20  # tables from this size on get huge pages (a 60k x 100 table, 24 MB, does not)
_MADV_HUGEPAGE, _MADV_NOHUGEPAGE, _MADV_COLLAPSE = 14, 15, 25  # Linux madvise advice values (COLLAPSE: >= 6.1)


def advise_huge_pages(table: np.ndarray, huge: bool = True) -> bool:
    """Back `table`'s memory with 2 MiB transparent huge pages where Linux allows (THP `madvise` or `always`
    mode): the kernel's rows are random accesses, and with 4 KiB pages a big table misses the TLB on nearly
    every row. MADV_COLLAPSE converts the already-written pages now (about 2 s for 800 MB here; before Linux
    6.1, khugepaged does it later). With `huge` false, the opposite advice (MADV_NOHUGEPAGE: numpy asks for
    huge pages for its large arrays by itself, torch does not). Returns whether the advice was taken; a no-op
    elsewhere and for tables under two huge pages. Best effort: it changes no value in the table."""
    if not sys.platform.startswith("linux") or table.nbytes < 2 * HUGE_PAGE:
        return False
    lo = (table.ctypes.data + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1)
    hi = (table.ctypes.data + table.nbytes) & ~(HUGE_PAGE - 1)
    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return False
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    if madvise(lo, hi - lo, _MADV_HUGEPAGE if huge else _MADV_NOHUGEPAGE) != 0:
        return False
    if huge:
        madvise(lo, hi - lo, _MADV_COLLAPSE)  # best effort: EINVAL before Linux 6.1, EAGAIN/ENOMEM under pressure
    return True


PIECE_TOKENS = 1 << 12  # corpus positions per piece: the unit of parallel work and of random streams
LOSS_SAMPLE_MIN_SPAN = 1 << 12  # spans from this length on sum the loss of a sample of their windows
_COMPILED: dict = {}  # (kernel, dim) -> the kernel's compiled entry point for that dim


def compiled_train_piece(dim: int, variant: bool = False,
                         kernel: Optional[Callable[..., Tuple[float, int, int, int]]] = None,
                         ) -> Callable[..., Tuple[float, int, int, int]]:
    """`train_piece` (`train_piece_variant` if `variant`; `kernel`, one of the two's signature, if given)
    compiled for `dim`, as a directly callable entry point.

    Through the dispatcher, every call with `dim` as a plain int would go through numba's literal-argument
    resolution again (about 6 ms a call, measured); the entry point of the compiled overload costs about
    2 us. Falls back to the dispatcher if numba's overload table does not look as expected."""
    fn = kernel or (train_piece_variant if variant else train_piece)
    entry = _COMPILED.get((fn, dim))
    if entry is None:
        W = np.zeros((1, dim), dtype=np.float32)
        fn(W, W.copy(), np.zeros(1, np.int32), np.zeros(1, np.int32), np.array([0, 1], np.int64), 0, 0,
           np.ones(1, np.float32), np.ones(1, np.int64), np.zeros(1, np.int32), 1, 1, 0.0, 0.0,
           np.uint64(0), 0, *((PER_CONTEXT,) if variant else ()), dim)  # compiles (or loads from the cache)
        entry = fn
        for signature, compiled in getattr(fn, "overloads", {}).items():
            if getattr(signature[-1], "literal_value", None) == dim and hasattr(compiled, "entry_point"):
                entry = compiled.entry_point
        _COMPILED[(fn, dim)] = entry
    return entry


class SpanTrainer:
    """Runs `train_piece` over the pieces of a span: on `threads` threads at once racing on shared rows
    (Hogwild, the fast default), or, when `deterministic`, on one thread in piece order, so that the result
    is a function of the seed alone whatever the thread count."""

    def __init__(self, W: np.ndarray, C: np.ndarray, remap: np.ndarray, keep: np.ndarray, accept: np.ndarray,
                 alias: np.ndarray, window: int, negatives: int, seed: int, threads: int = 1,
                 piece_tokens: int = PIECE_TOKENS, loss_every: int = 16, deterministic: bool = False):
        self.W, self.C, self.remap = W, C, remap
        self.keep = np.asarray(keep, dtype=np.float32)
        self.accept, self.alias = accept, alias
        self.window, self.negatives, self.seed = window, negatives, seed
        self.threads, self.piece_tokens, self.loss_every = threads, piece_tokens, loss_every
        self.deterministic = deterministic
        self.variant_flags = 0  # the window update (0: HogBatch's shared negatives; PER_CONTEXT)
        self.variant_kernel = train_piece_variant  # the kernel for variant_flags != 0 (a study swaps in its own)
        self._pool: Optional[ThreadPoolExecutor] = None  # the helper threads, started on first use

    def train_span(self, raw: np.ndarray, starts: np.ndarray, epoch: int, chunk: int, lr0: float,
                   lr1: float) -> Tuple[float, int, int]:
        """Train on one span (its ids and sentence starts); lr falls linearly from lr0 at the span's start to
        lr1 at its end. Returns (summed loss of the sampled windows, their positive pairs, all positive pairs)."""
        bounds = piece_bounds(starts, self.piece_tokens)
        pieces = len(bounds) - 1
        span = max(int(starts[-1]), 1)
        # A short span (a corpus under ~400k words) sums the loss of every window: a 1-in-16 sample of it may
        # hold none, and the step would report no loss for its pairs. Summing all costs ~30% of the kernel's time.
        loss_every = self.loss_every if span >= LOSS_SAMPLE_MIN_SPAN else min(self.loss_every, 1)

        flags = self.variant_flags
        kernel = compiled_train_piece(self.W.shape[1], variant=bool(flags),
                                      kernel=self.variant_kernel if flags else None)
        tail = (flags, self.W.shape[1]) if flags else (self.W.shape[1],)

        def run(p: int) -> Tuple[float, int, int, int]:
            a, b = int(bounds[p]), int(bounds[p + 1])
            la = lr0 + (lr1 - lr0) * int(starts[a]) / span
            lb = lr0 + (lr1 - lr0) * int(starts[b]) / span
            return kernel(self.W, self.C, raw, self.remap, starts, a, b, self.keep, self.accept, self.alias,
                               self.window, self.negatives, la, lb, np.uint64(piece_seed(self.seed, epoch, chunk, p)),
                               loss_every, *tail)

        if self.deterministic or self.threads <= 1 or pieces <= 1:
            results = [run(p) for p in range(pieces)]
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads - 1, thread_name_prefix="sgns-numba")
            results = _run_threads(run, range(pieces), self.threads, self._pool)
        return sum(r[0] for r in results), sum(r[1] for r in results), sum(r[2] for r in results)


def _run_threads(fn: Callable[[int], Tuple[float, int, int, int]], items: range, threads: int,
                 pool: ThreadPoolExecutor) -> List[Tuple[float, int, int, int]]:
    """fn over items on this thread and `threads - 1` of the pool's, each taking the next item when it is free
    (load balance on a shared machine); fn must release the GIL (the kernel is nogil). The pool's threads
    live as long as the trainer: a thread per span would churn malloc arenas (resident memory)."""
    todo = list(items)
    results: List[Optional[Tuple[float, int, int, int]]] = [None] * len(todo)
    lock = threading.Lock()
    nxt = [0]
    errors: List[BaseException] = []

    def worker() -> None:
        while True:
            with lock:
                i = nxt[0]
                nxt[0] += 1
            if i >= len(todo) or errors:
                return
            try:
                results[i] = fn(todo[i])
            except BaseException as e:  # hand it to the caller
                errors.append(e)
                return

    helpers = [pool.submit(worker) for _ in range(threads - 1)]
    worker()
    for helper in helpers:
        helper.result()
    if errors:
        raise errors[0]
    return results  # type: ignore[return-value]


# ------------------------------------------------------------------------------- the batch source: spans

STEPS_PER_EPOCH = 100  # a small corpus gets spans shorter than data.span_tokens: about this many steps an epoch
MIN_SPAN = 1000  # ...but never shorter than this


def span_starts(offsets: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Sentence starts within corpus positions [lo, hi) relative to lo (a sentence cut by lo starts at 0),
    then hi - lo."""
    inner = offsets[np.searchsorted(offsets, lo) : np.searchsorted(offsets, hi)]
    head = [] if len(inner) and inner[0] == lo else [lo]
    return (np.concatenate([head, inner, [hi]]) - lo).astype(np.int64)


@dataclass
class Span:
    """One chunk of the corpus for the fused kernel (what the loop hands to its step)."""

    ids: np.ndarray  # int32 corpus ids (first-seen order) of the chunk's positions
    starts: np.ndarray  # int64 sentence starts within the chunk, then its length
    epoch: int
    chunk: int  # the span's index within the epoch (under torchrun: the shard chunk it is part of)
    stream: int  # with the seed and epoch, keys the span's random streams: unique within an epoch
    words_before: float  # corpus words covered before this span (all epochs; all ranks together)
    words_done: float  # corpus words covered once it is trained
    resume_position: Position  # where the spans continue once this one is trained
    chunk_fraction: float = 1.0  # under torchrun: how far into its chunk the rank is once this span is trained
    pairs: int = 0  # positive pairs trained, filled in by the step


class TokenSpans:
    """Spans for every epoch from a position on; a pure function of the corpus and the position."""

    def __init__(self, corpus: EncodedCorpus, span_tokens: int, epochs: int, shard: Optional[Shard] = None):
        self.corpus, self.epochs, self.shard = corpus, epochs, shard
        self.total_tokens = corpus.total_tokens
        # Steps are what logs, evaluation and checkpoints count: a small corpus still gets enough of them.
        self.span_tokens = min(span_tokens, max(MIN_SPAN, -(-self.total_tokens // STEPS_PER_EPOCH)))
        # Alone, a chunk is one span; under torchrun a shard chunk is cut into spans_per_chunk spans: at most
        # span_tokens long, a multiple of the merge points per chunk.
        self.plan = ChunkPlan(self.total_tokens, self.span_tokens, epochs, shard)
        self.spans_per_chunk = 1
        if shard is not None:
            longest = -(-self.total_tokens // shard.n_chunks)
            per_chunk, m = -(-longest // self.span_tokens), shard.points_per_chunk
            self.spans_per_chunk = -(-per_chunk // m) * m

    def total_words(self) -> int:
        return self.plan.total_words()

    def __call__(self, start: Position) -> Iterator[Span]:
        """Spans from `start`: (epoch, span, 0), or under torchrun (epoch, shard chunk, span in it)."""
        m = self.spans_per_chunk
        for epoch, chunk, first in self.plan.chunks(start):
            lo, hi = self.plan.bounds(chunk)
            for i in range(first, m):
                a, b = lo + (hi - lo) * i // m, lo + (hi - lo) * (i + 1) // m
                yield Span(read_ids(self.corpus.ids, a, b), span_starts(self.corpus.offsets, a, b), epoch, chunk,
                           chunk * m + i, self.plan.words_done(epoch, chunk, i, m),
                           self.plan.words_done(epoch, chunk, i + 1, m),
                           (epoch, chunk + 1, 0) if self.shard is None else (epoch, chunk, i + 1), (i + 1) / m)


class SpanPipeline(PipelineBase):
    """The fused kernel behind the loop's step interface (sgns.pipelines.Pipeline): batches are token spans,
    `step` trains one with plain SGD, lr falling linearly across it as the schedule says."""

    name = "span"

    def __init__(self, spans: TokenSpans, model: SGNS, vocab: Vocabulary, window: int, negatives: int,
                 subsample: float, ns_exponent: float, seed: int, threads: int, deterministic: bool,
                 lr_at: Callable[[float], float], window_negatives: bool = True):
        W, C = model.input.weight, model.output.weight
        if W.device.type != "cpu" or W.dtype != torch.float32 or not (W.is_contiguous() and C.is_contiguous()):
            raise SGNSError("the numba kernel trains contiguous float32 CPU weights: use trainer.kernel=torch")
        self.spans, self.lr_at = spans, lr_at
        self.total_words = spans.total_words()
        accept, alias = kernel_alias_table(unigram_table(vocab.counts, ns_exponent))
        for table in (W, C):  # torch's tables are in 4 KiB pages: a big one's rows miss the TLB (docs/kernels.md)
            if table.nbytes >= HUGE_PAGE_TABLE_BYTES:
                advise_huge_pages(table.detach().numpy())
        self.trainer = SpanTrainer(W.detach().numpy(), C.detach().numpy(), vocab.remap(len(spans.corpus.counts)),
                                   keep_probabilities(vocab.counts, subsample), accept, alias, window, negatives,
                                   seed, threads, deterministic=deterministic)
        if not window_negatives:  # data.window_negatives=false: each context draws its own negatives
            self.trainer.variant_flags = PER_CONTEXT

    def batches(self, start: Position) -> Iterator[Span]:
        return self.spans(start)

    def step(self, batch: Span, lr: float) -> float:
        """Train one span; its summed loss (estimated from the sampled windows, see `train_piece`)."""
        lr_end = self.lr_at(batch.words_done / self.total_words)
        loss, loss_pairs, pairs = self.trainer.train_span(batch.ids, batch.starts, batch.epoch, batch.stream, lr,
                                                          lr_end)
        if self.frozen is not None:
            self.frozen.restore()  # a span says no rows: every frozen row
        batch.pairs = pairs
        return loss * pairs / loss_pairs if loss_pairs else 0.0

    def own_state(self) -> dict:
        # No random state to keep: every piece's stream is a function of (seed, epoch, span, piece). Plain SGD
        # has no optimizer state (the key is there as in every checkpoint).
        return {"spans": {"span_tokens": self.spans.span_tokens, "piece_tokens": self.trainer.piece_tokens},
                "optimizer": None}
