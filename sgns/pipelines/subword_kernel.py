"""model=subword's compiled CPU kernel (numba): fastText's skip-gram over a span of token ids, in the SGNS kernel's
mould (sgns.pipelines.span_kernel: its draws, windows, logit gradient and prefetches, and `entry_point`, which
compiles it per model.dim). The center word's input vector is the mean of its rows (its own and its n-grams'
buckets, sgns.subwords.SubwordTable) and predicts each context word against that context's K negatives; every row
of the center gets the pair's full step, as fastText's Model::update gives it.

One entry point, `train_piece_subword` (`subword_piece_kernel(HIDDEN_CARRIED)`); the design study's variants
(docs/kernels.md, "The subword kernel") are the same loop with another `hidden_mode`, compiled only when asked for.
Threads, spans and the pipeline: sgns.pipelines.span.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
from numba import literally, njit

from sgns.pipelines.span_kernel import (
    _DISPATCHERS,
    _GOLDEN,
    _NAMES,
    _U32,
    FASTMATH,
    PieceKernel,
    _mix,
    draw,
    entry_point,
    kept_words,
    logit_grad,
    negative_word,
    prefetch,
    prefetch_draws,
    prefetch_row,
    window_radius,
)

HIDDEN_CARRIED, HIDDEN_PER_PAIR, HIDDEN_WINDOW = 0, 1, 2  # how the subword kernel gets h (subword_piece_kernel)


def subword_piece_kernel(hidden_mode: int) -> PieceKernel:
    """The piece kernel of model=subword (fastText's skip-gram), with `hidden_mode` a constant: HIDDEN_CARRIED is
    `train_piece_subword` (below); the design study's variants (docs/kernels.md, "The subword kernel"):
    HIDDEN_PER_PAIR recomputes h from the rows for every (center, context) pair after adding the last pair's step
    to them, as fastText's loop does (the same update, up to float rounding); HIDDEN_WINDOW takes every pair of a
    window from h and the rows as they were before the window, one batch step on the window's logits (as the SGNS
    kernel's windows), which is not fastText's update.

    fastText's orientation, not word2vec's: the center word's input vector h (the mean of its rows) predicts each
    context word's output row, against K negatives drawn for that context (a negative equal to the context is
    skipped). Each (center, context) pair is one SGD step on its K + 1 logits, all from the rows as they were before
    the pair (a negative drawn twice counts twice); every row entry of the center gets the pair's full step for h,
    as fastText's Model::update gives it. Computing h once per center is exact: adding a step g to each of a word's
    n row entries moves their mean by gain * g, gain = the sum over the entries of how often their row occurs, / n
    (1 without a repeated row; `hidden_gains`), so h is carried from pair to pair and the window's summed step is
    added to the rows once, at its end."""

    recompute_hidden = hidden_mode == HIDDEN_PER_PAIR
    window_batch = hidden_mode == HIDDEN_WINDOW

    @njit(nogil=True, cache=True, fastmath=FASTMATH)
    def piece_kernel(W: np.ndarray, C: np.ndarray, raw: np.ndarray, remap: np.ndarray, starts: np.ndarray,
                     s0: int, s1: int, keep: np.ndarray, accept: np.ndarray, alias: np.ndarray, window: int,
                     negatives: int, lr0: float, lr1: float, state: np.uint64, loss_every: int,
                     offsets: np.ndarray, rows: np.ndarray, gains: np.ndarray,
                     dim: int) -> Tuple[float, int, int, int]:
        """Train on sentences s0..s1-1 of a span; arguments and returns as `_piece_kernel`'s, and the input rows
        of vocabulary word w: rows[offsets[w]:offsets[w + 1]] (sgns.subwords.SubwordTable: its own row, then its
        n-grams' buckets, rows of W), gains[w] its `hidden_gains`. W has a row per word and per bucket, C a row
        per word.

        A window's draws (radius, then each context's K negatives) are taken one center ahead, their output rows
        prefetched as they are drawn; prefetched too (no arithmetic changes): the alias-table lines of the
        negatives two centers ahead (peeked from the stream, as `_piece_kernel` does), the next sentence's remap
        entries, the offsets of the word three centers ahead, the row entries of the word two ahead and the input
        rows of the next center."""
        d = literally(dim)  # a constant: the row loops vectorise without a generic remainder path
        k1 = negatives + 1
        lo, hi = starts[s0], starts[s1]
        span = max(hi - lo, 1)
        longest = 0
        for s in range(s0, s1):
            longest = max(longest, starts[s + 1] - starts[s])
        sen = np.empty(longest, dtype=np.int32)  # the kept words of the current sentence
        # two windows' targets (this center's and the next's): each context word, then its K negatives
        targets = np.empty((2, 2 * window, k1), dtype=np.int32)
        contexts = np.zeros(2, dtype=np.int64)  # each of the two windows' number of contexts
        sampled = np.zeros(2, dtype=np.bool_)  # whether the window's loss is summed
        g = np.empty(k1, dtype=np.float32)  # a pair's alpha * (label - sigmoid(logit)), 0 for a skipped target
        gw = np.empty((2 * window if window_batch else 0, k1), dtype=np.float32)  # HIDDEN_WINDOW: every pair's g
        hidden = np.empty(d, dtype=np.float32)  # h: the mean of the center's rows, as the rows are now
        grad = np.empty(d, dtype=np.float32)  # the pair's step for h: sum of g * the target's row before the pair
        total = np.empty(d, dtype=np.float32)  # the window's pairs' steps, summed, for every row of the center
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
            for i in range(-1, n):
                # 1. the next center's window: its radius, its contexts, each context's negatives, their rows
                # loading; then the alias-table lines of the window after it, peeked without taking the draws
                nxt = i + 1
                if nxt < n:
                    b = nxt & 1
                    state, r = draw(state)
                    radius = window_radius(r, window)
                    sampled[b] = loss_every > 0 and np.int64(r & _U32) % loss_every == 0
                    m = 0
                    for j in range(max(0, nxt - radius), min(n, nxt + radius + 1)):
                        if j != nxt:
                            targets[b, m, 0] = sen[j]
                            prefetch_row(C, sen[j], d)
                            m += 1
                    contexts[b] = m
                    for a in range(m):
                        for k in range(1, k1):
                            state, r = draw(state)
                            targets[b, a, k] = negative_word(r, accept, alias)
                            prefetch_row(C, targets[b, a, k], d)
                    if nxt + 1 < n:
                        after = nxt + 1
                        r = _mix(state + _GOLDEN)
                        radius = window_radius(r, window)
                        m = min(n, after + radius + 1) - max(0, after - radius) - 1
                        prefetch_draws(accept, alias, state, 1, m * negatives)
                if i < 0:
                    continue
                # 2. the rows ahead: offsets three centers on, row entries two on, input rows of the next center
                center = sen[i]
                first, last = offsets[center], offsets[center + 1]
                if i + 3 < n:
                    prefetch(offsets, sen[i + 3])
                if i + 2 < n:
                    w2 = sen[i + 2]
                    for e in range(offsets[w2], offsets[w2 + 1], 16):  # one call per 64-byte line
                        prefetch(rows, e)
                if i + 1 < n:
                    w1 = sen[i + 1]
                    for e in range(offsets[w1], offsets[w1 + 1]):
                        prefetch_row(W, rows[e], d)
                b = i & 1
                m = contexts[b]
                if m == 0:
                    continue
                with_loss = sampled[b]
                # 3. the window: one step per (center, context) pair
                gain = gains[center]
                for t in range(d):
                    total[t] = 0.0
                for a in range(m):
                    if recompute_hidden and a > 0:  # the study's variant: the last pair's step into the rows now
                        for e in range(first, last):
                            we = W[rows[e]]
                            for t in range(d):
                                we[t] += grad[t]
                    if a == 0 or recompute_hidden:  # h = the mean of the rows, two rows a pass
                        w0 = W[rows[first]]
                        e = first + 1
                        if e < last:
                            w1 = W[rows[e]]
                            for t in range(d):
                                hidden[t] = w0[t] + w1[t]
                            e += 1
                        else:
                            for t in range(d):
                                hidden[t] = w0[t]
                        while e + 1 < last:
                            w0 = W[rows[e]]
                            w1 = W[rows[e + 1]]
                            for t in range(d):
                                hidden[t] += w0[t] + w1[t]
                            e += 2
                        if e < last:
                            w0 = W[rows[e]]
                            for t in range(d):
                                hidden[t] += w0[t]
                        scale = np.float32(1.0) / np.float32(last - first)
                        for t in range(d):
                            hidden[t] *= scale
                    if window_batch:  # the study's variant: the window's logits, then h's step, then the rows'
                        for a2 in range(m):
                            ta = targets[b, a2]
                            for k in range(0, k1, 2):
                                k2 = min(k + 1, k1 - 1)
                                c0 = C[ta[k]]
                                c1 = C[ta[k2]]
                                x0 = np.float32(0.0)
                                x1 = np.float32(0.0)
                                for t in range(d):
                                    x0 += hidden[t] * c0[t]
                                    x1 += hidden[t] * c1[t]
                                g0, l_ = logit_grad(x0, k == 0, alpha, with_loss)
                                skip = k > 0 and ta[k] == ta[0]
                                gw[a2, k] = 0.0 if skip else g0
                                loss += 0.0 if skip else l_
                                logits += 0 if skip else 1
                                if k2 != k:
                                    g0, l_ = logit_grad(x1, False, alpha, with_loss)
                                    skip = ta[k2] == ta[0]
                                    gw[a2, k2] = 0.0 if skip else g0
                                    loss += 0.0 if skip else l_
                                    logits += 0 if skip else 1
                        for a2 in range(m):
                            ta = targets[b, a2]
                            for k in range(0, k1, 2):
                                k2 = min(k + 1, k1 - 1)
                                g0 = gw[a2, k]
                                g1 = gw[a2, k2] if k2 != k else np.float32(0.0)
                                c0 = C[ta[k]]
                                c1 = C[ta[k2]]
                                for t in range(d):
                                    total[t] += g0 * c0[t] + g1 * c1[t]
                        for a2 in range(m):
                            ta = targets[b, a2]
                            for k in range(0, k1, 2):
                                k2 = min(k + 1, k1 - 1)
                                g0 = gw[a2, k]
                                g1 = gw[a2, k2] if k2 != k else np.float32(0.0)
                                c0 = C[ta[k]]
                                c1 = C[ta[k2]]
                                for t in range(d):
                                    c0[t] += g0 * hidden[t]
                                    c1[t] += g1 * hidden[t]
                        break
                    ta = targets[b, a]
                    # the K + 1 logits, two rows a pass
                    for k in range(0, k1, 2):
                        k2 = min(k + 1, k1 - 1)
                        c0 = C[ta[k]]
                        c1 = C[ta[k2]]
                        x0 = np.float32(0.0)
                        x1 = np.float32(0.0)
                        for t in range(d):
                            x0 += hidden[t] * c0[t]
                            x1 += hidden[t] * c1[t]
                        g0, l_ = logit_grad(x0, k == 0, alpha, with_loss)
                        skip = k > 0 and ta[k] == ta[0]  # word2vec skips a negative equal to the positive word
                        g[k] = 0.0 if skip else g0
                        loss += 0.0 if skip else l_
                        logits += 0 if skip else 1
                        if k2 != k:
                            g0, l_ = logit_grad(x1, False, alpha, with_loss)
                            skip = ta[k2] == ta[0]
                            g[k2] = 0.0 if skip else g0
                            loss += 0.0 if skip else l_
                            logits += 0 if skip else 1
                    # a negative drawn again: its step joins its first draw's, so a row is stepped once a pass
                    for k in range(2, k1):
                        for j in range(1, k):
                            if ta[j] == ta[k] and g[k] != 0.0:
                                g[j] += g[k]
                                g[k] = 0.0
                    # h's step from the rows before the pair, and the rows' steps from h, two rows a pass
                    for k in range(0, k1, 2):
                        k2 = min(k + 1, k1 - 1)
                        g0 = g[k]
                        g1 = g[k2] if k2 != k else np.float32(0.0)
                        c0 = C[ta[k]]
                        c1 = C[ta[k2]]
                        if k == 0:
                            for t in range(d):
                                grad[t] = g0 * c0[t] + g1 * c1[t]
                                c0[t] += g0 * hidden[t]
                                c1[t] += g1 * hidden[t]
                        else:
                            for t in range(d):
                                grad[t] += g0 * c0[t] + g1 * c1[t]
                                c0[t] += g0 * hidden[t]
                                c1[t] += g1 * hidden[t]
                    if not recompute_hidden:
                        for t in range(d):
                            hidden[t] += gain * grad[t]
                            total[t] += grad[t]
                step = grad if recompute_hidden else total
                for e in range(first, last):  # every row entry of the center gets the full step (fastText's)
                    we = W[rows[e]]
                    for t in range(d):
                        we[t] += step[t]
                pairs += m
                if with_loss:
                    loss_pairs += m
        return loss, loss_pairs, pairs, logits

    return piece_kernel


@njit(nogil=True, cache=True)
def hidden_gains(offsets: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Per word, how far the mean of its rows moves when each of its row entries gets a step g, in units of g: the
    sum over its entries of how often their row occurs, over the number of entries (1.0 without a repeated row;
    "banana" repeats "ana", and two n-grams may share a bucket). float32, one per word."""
    n_words = len(offsets) - 1
    gains = np.ones(n_words, dtype=np.float32)
    for w in range(n_words):
        a, b = offsets[w], offsets[w + 1]
        if b - a < 2:
            continue
        entries = np.sort(rows[a:b])
        squares, run = 0, 1
        for e in range(1, b - a):
            if entries[e] == entries[e - 1]:
                run += 1
            else:
                squares += run * run
                run = 1
        squares += run * run
        gains[w] = np.float32(squares / (b - a))
    return gains


_SUBWORD = subword_piece_kernel(HIDDEN_CARRIED)  # the numba dispatcher


def train_piece_subword(*args):  # type: ignore[no-untyped-def]
    """`train_piece` for model=subword: the center's rows (offsets, rows, gains before dim) predict each context with
    its own K negatives (`subword_piece_kernel`)."""
    return entry_point(train_piece_subword, int(args[-1]))(*args)


_DISPATCHERS[train_piece_subword] = _SUBWORD
_NAMES[train_piece_subword] = "train_piece_subword"
