"""Study-only variants of the span kernel's window update (docs/kernel_quality.md), for
scripts/studies/kernel_variants_study.py: not part of sgns.

A variant is a bit set `flags` of this module's PER_CONTEXT_NEGATIVES, SEQUENTIAL, PER_WORD_LR, FUSED and
PER_CONTEXT_BATCH. The study owns its kernel: `_train_piece_variant` is the product's loop over sentences, draws
and windows (sgns.pipelines.span_kernel's `_train_piece`: the same draws, prefetches and lr, in the same order)
written again from the kernel's public helpers, with the window update and lr as `flags` say. At PER_CONTEXT
it calls the product's own `window_per_context`, and tests/test_numba_kernels.py checks that it then trains
bit for bit as the product's `train_piece_per_context`: the copy cannot drift from the product's loop
unnoticed, and nothing in sgns is swapped or patched. Use it through a `SpanTrainer`:
`SpanTrainer(..., kernel=variant_kernel(flags))`, or set `trainer.kernel`.
"""

from __future__ import annotations

from functools import cache
from typing import Tuple

import numpy as np
from numba import literally, njit

from sgns.pipelines.span_kernel import (
    FASTMATH,
    PieceKernel,
    draw,
    kept_words,
    logit_grad,
    negative_word,
    prefetch,
    prefetch_draws,
    prefetch_row,
    window_per_context,
    window_radius,
)

PER_CONTEXT_NEGATIVES = 1  # each (context, center) pair draws its own K negatives (word2vec) instead of one per window
SEQUENTIAL = 2  # word2vec's exact order: pair by pair, each output row stepped before the next logit is taken
PER_WORD_LR = 4  # lr decays per center word, not per sentence
FUSED = 8  # with SEQUENTIAL: each pair's K + 1 logits first, then one pass steps its output rows (`_pair_step`)
PER_CONTEXT_BATCH = 16  # PER_CONTEXT_NEGATIVES, row passes taken two rows at a time: the product's window_per_context
PER_CONTEXT = PER_CONTEXT_NEGATIVES | PER_CONTEXT_BATCH  # what data.window_negatives=false trains
_LOW32 = np.uint64(0xFFFFFFFF)


@njit(nogil=True, inline="always", fastmath=FASTMATH)
def _pair_step(W: np.ndarray, C: np.ndarray, word: int, targets: np.ndarray, g: np.ndarray, k1: int,
               alpha: np.float32, with_loss: bool, da: np.ndarray, d: int) -> Tuple[float, int]:
    """Word2vec's step for one (context `word`, center targets[0]) pair with negatives targets[1:]: the K + 1
    logits of W[word] from the output rows as they are, then one pass that sums W[word]'s step from the old
    output rows and steps them, then W[word] moves. A negative equal to the center is skipped. Rows are taken
    two at a time (an odd last one with itself, its second gradient 0); two equal rows of a pass take the sum
    of their gradients once. Returns (loss if with_loss, logits)."""
    wa = W[word]
    center = targets[0]
    loss = 0.0
    logits = 0
    for k in range(0, k1, 2):
        k2 = min(k + 1, k1 - 1)
        c0 = C[targets[k]]
        c1 = C[targets[k2]]
        x0 = np.float32(0.0)
        x1 = np.float32(0.0)
        for t in range(d):
            x0 += wa[t] * c0[t]
            x1 += wa[t] * c1[t]
        g0, l_ = logit_grad(x0, k == 0, alpha, with_loss)
        skip = k > 0 and targets[k] == center
        g[k] = 0.0 if skip else g0
        loss += 0.0 if skip else l_
        logits += 0 if skip else 1
        if k2 != k:
            g1, l_ = logit_grad(x1, False, alpha, with_loss)
            skip = targets[k2] == center
            g[k2] = 0.0 if skip else g1
            loss += 0.0 if skip else l_
            logits += 0 if skip else 1
    for k in range(0, k1, 2):
        k2 = min(k + 1, k1 - 1)
        g0 = g[k]
        g1 = g[k2] if k2 != k else np.float32(0.0)
        c0 = C[targets[k]]
        c1 = C[targets[k2]]
        if targets[k] == targets[k2]:
            g0 += g1
            for t in range(d):
                old = c0[t]
                da[t] = (da[t] if k > 0 else np.float32(0.0)) + g0 * old
                c0[t] = old + g0 * wa[t]
        else:
            for t in range(d):
                o0 = c0[t]
                o1 = c1[t]
                da[t] = (da[t] if k > 0 else np.float32(0.0)) + g0 * o0 + g1 * o1
                c0[t] = o0 + g0 * wa[t]
                c1[t] = o1 + g1 * wa[t]
    for t in range(d):
        wa[t] += da[t]
    return loss, logits


