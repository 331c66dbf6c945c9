"""Model stage: two embedding tables and the SGNS objective (and the full softmax it replaces).

P(pair is real) = sigmoid(w . v), w the center word's input vector, v the other word's output vector.
A positive (center, context) pair has label 1; each of its K negatives label 0. The loss is binary
cross-entropy with logits, summed over the K + 1 terms of every pair (word2vec applies each pair's full
gradient, so the sum, not the mean, matches its learning rate).
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from sgns.errors import SGNSError

if TYPE_CHECKING:
    from sgns.config import ModelConfig


def group_size(positives: int, rows: int) -> int:
    """Positives served by each of `rows` rows of negatives: row r serves positives r*size .. (r+1)*size-1."""
    return -(-positives // rows)


class SGNS(nn.Module):
    def __init__(self, vocab_size: int, dim: int, sparse: bool = True):
        super().__init__()
        self.input = nn.Embedding(vocab_size, dim, sparse=sparse)  # center-word vectors (the embeddings)
        self.output = nn.Embedding(vocab_size, dim, sparse=sparse)  # context-word vectors
        self.reset_parameters()

    def reset_parameters(self) -> None:
        dim = self.input.embedding_dim
        with torch.no_grad():  # word2vec's initialisation
            self.input.weight.uniform_(-0.5 / dim, 0.5 / dim)
            self.output.weight.zero_()

    def forward(self, centers: torch.Tensor, contexts: torch.Tensor,
                negatives: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Logits of the positives (B,) and of the negatives (B, K).

        `negatives` is (B, K), or (ceil(B / G), K) when G consecutive positives share one draw of
        negatives: their logits are then one (G, D) x (D, K) product per group.
        """
        w = self.input(centers)
        positive = (w * self.output(contexts)).sum(-1)
        groups, k = negatives.shape
        size = group_size(len(centers), groups)
        w = F.pad(w, (0, 0, 0, groups * size - len(centers))).view(groups, size, -1)
        negative = torch.bmm(w, self.output(negatives).transpose(1, 2)).reshape(-1, k)[: len(centers)]
        return positive, negative

    def untrained_loss(self, negatives: int) -> float:
        """The loss per pair with every logit 0 (the scale of a diverged run): (1 + K) ln 2 for K negatives."""
        return (1 + negatives) * math.log(2)


def sgns_loss(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """BCE-with-logits summed over all pairs: label 1 for positives, 0 for negatives."""
    return (F.binary_cross_entropy_with_logits(positive, torch.ones_like(positive), reduction="sum")
            + F.binary_cross_entropy_with_logits(negative, torch.zeros_like(negative), reduction="sum"))


# Full-softmax skip-gram (`model=full_softmax`), the objective negative sampling replaces:
# P(context | center) = softmax over the whole vocabulary of C @ w, w the center's input vector and C the
# output table; the loss is the cross-entropy of the true context, summed over the batch. Every pair costs
# |V| dot products (and its gradient touches every output row) where negative sampling costs K + 1: that is
# what `scripts/studies/why_negative_sampling.py` measures. Same tables, names and initialisation as SGNS (`input`,
# `output`), so checkpoints, vector export, `load_model` and `model.init_from` work unchanged. The training
# step is sgns.pipelines.softmax.


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

    def untrained_loss(self, negatives: int) -> float:
        """The loss per pair with every logit 0: ln |V| (no negatives: every word is scored)."""
        return math.log(max(self.input.num_embeddings, 2))


def full_softmax_loss(model: FullSoftmax, centers: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the true contexts over all |V| logits, summed over the batch (the reference)."""
    return F.cross_entropy(model(centers), contexts, reduction="sum")


def available_memory() -> int:
    """Bytes this machine can still allocate without swapping (MemAvailable; physical memory elsewhere)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_table_memory(vocab_size: int, dim: int, tables: int = 2, available: int | None = None) -> None:
    """One clear SGNSError when the float32 tables cannot fit in memory (not an allocator traceback later)."""
    need = tables * vocab_size * dim * 4
    available = available_memory() if available is None else available
    if need > available:
        raise SGNSError(f"the model's {tables} tables of {vocab_size:,} words x {dim:,} dims need "
                        f"{need / 2**30:,.1f} GiB but {available / 2**30:,.1f} GiB of memory is available: lower "
                        f"model.dim, or shrink the vocabulary (raise data.min_count or set data.max_vocab_size)")


def make_model(model: ModelConfig, vocab_size: int) -> SGNS | FullSoftmax:
    """The model group's module: SGNS, or the full softmax it replaces (`model=full_softmax`)."""
    check_table_memory(vocab_size, model.dim)
    if model.name == "full_softmax":
        return FullSoftmax(vocab_size, model.dim)
    return SGNS(vocab_size, model.dim)
