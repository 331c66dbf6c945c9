"""Full-softmax skip-gram (`model=full_softmax`): the objective negative sampling replaces.

P(context | center) = softmax over the whole vocabulary of C @ w, w the center's input vector and C the
output table; the loss is the cross-entropy of the true context, summed over the batch. Every pair costs
|V| dot products (and its gradient touches every output row) where negative sampling costs K + 1: that is
what `scripts/why_negative_sampling.py` measures.

Same tables, names and initialisation as SGNS (`input`, `output`), so checkpoints, vector export,
`load_model` and `model.init_from` work unchanged. This is the model and its reference loss; the training
step is sgns.kernels.softmax.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
