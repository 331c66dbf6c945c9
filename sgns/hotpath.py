"""The per-batch work, in one place to profile and replace: negative sampling, gathers, dot products, update.

Plain SGD has three kernels, picked by `trainer.kernel` (`make_sgd_step`):

- `torch` (`sgd_step`, the CUDA path): the exact gradient of `sgns_loss` over the batch, derived by hand
  and applied in place with `index_add_`, so no sparse-gradient tensors are built and no dense V x D
  tensor is touched.
- `numba` (the CPU default): the same exact batch update as `torch`, compiled. Dot products may run in
  parallel over pairs (`trainer.threads`); updates are applied in batch order on one thread, so results are
  bit-for-bit reproducible whatever the thread count.
- `sequential` (an approximation, opt-in): word2vec's own update, pair after pair on one thread, each pair
  seeing the previous pairs' updates (what gensim and the C tool do, minus their Hogwild races).
- `hogwild` (an approximation, opt-in): `sequential` on several threads over slices of the batch, racing
  on shared rows exactly as gensim and the C tool do. Fastest on CPU; results vary run to run, so exact
  resume does not hold with it.

All three only read and write the rows a batch touches. `optimizer_step` is the generic autograd path used
for SparseAdam. Tests check `torch` and `numba` against autograd + torch.optim.SGD.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from sgns.errors import SGNSError
from sgns.model import SGNS, sgns_loss


class NegativeSampler:
    """Draws negatives from a fixed distribution in O(1) per draw (Walker's alias method), on the device."""

    def __init__(self, probs: np.ndarray, device: torch.device, seed: int):
        n = len(probs)
        scaled = np.asarray(probs, dtype=np.float64) * n
        accept = np.ones(n, dtype=np.float64)
        alias = np.arange(n, dtype=np.int64)
        small = [i for i in range(n) if scaled[i] < 1.0]
        large = [i for i in range(n) if scaled[i] >= 1.0]
        while small and large:
            s, g = small.pop(), large.pop()
            accept[s], alias[s] = scaled[s], g
            scaled[g] -= 1.0 - scaled[s]
            (small if scaled[g] < 1.0 else large).append(g)
        self.accept = torch.tensor(accept, dtype=torch.float32, device=device)
        self.alias = torch.tensor(alias, dtype=torch.int64, device=device)
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)
        self.device = device

    def sample(self, rows: int, k: int) -> torch.Tensor:
        n = len(self.alias)
        slot = torch.randint(n, (rows, k), generator=self.generator, device=self.device)
        coin = torch.rand((rows, k), generator=self.generator, device=self.device)
        return torch.where(coin < self.accept[slot], slot, self.alias[slot])

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


def draw_negatives(sampler: NegativeSampler, batch_size: int, k: int, shared: int) -> torch.Tensor:
    """(B, K) negatives, or (ceil(B / shared), K) when `shared` positives share each draw."""
    return sampler.sample(-(-batch_size // shared), k)


@torch.no_grad()
def sgd_step(model: SGNS, centers: torch.Tensor, contexts: torch.Tensor, negatives: torch.Tensor,
             lr: float) -> torch.Tensor:
    """One SGD step on `sgns_loss`, gradients derived by hand; returns the summed loss (a 0-d tensor)."""
    W, C = model.input.weight, model.output.weight
    b, (groups, k), d = len(centers), negatives.shape, W.shape[1]
    size = -(-b // groups)
    w = W.index_select(0, centers)  # (B, D)
    c = C.index_select(0, contexts)  # (B, D)
    n = C.index_select(0, negatives.view(-1)).view(groups, k, d)  # (groups, K, D)
    positive = (w * c).sum(1)  # (B,)
    wg = F.pad(w, (0, 0, 0, groups * size - b)).view(groups, size, d)
    negative = torch.bmm(wg, n.transpose(1, 2))  # (groups, size, K)
    loss = F.softplus(-positive).sum() + F.softplus(negative).view(-1, k)[:b].sum()
    # d loss / d logit is sigmoid(logit) - label; padded rows have w = 0 so they add nothing below.
    g_pos = (torch.sigmoid(positive) - 1.0).unsqueeze(1)  # (B, 1)
    g_neg = torch.sigmoid(negative)  # (groups, size, K)
    grad_w = torch.bmm(g_neg, n).view(-1, d)[:b].addcmul_(g_pos, c)
    grad_n = torch.bmm(g_neg.transpose(1, 2), wg)  # (groups, K, D)
    W.index_add_(0, centers, grad_w, alpha=-lr)
    C.index_add_(0, contexts, g_pos * w, alpha=-lr)
    C.index_add_(0, negatives.view(-1), grad_n.view(-1, d), alpha=-lr)
    return loss


def optimizer_step(model: SGNS, optimizer: torch.optim.Optimizer, centers: torch.Tensor,
                   contexts: torch.Tensor, negatives: torch.Tensor, lr: Optional[float] = None) -> torch.Tensor:
    """One autograd step through the model and any torch optimizer (sparse gradients)."""
    if lr is not None:
        for group in optimizer.param_groups:
            group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    loss = sgns_loss(*model(centers, contexts, negatives))
    loss.backward()
    optimizer.step()
    return loss.detach()


# ------------------------------------------------------------------------------------- compiled kernels

try:  # numba is a dependency, but the torch path must keep working where it cannot be imported
    import numba
    from numba import njit, prange
except ImportError:  # pragma: no cover
    numba = None

KERNELS = ("auto", "torch", "numba", "sequential", "hogwild")

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


StepFn = Callable[[SGNS, torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor]


def make_sgd_step(kernel: str, device: torch.device, threads: int = 0) -> StepFn:
    """The SGD step for `trainer.kernel`: auto is numba on CPU (torch where numba is missing), torch on CUDA."""
    if kernel == "auto":
        kernel = "numba" if device.type == "cpu" and numba is not None else "torch"
    if kernel == "torch":
        return sgd_step
    if device.type != "cpu":
        raise SGNSError(f"trainer.kernel={kernel} runs on the CPU only: use trainer.kernel=torch (or auto) "
                        f"with trainer.device={device}")
    if numba is None:
        raise SGNSError(f"trainer.kernel={kernel} needs numba, which is not installed: pip install numba")
    if kernel == "hogwild":  # racing threads over the batch: two unless asked
        numba.set_num_threads(min(threads or 2, numba.config.NUMBA_NUM_THREADS))
        return lambda model, centers, contexts, negatives, lr: hogwild_step(model, centers, contexts, negatives,
                                                                           lr, numba.get_num_threads())
    # One compute thread unless asked: the data thread has the other core, and on a shared 2-core machine
    # parallel regions per batch measured slower than one thread.
    numba.set_num_threads(min(threads or 1, numba.config.NUMBA_NUM_THREADS))
    return numba_step if kernel == "numba" else sequential_step
