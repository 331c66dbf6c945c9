"""Study-only variants of the span kernel's window update (docs/kernel_quality.md), for
scripts/kernel_variants_study.py: not part of sgns.

Each variant is a bit set `flags` (`SpanTrainer.variant_flags`): sgns.pipelines.span's PER_CONTEXT_NEGATIVES and
PER_CONTEXT_BATCH, and SEQUENTIAL, PER_WORD_LR, FUSED here. The study kernel is the product's `_train_piece`
compiled again with this module's `_window_variant` and `_per_word_lr` in place of its `_window_flagged` and
`_center_lr` hooks, so the loop over sentences, draws and windows is the product's own. Use it through a
`SpanTrainer`: `trainer.variant_kernel = train_piece_variant; trainer.variant_flags = flags`.
"""

from __future__ import annotations

import types as pytypes
from typing import Tuple

import numpy as np
from numba import njit

from sgns.pipelines import span
from sgns.pipelines.span import (
    _FAST,
    PER_CONTEXT_BATCH,
    PER_CONTEXT_NEGATIVES,
    _draw,
    _logit_grad,
    _negative,
    _window_per_context,
)

SEQUENTIAL = 2  # word2vec's exact order: pair by pair, each output row stepped before the next logit is taken
PER_WORD_LR = 4  # lr decays per center word, not per sentence
FUSED = 8  # with SEQUENTIAL: each pair's K + 1 logits first, then one pass steps its output rows (`_pair_step`)


@njit(nogil=True, inline="always", fastmath=_FAST)
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
        g0, l_ = _logit_grad(x0, k == 0, alpha, with_loss)
        skip = k > 0 and targets[k] == center
        g[k] = 0.0 if skip else g0
        loss += 0.0 if skip else l_
        logits += 0 if skip else 1
        if k2 != k:
            g1, l_ = _logit_grad(x1, False, alpha, with_loss)
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


@njit(nogil=True, inline="always", fastmath=_FAST)
def _window_variant(W: np.ndarray, C: np.ndarray, ctx: np.ndarray, m: int, out: np.ndarray, negs: np.ndarray,
                    grad: np.ndarray, dw: np.ndarray, accept: np.ndarray, alias: np.ndarray, k1: int,
                    alpha: np.float32, with_loss: bool, flags: int, state: np.uint64,
                    d: int) -> Tuple[np.uint64, float, int]:
    """One window's update as `flags` says (see PER_CONTEXT_NEGATIVES, SEQUENTIAL): (next state, loss, logits)."""
    center = out[0]
    if flags & PER_CONTEXT_BATCH:
        return _window_per_context(W, C, ctx, m, center, negs, grad, dw, accept, alias, k1, alpha, with_loss,
                                   state, d)
    for a in range(m):
        for k in range(k1):
            if k > 0 and flags & PER_CONTEXT_NEGATIVES:
                state, r = _draw(state)
                negs[a, k] = _negative(r, accept, alias)
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
                g, l_ = _logit_grad(x, k == 0, alpha, with_loss)
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
            g, l_ = _logit_grad(x, k == 0, alpha, with_loss)
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


def _with_hooks(kernel, **hooks):  # type: ignore[no-untyped-def]
    """A numba kernel of sgns.pipelines.span compiled again from its Python body with some of the globals it
    calls replaced by `hooks` (not cached: numba's cache would key it like the product's)."""
    fn = kernel.py_func
    clone = pytypes.FunctionType(fn.__code__, dict(fn.__globals__, **hooks), fn.__name__, fn.__defaults__,
                                 fn.__closure__)
    return njit(nogil=True, fastmath=kernel.targetoptions.get("fastmath", False))(clone)


# span.train_piece_variant, its loop with the study's window update and lr
train_piece_variant = _with_hooks(
    span.train_piece_variant,
    _train_piece=_with_hooks(span._train_piece, _window_flagged=_window_variant, _center_lr=_per_word_lr))
