"""Full-softmax skip-gram (`model=full_softmax`): the objective negative sampling replaces.

P(context | center) = softmax over the whole vocabulary of C @ w, w the center's input vector and C the
output table; the loss is the cross-entropy of the true context, summed over the batch. Every pair costs
|V| dot products (and its gradient touches every output row) where negative sampling costs K + 1: that is
what `scripts/why_negative_sampling.py` measures.

Same tables, names and initialisation as SGNS (`input`, `output`), so checkpoints, vector export and
`model.init_from` work unchanged. The step is torch on any device; the logits are computed in row chunks so
memory stays bounded (about CHUNK_LOGITS floats) whatever the batch and vocabulary size, and the output
gradient of the whole batch is applied once, as one large batch would.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

CHUNK_LOGITS = 1 << 24  # logits held at once (64 MiB in float32)

SoftmaxStep = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]


class FullSoftmax(nn.Module):
    def __init__(self, vocab_size: int, dim: int):
        super().__init__()
        self.input = nn.Embedding(vocab_size, dim)  # center-word vectors (the embeddings)
        self.output = nn.Embedding(vocab_size, dim)  # one softmax row per vocabulary word
        self.reset_parameters()

    def reset_parameters(self) -> None:
        dim = self.input.embedding_dim
        with torch.no_grad():  # word2vec's initialisation, as SGNS
            self.input.weight.uniform_(-0.5 / dim, 0.5 / dim)
            self.output.weight.zero_()

    def forward(self, centers: torch.Tensor) -> torch.Tensor:
        """Logits over the whole vocabulary, (B, |V|)."""
        return self.input(centers) @ self.output.weight.T


def full_softmax_loss(model: FullSoftmax, centers: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the true contexts over all |V| logits, summed over the batch (the reference)."""
    return F.cross_entropy(model(centers), contexts, reduction="sum")


def full_softmax_sgd_step(model: FullSoftmax, centers: torch.Tensor, contexts: torch.Tensor,
                          lr: float) -> torch.Tensor:
    """One plain-SGD step on the summed cross-entropy, gradients written out by hand; returns the loss sum.

    d loss / d logits = softmax - onehot(context); the input gradient is that times C, the output
    gradient its transpose times the centers' vectors. Computed in chunks of rows, applied once.
    """
    W, C = model.input.weight, model.output.weight
    vocab = C.shape[0]
    rows = max(1, CHUNK_LOGITS // vocab)
    loss = torch.zeros((), device=W.device)
    grad_c = torch.zeros_like(C)
    grad_w = torch.empty(len(centers), W.shape[1], device=W.device, dtype=W.dtype)
    with torch.no_grad():
        for start in range(0, len(centers), rows):
            center, context = centers[start : start + rows], contexts[start : start + rows]
            w = W[center]
            logits = w @ C.T
            lse = torch.logsumexp(logits, dim=1)
            loss += (lse - logits.gather(1, context[:, None]).squeeze(1)).sum()
            g = torch.exp(logits.sub_(lse[:, None]))  # softmax, in place of the logits
            g[torch.arange(len(context), device=g.device), context] -= 1.0
            grad_c.addmm_(g.T, w)
            torch.mm(g, C, out=grad_w[start : start + rows])
        W.index_add_(0, centers, grad_w, alpha=-lr)
        C.add_(grad_c, alpha=-lr)
    return loss
