"""The per-batch work, in one place to profile and replace: negative sampling, gathers, dot products, update.

`sgd_step` is the default: the exact gradient of `sgns_loss` (checked against autograd in the tests),
derived by hand and applied in place with `index_add_`, so no sparse-gradient tensors are built and no
dense V x D tensor is touched. `optimizer_step` is the generic autograd path used for SparseAdam.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

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
