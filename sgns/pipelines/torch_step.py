"""The torch steps of the device and pair pipelines: the exact SGD step derived by hand (the CUDA path) and the
autograd step for any optimizer.

`sgd_step` computes the exact gradient of `sgns_loss` over the batch by hand and applies it in place with
`index_add_`, so no sparse-gradient tensors are built and no dense V x D tensor is touched; with `row_cap` it
bounds each row's summed update (large batches). `optimizer_step` goes through autograd and a torch optimizer
(SparseAdam). Tests check both against autograd + torch.optim.SGD.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from sgns.model import SGNS, group_size, sgns_loss


class RowCounter:
    """How many gradient terms each row receives in one step, from a persistent (V,) buffer.

    Only the touched entries are written and then reset, so a step costs O(batch), never O(V), and issues
    no host sync.
    """

    def __init__(self, vocab_size: int, device: torch.device):
        self.buffer = torch.zeros(vocab_size, dtype=torch.float32, device=device)

    def scale(self, rows: torch.Tensor, weights: torch.Tensor, cap: float) -> torch.Tensor:
        """Per-entry factor min(1, cap / n_row), n_row the summed `weights` of the entry's row."""
        self.buffer.index_add_(0, rows, weights)
        counts = self.buffer[rows]
        self.buffer[rows] = 0.0
        return cap / counts.clamp(min=cap)


@torch.no_grad()
def sgd_step(model: SGNS, centers: torch.Tensor, contexts: torch.Tensor, negatives: torch.Tensor,
             lr: float, row_cap: float = 0.0, counter: Optional[RowCounter] = None) -> torch.Tensor:
    """One SGD step on `sgns_loss`, gradients derived by hand; returns the summed loss (a 0-d tensor).

    row_cap=0: the exact SGD step of the batch's summed loss. row_cap>0: each row's summed gradient is scaled
    by min(1, row_cap / n), n the number of (pair, logit) terms that reach the row (a shared negative counts
    once per positive sharing it): with large batches a frequent word's row gets thousands of terms, all
    computed from the same stale weights, and their plain sum overshoots.
    """
    W, C = model.input.weight, model.output.weight
    b, (groups, k), d = len(centers), negatives.shape, W.shape[1]
    size = group_size(b, groups)
    flat_negatives = negatives.reshape(-1)
    w = W.index_select(0, centers)  # (B, D)
    c = C.index_select(0, contexts)  # (B, D)
    n = C.index_select(0, flat_negatives).view(groups, k, d)  # (groups, K, D)
    positive = (w * c).sum(1)  # (B,)
    wg = F.pad(w, (0, 0, 0, groups * size - b)).view(groups, size, d)
    negative = torch.bmm(wg, n.transpose(1, 2))  # (groups, size, K)
    loss = F.softplus(-positive).sum() + F.softplus(negative).view(-1, k)[:b].sum()
    # d loss / d logit is sigmoid(logit) - label; padded rows have w = 0 so they add nothing below.
    g_pos = (torch.sigmoid(positive) - 1.0).unsqueeze(1)  # (B, 1)
    g_neg = torch.sigmoid(negative)  # (groups, size, K)
    grad_w = torch.bmm(g_neg, n).view(-1, d)[:b].addcmul_(g_pos, c)  # (B, D)
    grad_c = g_pos * w  # (B, D)
    grad_n = torch.bmm(g_neg.transpose(1, 2), wg).view(-1, d)  # (groups * K, D)
    if row_cap > 0:
        counter = counter if counter is not None else RowCounter(W.shape[0], W.device)
        ones = torch.ones(b, dtype=torch.float32, device=W.device)
        grad_w *= counter.scale(centers, ones, row_cap).unsqueeze(1)
        out_rows = torch.cat([contexts.to(flat_negatives.dtype), flat_negatives])
        out_weights = torch.cat([ones, torch.full((groups * k,), float(size), device=W.device)])
        out_scale = counter.scale(out_rows, out_weights, row_cap).unsqueeze(1)
        grad_c *= out_scale[:b]
        grad_n *= out_scale[b:]
    W.index_add_(0, centers, grad_w, alpha=-lr)
    C.index_add_(0, contexts, grad_c, alpha=-lr)
    C.index_add_(0, flat_negatives, grad_n, alpha=-lr)
    return loss


def optimizer_step(model: SGNS, optimizer: torch.optim.Optimizer, centers: torch.Tensor,
                   contexts: torch.Tensor, negatives: torch.Tensor, lr: Optional[float] = None) -> torch.Tensor:
    """One autograd step through the model and any torch optimizer (sparse gradients); `lr` None keeps its own."""
    if lr is not None:
        for group in optimizer.param_groups:
            group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    loss = sgns_loss(*model(centers, contexts, negatives))
    loss.backward()
    optimizer.step()
    return loss.detach()