@njit(nogil=True, inline="always", fastmath=FASTMATH)
def _window_variant(W: np.ndarray, C: np.ndarray, ctx: np.ndarray, m: int, out: np.ndarray, negs: np.ndarray,
                    grad: np.ndarray, dw: np.ndarray, accept: np.ndarray, alias: np.ndarray, k1: int,
                    alpha: np.float32, with_loss: bool, flags: int, state: np.uint64,
                    d: int) -> Tuple[np.uint64, float, int]:
    """One window's update as `flags` says (see PER_CONTEXT_NEGATIVES, SEQUENTIAL): (next state, loss, logits)."""
    center = out[0]
    if flags & PER_CONTEXT_BATCH:
        return window_per_context(W, C, ctx, m, center, negs, grad, dw, accept, alias, k1, alpha, with_loss,
                                  state, d)
    for a in range(m):
        for k in range(k1):
            if k > 0 and flags & PER_CONTEXT_NEGATIVES:
                state, r = draw(state)
                negs[a, k] = negative_word(r, accept, alias)
            else:
                negs[a, k] = out[k]
    loss = 0.0
    logits = 0
    if flags & FUSED:
        for a in range(m):
            l_, x_ = _pair_step(W, C, ctx[a], negs[a], grad[a], k1, alpha, with_loss, dw[a], d)
            loss += l_
            logits += x_
        return state, loss, logits
    if flags & SEQUENTIAL:  # word2vec: for each context, each target's logit from the rows as they are now
        for a in range(m):
            wa = W[ctx[a]]
            da = dw[a]
            for t in range(d):
                da[t] = 0.0
            for k in range(k1):
                target = negs[a, k]
                if k > 0 and target == center:
                    continue
                co = C[target]
                x = np.float32(0.0)
                for t in range(d):
                    x += wa[t] * co[t]
                g, l_ = logit_grad(x, k == 0, alpha, with_loss)
                loss += l_
                logits += 1
                for t in range(d):
                    da[t] += g * co[t]
                for t in range(d):
                    co[t] += g * wa[t]
            for t in range(d):
                wa[t] += da[t]
        return state, loss, logits
    for a in range(m):  # one batch step from the weights before the window
        wa = W[ctx[a]]
        for k in range(k1):
            co = C[negs[a, k]]
            x = np.float32(0.0)
            for t in range(d):
                x += wa[t] * co[t]
            g, l_ = logit_grad(x, k == 0, alpha, with_loss)
            skip = k > 0 and negs[a, k] == center
            grad[a, k] = 0.0 if skip else g
            loss += 0.0 if skip else l_
            logits += 0 if skip else 1
    for a in range(m):
        da = dw[a]
        for t in range(d):
            da[t] = 0.0
        for k in range(k1):
            g = grad[a, k]
            co = C[negs[a, k]]
            for t in range(d):
                da[t] += g * co[t]
    for a in range(m):
        wa = W[ctx[a]]
        for k in range(k1):
            g = grad[a, k]
            co = C[negs[a, k]]
            for t in range(d):
                co[t] += g * wa[t]
    for a in range(m):
        wa = W[ctx[a]]
        da = dw[a]
        for t in range(d):
            wa[t] += da[t]
    return state, loss, logits


@njit(nogil=True, inline="always")
def _per_word_lr(alpha: np.float32, flags: int, lr0: float, lr1: float, into_span: float, i: int, n: int,
                 sentence: int, span: int) -> np.float32:
    """With PER_WORD_LR, the lr at center i of n kept words of a sentence `sentence` positions long starting
    `into_span` positions into the piece; otherwise the sentence's `alpha`."""
    if flags & PER_WORD_LR:
        return np.float32(lr0 + (lr1 - lr0) * (into_span + i * sentence / n) / span)
    return alpha


