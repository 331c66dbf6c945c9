"""The torch kernels: the exact SGD step derived by hand (the CUDA path) and the autograd step for any optimizer.

`sgd_step` computes the exact gradient of `sgns_loss` over the batch by hand and applies it in place with
`index_add_`, so no sparse-gradient tensors are built and no dense V x D tensor is touched. `optimizer_step`
goes through autograd and a torch optimizer (SparseAdam). Tests check both against autograd + torch.optim.SGD.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from sgns.model import SGNS, sgns_loss
from sgns.negatives import group_size


@torch.no_grad()
def sgd_step(model: SGNS, centers: torch.Tensor, contexts: torch.Tensor, negatives: torch.Tensor,
             lr: float) -> torch.Tensor:
    """One SGD step on `sgns_loss`, gradients derived by hand; returns the summed loss (a 0-d tensor)."""
    W, C = model.input.weight, model.output.weight
    b, (groups, k), d = len(centers), negatives.shape, W.shape[1]
    size = group_size(b, groups)
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
    """One autograd step through the model and any torch optimizer (sparse gradients); `lr` None keeps its own."""
    if lr is not None:
        for group in optimizer.param_groups:
            group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    loss = sgns_loss(*model(centers, contexts, negatives))
    loss.backward()
    optimizer.step()
    return loss.detach()
