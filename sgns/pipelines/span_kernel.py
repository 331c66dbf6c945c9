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
(tests/test_numba_kernels.py checks it against the nn.Module reference).

Two entry points, one loop (`_piece_kernel`'s, compiled per model.dim as a constant): `train_piece`, the
window's shared negatives (the default), and `train_piece_per_context` (data.window_negatives=false), where each
context draws its own K negatives (word2vec's draws, the same batch step; `window_per_context`). `entry_point`
hands either out compiled for a dim, as a directly callable entry point, announcing a compile (sgns.compiling).
Threads, spans and the pipeline: sgns.pipelines.span.

The public helpers (draws, windows, the logit gradient, prefetches) are the building blocks that
scripts/studies/kernel_variants.py's study kernel is made of.
"""

from __future__ import annotations

import inspect
import math
from typing import Callable, Dict, Optional, Tuple

import numpy as np
from llvmlite import ir
from numba import literally, njit, typeof, types
from numba.core import cgutils
from numba.extending import intrinsic

from sgns.compiling import announce_compile, has_cached_code
from sgns.pipelines.negatives import alias_table

# Reassociation lets LLVM vectorise the dot products; the compiled code is fixed, so one machine gives
# bit-identical results run to run. Each entry point holds the whole loop itself (no separately compiled callee):
# one made a process that compiled give other bits than one that loaded numba's cache (docs/kernel_quality.md).
FASTMATH = {"reassoc", "contract", "nsz", "arcp"}

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
def draw(state: np.uint64) -> Tuple[np.uint64, np.uint64]:
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
def kept_words(raw: np.ndarray, remap: np.ndarray, keep: np.ndarray, lo: int, hi: int, sen: np.ndarray,
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
            state, r = draw(state)
            if (r >> _S32) * _TO_UNIT >= kp:
                continue
        sen[n] = w
        n += 1
    return n, state


@njit(nogil=True, cache=True, inline="always")
def window_radius(r: np.uint64, window: int) -> int:
    """A window radius uniform in [1, window] from 64 random bits (the high 32, scaled: no modulo bias
    beyond 2^-32)."""
    return 1 + np.int64(((r >> _S32) * np.uint64(window)) >> _S32)


@njit(nogil=True, cache=True, inline="always")
def _slot(r: np.uint64, n: int) -> int:
    """An alias-table slot in [0, n) from the high 32 bits of r."""
    return np.int64(((r >> _S32) * np.uint64(n)) >> _S32)


@njit(nogil=True, cache=True, inline="always")
def negative_word(r: np.uint64, accept: np.ndarray, alias: np.ndarray) -> int:
    """A draw from the alias table: the high 32 bits pick a slot, the low 32 bits its coin."""
    slot = _slot(r, len(accept))
    return slot if np.int64(r & _U32) < accept[slot] else np.int64(alias[slot])


@njit(nogil=True, cache=True, inline="always", fastmath=FASTMATH)
def logit_grad(x: np.float32, positive: bool, alpha: np.float32, with_loss: bool) -> Tuple[np.float32, float]:
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
def prefetch(typingctx, vector, i):  # type: ignore[no-untyped-def]
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
def prefetch_row(matrix: np.ndarray, row: int, d: int) -> None:
    line = matrix[row]
    for col in range(0, d, 16):  # one call per 64-byte line
        prefetch(line, col)


@njit(nogil=True, cache=True, inline="always", fastmath=FASTMATH)
def window_per_context(W: np.ndarray, C: np.ndarray, ctx: np.ndarray, m: int, center: int, negs: np.ndarray,
                        grad: np.ndarray, dw: np.ndarray, accept: np.ndarray, alias: np.ndarray, k1: int,
                        alpha: np.float32, with_loss: bool, state: np.uint64,
                        d: int) -> Tuple[np.uint64, float, int]:
    """One window, each context with its own K negatives: a batch SGD step on the window's m * (K + 1) logits,
    all from the weights before the window. Returns (next state, loss if with_loss, logits)."""
    for a in range(m):  # all draws first, each row's load started at once: the misses overlap
        negs[a, 0] = center
        for k in range(1, k1):
            state, r = draw(state)
            negs[a, k] = negative_word(r, accept, alias)
            prefetch_row(C, negs[a, k], d)
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
            g, l_ = logit_grad(x0, k == 0, alpha, with_loss)
            skip = k > 0 and na[k] == center
            grad[a, k] = 0.0 if skip else g
            loss += 0.0 if skip else l_
            logits += 0 if skip else 1
            if k2 != k:
                g, l_ = logit_grad(x1, False, alpha, with_loss)
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
def prefetch_draws(accept: np.ndarray, alias: np.ndarray, state: np.uint64, skip: int, count: int) -> None:
    """Start loading the alias-table lines of the `count` negatives drawn after the next `skip` draws, without
    taking those draws: splitmix64 is a counter, so draw j after `state` is _mix(state + j * golden)."""
    for j in range(skip + 1, skip + count + 1):
        r = _mix(state + np.uint64(j) * _GOLDEN)
        slot = _slot(r, len(accept))
        prefetch(accept, slot)
        prefetch(alias, slot)


def _piece_kernel(per_context: bool) -> PieceKernel:
    """The piece kernel with `per_context` a constant: `train_piece` (False) or `train_piece_per_context` (True).

    A closure, not an `inline="always"` function called by two entry points: numba inlines by deep-copying the
    callee's IR block by block, each copy taking the whole scope along, which made a cold compile 2.5x longer
    (docs/startup.md, "First-run compiles"). numba caches each closure under a hash of its cell (`per_context`).
    `dim` is compiled as a constant (`entry_point` asks for it literal): the row loops then vectorise without a
    generic remainder path."""

    @njit(nogil=True, cache=True, fastmath=FASTMATH)
    def piece_kernel(W: np.ndarray, C: np.ndarray, raw: np.ndarray, remap: np.ndarray, starts: np.ndarray,
                     s0: int, s1: int, keep: np.ndarray, accept: np.ndarray, alias: np.ndarray, window: int,
                     negatives: int, lr0: float, lr1: float, state: np.uint64,
                     loss_every: int, dim: int) -> Tuple[float, int, int, int]:
        """Train on sentences s0..s1-1 of a span; returns (summed loss of the sampled windows, their positive
        pairs, all positive pairs, logits computed).

        raw: the span's token ids in corpus (first-seen) order; remap: corpus id -> vocabulary id or -1.
        starts: sentence start offsets within the span, plus the span length at the end.
        keep: per-word keep probability (float32); accept/alias: Walker's alias table of the negative
        distribution (accept as a threshold in [0, 2^32] in an int64 array). lr falls linearly from lr0 to lr1
        over the piece. The loss (a log per logit) is summed over a random 1 in `loss_every` windows (0: none),
        an unbiased sample for the logged mean. per_context: each context draws its own negatives
        (`window_per_context`) instead of sharing the window's.

        Rows and table lines are prefetched ahead of use (docs/kernels.md, "A big vocabulary"): the next
        sentence's remap and keep entries, the alias-table lines of the negatives two centers ahead, the output
        rows of the next center and of its negatives, the input row of the word entering the next window.
        Prefetches change no arithmetic.
        """
        d = literally(dim)  # a constant: the row loops vectorise without a generic remainder path
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
        negs = np.empty((2 * window if per_context else 0, k1), dtype=np.int32)  # each context's output rows
        loss = 0.0
        loss_pairs = 0
        pairs = 0
        logits = 0
        for s in range(s0, s1):
            # 1. the sentence's kept words; the next sentence's remap entries start loading
            n, state = kept_words(raw, remap, keep, starts[s], starts[s + 1], sen, state)
            if s + 1 < s1:
                for p in range(starts[s + 1], starts[s + 2]):
                    prefetch(remap, raw[p])
            alpha = np.float32(lr0 + (lr1 - lr0) * (starts[s] - lo) / span)
            for k in range(1, k1):
                state, r = draw(state)
                ahead[k] = negative_word(r, accept, alias)
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
                            prefetch(keep, w)
                if not per_context and i + 2 < n:  # the center after next's negatives: after this center's k1 draws
                    prefetch_draws(accept, alias, state, k1, negatives)
                if i + 1 < n:
                    for k in range(1, k1):
                        state, r = draw(state)
                        ahead[k] = negative_word(r, accept, alias)
                        prefetch_row(C, ahead[k], d)
                    prefetch_row(C, sen[i + 1], d)
                    if i + 1 + window < n:
                        prefetch_row(W, sen[i + 1 + window], d)
                # 3. the window: radius uniform in [1, window]
                state, r = draw(state)
                radius = window_radius(r, window)
                with_loss = loss_every > 0 and np.int64(r & _U32) % loss_every == 0
                m = 0
                for j in range(max(0, i - radius), min(n, i + radius + 1)):
                    if j != i:
                        ctx[m] = sen[j]
                        m += 1
                if m == 0:
                    continue
                if per_context:
                    state, l_, x_ = window_per_context(W, C, ctx, m, center, negs, grad, dw, accept, alias, k1, alpha,
                                                       with_loss, state, d)
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
                        g, l_ = logit_grad(x0, k == 0, alpha, with_loss)
                        skip = k > 0 and out[k] == center  # word2vec skips a negative equal to the center
                        grad[a, k] = 0.0 if skip else g
                        loss += 0.0 if skip else l_
                        logits += 0 if skip else 1
                        if k2 != k:
                            g, l_ = logit_grad(x1, False, alpha, with_loss)
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

    return piece_kernel


_SHARED_NEGATIVES, _PER_CONTEXT = _piece_kernel(False), _piece_kernel(True)  # the numba dispatchers


def train_piece(*args):  # type: ignore[no-untyped-def]
    """Train on sentences s0..s1-1 of a span, the contexts of a window sharing one draw of negatives (arguments and
    returns: `_piece_kernel`), through `entry_point` for the last argument, dim: a plain call to the dispatcher
    would type the whole loop to find the literal dim, about a second a call."""
    return entry_point(train_piece, int(args[-1]))(*args)


def train_piece_per_context(*args):  # type: ignore[no-untyped-def]
    """`train_piece` with each context drawing its own negatives (data.window_negatives=false)."""
    return entry_point(train_piece_per_context, int(args[-1]))(*args)


# an entry function -> its numba dispatcher and its name in compile announcements (sgns.pipelines.subword_kernel
# adds train_piece_subword's)
_DISPATCHERS = {train_piece: _SHARED_NEGATIVES, train_piece_per_context: _PER_CONTEXT}
_NAMES = {train_piece: "train_piece", train_piece_per_context: "train_piece_per_context"}


def kernel_alias_table(probs: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """The alias table of `probs` as the kernel reads it: (accept threshold as an integer in [0, 2^32], int32
    alias index)."""
    accept, alias = alias_table(probs)
    return np.minimum(np.round(accept * 4294967296.0), 4294967296.0).astype(np.int64), alias.astype(np.int32)


PieceKernel = Callable[..., Tuple[float, int, int, int]]  # train_piece's signature
_ENTRY_POINTS: Dict[Tuple[PieceKernel, int], PieceKernel] = {}  # (kernel, dim) -> its compiled entry point


def reads_subwords(kernel: PieceKernel) -> bool:
    """Whether a piece kernel (entry point or dispatcher) is model=subword's: it takes the table of rows (offsets,
    rows, gains) before dim."""
    dispatcher = _DISPATCHERS.get(kernel, kernel)
    return "offsets" in inspect.signature(getattr(dispatcher, "py_func", dispatcher)).parameters


def compiled_train_piece(dim: int, per_context: bool = False) -> PieceKernel:
    """`train_piece`, or `train_piece_per_context` if `per_context`, compiled for `dim` as a directly callable
    entry point (see `entry_point`)."""
    return entry_point(train_piece_per_context if per_context else train_piece, dim)


def entry_point(kernel: PieceKernel, dim: int, say: Optional[Callable[[str], None]] = None) -> PieceKernel:
    """`kernel` (a numba dispatcher of `train_piece`'s signature) compiled for `dim`, as a directly callable
    entry point; if that means compiling (not in numba's cache), `say` (default: the "sgns" log) announces it
    first. The pipeline asks for it at setup, so the training loop never times a compile.

    Through the dispatcher, every call with `dim` as a plain int would go through numba's literal-argument
    resolution again (about 6 ms a call, measured; seconds once the loop is typed first); the entry point of
    the compiled overload costs about 2 us. The signature is given with `dim` already literal, so numba's cache
    is looked up directly."""
    entry = _ENTRY_POINTS.get((kernel, dim))
    if entry is None:
        W = np.zeros((1, dim), dtype=np.float32)
        args = (W, W.copy(), np.zeros(1, np.int32), np.zeros(1, np.int32), np.array([0, 1], np.int64), 0, 0,
                np.ones(1, np.float32), np.ones(1, np.int64), np.zeros(1, np.int32), 1, 1, 0.0, 0.0, np.uint64(0), 0)
        dispatcher = _DISPATCHERS.get(kernel, kernel)
        subword = reads_subwords(dispatcher)
        if subword:  # offsets, rows, gains
            args += (np.array([0, 1], np.int64), np.zeros(1, np.int32), np.ones(1, np.float32))
        signature = tuple(typeof(a) for a in args) + (types.literal(dim),)
        seed_signature = (types.int64,) * 4
        if not (has_cached_code(dispatcher, signature) and has_cached_code(piece_seed, seed_signature)):
            name = _NAMES.get(kernel, "train_piece_subword" if subword else "train_piece")
            announce_compile(f"the training kernel ({name}) for model.dim={dim}", [dispatcher], "3-10 s", say)
        piece_seed.compile(seed_signature)
        entry = dispatcher.compile(signature)  # loads from numba's cache, else compiles
        _ENTRY_POINTS[(kernel, dim)] = entry
    return entry