@njit(nogil=True, fastmath=FASTMATH)
def _train_piece_variant(W: np.ndarray, C: np.ndarray, raw: np.ndarray, remap: np.ndarray, starts: np.ndarray,
                         s0: int, s1: int, keep: np.ndarray, accept: np.ndarray, alias: np.ndarray, window: int,
                         negatives: int, lr0: float, lr1: float, state: np.uint64, loss_every: int, d: int,
                         flags: int) -> Tuple[float, int, int, int]:
    """The product's `_train_piece` (same arguments, same returns), every window updated by `_window_variant`
    with `flags` at the lr `_per_word_lr` gives. Keep it step for step with the product's loop: the test of
    PER_CONTEXT against `train_piece_per_context` guards it."""
    k1 = negatives + 1
    lo, hi = starts[s0], starts[s1]
    span = max(hi - lo, 1)
    longest = 0
    for s in range(s0, s1):
        longest = max(longest, starts[s + 1] - starts[s])
    sen = np.empty(longest, dtype=np.int32)
    ctx = np.empty(2 * window, dtype=np.int32)
    out = np.empty(k1, dtype=np.int32)  # center word, then the window's shared negatives
    ahead = np.empty(k1, dtype=np.int32)
    grad = np.empty((2 * window, k1), dtype=np.float32)
    dw = np.empty((2 * window, d), dtype=np.float32)
    negs = np.empty((2 * window, k1), dtype=np.int32)  # each context's output rows
    loss = 0.0
    loss_pairs = 0
    pairs = 0
    logits = 0
    for s in range(s0, s1):
        n, state = kept_words(raw, remap, keep, starts[s], starts[s + 1], sen, state)
        if s + 1 < s1:
            for p in range(starts[s + 1], starts[s + 2]):
                prefetch(remap, raw[p])
        alpha = np.float32(lr0 + (lr1 - lr0) * (starts[s] - lo) / span)
        for k in range(1, k1):
            state, r = draw(state)
            ahead[k] = negative_word(r, accept, alias)
        for i in range(n):
            center = sen[i]
            out[0] = center
            for k in range(1, k1):
                out[k] = ahead[k]
            if i == n // 2 and s + 1 < s1:
                for p in range(starts[s + 1], starts[s + 2]):
                    w = remap[raw[p]]
                    if w >= 0:
                        prefetch(keep, w)
            if flags == 0 and i + 2 < n:
                prefetch_draws(accept, alias, state, k1, negatives)
            if i + 1 < n:
                for k in range(1, k1):
                    state, r = draw(state)
                    ahead[k] = negative_word(r, accept, alias)
                    prefetch_row(C, ahead[k], d)
                prefetch_row(C, sen[i + 1], d)
                if i + 1 + window < n:
                    prefetch_row(W, sen[i + 1 + window], d)
            state, r = draw(state)
            radius = window_radius(r, window)
            with_loss = loss_every > 0 and np.int64(r & _LOW32) % loss_every == 0
            m = 0
            for j in range(max(0, i - radius), min(n, i + radius + 1)):
                if j != i:
                    ctx[m] = sen[j]
                    m += 1
            if m == 0:
                continue
            alpha = _per_word_lr(alpha, flags, lr0, lr1, starts[s] - lo, i, n, starts[s + 1] - starts[s], span)
            state, l_, x_ = _window_variant(W, C, ctx, m, out, negs, grad, dw, accept, alias, k1, alpha, with_loss,
                                            flags, state, d)
            loss += l_
            logits += x_
            pairs += m
            if with_loss:
                loss_pairs += m
    return loss, loss_pairs, pairs, logits


@cache
def variant_kernel(flags: int) -> PieceKernel:
    """The study kernel for `flags`, with `train_piece`'s signature (a `SpanTrainer`'s `kernel`); not cached on
    disk (compiled once per process, flags and dim)."""

    @njit(nogil=True)
    def train_piece_variant(W: np.ndarray, C: np.ndarray, raw: np.ndarray, remap: np.ndarray, starts: np.ndarray,
                            s0: int, s1: int, keep: np.ndarray, accept: np.ndarray, alias: np.ndarray,
                            window: int, negatives: int, lr0: float, lr1: float, state: np.uint64,
                            loss_every: int, dim: int) -> Tuple[float, int, int, int]:
        return _train_piece_variant(W, C, raw, remap, starts, s0, s1, keep, accept, alias, window, negatives, lr0,
                                    lr1, state, loss_every, literally(dim), flags)

    return train_piece_variant
