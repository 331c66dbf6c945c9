"""The compiled CPU kernels (numba): the exact batch SGD step and word2vec's own pair-by-pair update.

- `numba_step` (the CPU default): the same exact batch update as `sgns.kernels.torch_kernels.sgd_step`, compiled.
  Dot products may run in parallel over pairs (`trainer.threads`); updates are applied in batch order on
  one thread, so results are bit-for-bit reproducible whatever the thread count.
- `sequential_step` (an approximation, opt-in): word2vec's own update, pair after pair on one thread, each
  pair seeing the previous pairs' updates (what gensim and the C tool do, minus their Hogwild races).
- `hogwild_step` (an approximation, opt-in): `sequential` on several threads over slices of the batch,
  racing on shared rows exactly as gensim and the C tool do. Fastest on CPU; results vary run to run, so
  exact resume does not hold with it.

All of them only read and write the rows a batch touches. Negatives come as (groups, K) rows, row
`i // size` serving positive i (`sgns.negatives.group_size`), written out inline because numba compiles it.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from sgns.errors import SGNSError
from sgns.model import SGNS

try:  # numba is a dependency, but the torch path must keep working where it cannot be imported
    import numba
    from numba import njit, prange
except ImportError:  # pragma: no cover
    numba = None

# Reassociation lets LLVM vectorise the dot products (a strict left-to-right float sum cannot be);
# the compiled code is fixed, so results stay bit-for-bit reproducible on one machine.
_FAST = {"reassoc", "contract"}

if numba is not None:

    @njit(nogil=True, cache=True, inline="always", fastmath=_FAST)
    def _dot(w: np.ndarray, c: np.ndarray) -> np.float32:
        """w . c in float32 (reassociated, so LLVM vectorises it)."""
        x = np.float32(0.0)
        for t in range(len(w)):
            x += w[t] * c[t]
        return x

    @njit(nogil=True, cache=True, inline="always")
    def _logit_step(x: float, label: float) -> tuple[float, float]:
        """(label - sigmoid(x), BCE-with-logits loss of x) in float64, overflow-safe."""
        if x >= 0:
            e = math.exp(-x)
            p = 1.0 / (1.0 + e)
            return label - p, math.log1p(e) + (1.0 - label) * x
        e = math.exp(x)
        p = e / (1.0 + e)
        return label - p, math.log1p(e) - label * x

    # Steps 2 and 3 run serially in batch order, so results never depend on the thread count. (Split over
    # threads by row owner they gave wrong updates from the second call on with 2 numba threads.)
    @njit(nogil=True, parallel={"fusion": False}, cache=True, fastmath=_FAST)
    def _exact_batch(W: np.ndarray, C: np.ndarray, centers: np.ndarray, contexts: np.ndarray,
                     negatives: np.ndarray, lr: float) -> float:
        b, d = len(centers), W.shape[1]
        groups, k = negatives.shape
        size = (b + groups - 1) // groups
        step = np.empty((b, k + 1), dtype=np.float32)  # -lr * d loss / d logit, per logit
        grad_w = np.empty((b, d), dtype=np.float32)  # -lr * d loss / d w, per pair
        loss = np.empty(b, dtype=np.float64)
        # 1. every logit and the input-vector steps, from the old weights (read only, parallel over pairs)
        for i in prange(b):
            w = W[centers[i]]
            gw = grad_w[i]
            for t in range(d):
                gw[t] = 0.0
            total = 0.0
            for j in range(k + 1):
                row = contexts[i] if j == 0 else negatives[i // size, j - 1]
                c = C[row]
                g, l_ = _logit_step(_dot(w, c), 1.0 if j == 0 else 0.0)
                total += l_
                s = np.float32(lr * g)
                step[i, j] = s
                for t in range(d):
                    gw[t] += s * c[t]
            loss[i] = total
        # 2. output vectors, from the old input vectors, in batch order
        for i in range(b):
            w = W[centers[i]]
            for j in range(k + 1):
                c = C[contexts[i] if j == 0 else negatives[i // size, j - 1]]
                s = step[i, j]
                for t in range(d):
                    c[t] += s * w[t]
        # 3. input vectors, in batch order
        for i in range(b):
            w = W[centers[i]]
            gw = grad_w[i]
            for t in range(d):
                w[t] += gw[t]
        return loss.sum()

    @njit(nogil=True, cache=True, fastmath=_FAST)
    def _sequential_range(W: np.ndarray, C: np.ndarray, centers: np.ndarray, contexts: np.ndarray,
                          negatives: np.ndarray, lr: float, lo: int, hi: int) -> float:
        """Word2vec's update for pairs lo..hi-1, one after the other; returns their summed loss."""
        d = W.shape[1]
        groups, k = negatives.shape
        size = (len(centers) + groups - 1) // groups
        grad_w = np.empty(d, dtype=np.float32)
        loss = 0.0
        for i in range(lo, hi):
            w = W[centers[i]]
            grad_w[:] = 0.0
            for j in range(k + 1):
                row = contexts[i] if j == 0 else negatives[i // size, j - 1]
                c = C[row]
                g, l_ = _logit_step(_dot(w, c), 1.0 if j == 0 else 0.0)
                loss += l_
                s = np.float32(lr * g)
                for t in range(d):
                    grad_w[t] += s * c[t]
                    c[t] += s * w[t]
            for t in range(d):
                w[t] += grad_w[t]
        return loss

    @njit(nogil=True, cache=True)
    def _sequential(W: np.ndarray, C: np.ndarray, centers: np.ndarray, contexts: np.ndarray,
                    negatives: np.ndarray, lr: float) -> float:
        return _sequential_range(W, C, centers, contexts, negatives, lr, 0, len(centers))

    @njit(nogil=True, parallel=True, cache=True)
    def _hogwild(W: np.ndarray, C: np.ndarray, centers: np.ndarray, contexts: np.ndarray,
                 negatives: np.ndarray, lr: float, threads: int) -> float:
        """`_sequential` on `threads` slices of the batch at once, racing on shared rows (as gensim does)."""
        b = len(centers)
        losses = np.zeros(threads)
        for part in prange(threads):
            losses[part] = _sequential_range(W, C, centers, contexts, negatives, lr,
                                             part * b // threads, (part + 1) * b // threads)
        return losses.sum()


def _weights(model: SGNS) -> tuple[np.ndarray, np.ndarray]:
    W, C = model.input.weight, model.output.weight
    if W.device.type != "cpu" or not (W.is_contiguous() and C.is_contiguous()):
        raise SGNSError("the numba kernels need contiguous CPU weights: use trainer.kernel=torch")
    return W.detach().numpy(), C.detach().numpy()


def numba_step(model: SGNS, centers: torch.Tensor, contexts: torch.Tensor, negatives: torch.Tensor,
               lr: float, threads: int = 0) -> torch.Tensor:
    """The exact batch SGD step of `sgd_step`, compiled; `threads` (0: as set) only parallelise the dot products."""
    W, C = _weights(model)
    if threads:
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    return torch.tensor(_exact_batch(W, C, centers.numpy(), contexts.numpy(), negatives.numpy(), lr))


def sequential_step(model: SGNS, centers: torch.Tensor, contexts: torch.Tensor, negatives: torch.Tensor,
                    lr: float) -> torch.Tensor:
    """Word2vec's pair-by-pair SGD over the batch (an approximation of the batch step), one thread."""
    W, C = _weights(model)
    return torch.tensor(_sequential(W, C, centers.numpy(), contexts.numpy(), negatives.numpy(), lr))


def hogwild_step(model: SGNS, centers: torch.Tensor, contexts: torch.Tensor, negatives: torch.Tensor,
                 lr: float, threads: int = 2) -> torch.Tensor:
    """Word2vec's update on `threads` threads at once with racing writes: fastest, not reproducible."""
    W, C = _weights(model)
    return torch.tensor(_hogwild(W, C, centers.numpy(), contexts.numpy(), negatives.numpy(), lr, threads))
