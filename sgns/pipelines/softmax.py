"""The full-softmax pipeline (`model=full_softmax`): the pair pipeline's batches, no negatives, trained by a
hand-written softmax SGD step, torch on any device (the model itself: sgns.model.FullSoftmax).

The step writes the gradient of the summed cross-entropy out by hand (no autograd graph of |V| logits per
pair); logits are computed in chunks of rows so memory stays bounded (about CHUNK_LOGITS floats) whatever
the batch and vocabulary size, and the whole batch's gradient is applied at once, as one large batch.
"""

from __future__ import annotations

from typing import Iterator

import torch

from sgns.model import FullSoftmax
from sgns.pipelines.base import PipelineBase
from sgns.pipelines.pairs import PairBatches
from sgns.pipelines.plan import PairBatch, Position

CHUNK_LOGITS = 1 << 24  # logits held at once (64 MiB in float32)


def full_softmax_sgd_step(model: FullSoftmax, centers: torch.Tensor, contexts: torch.Tensor,
                          lr: float) -> torch.Tensor:
    """One plain-SGD step on the summed cross-entropy, gradients written out by hand; returns the loss sum.

    d loss / d logits = softmax - onehot(context); the input gradient is that times C, the output
    gradient its transpose times the centers' vectors. Computed in chunks of rows, applied once.
    """
    W, C = model.input.weight, model.output.weight
    centers, contexts = centers.long(), contexts.long()  # CPU batches hold int32 views
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


class SoftmaxPipeline(PipelineBase):
    """Shuffled positive pairs (the same batches as negative sampling), trained with the full softmax. Plain SGD
    and no sampler: the pairs are keyed by the position and the seed, so the checkpoint state is its tag."""

    name = "softmax"

    def __init__(self, pairs: PairBatches, model: FullSoftmax):
        self.pairs, self.model = pairs, model
        self.total_words = pairs.total_words()

    def batches(self, start: Position) -> Iterator[PairBatch]:
        self.pairs.start = start
        return iter(self.pairs)

    def step(self, batch: PairBatch, lr: float) -> torch.Tensor:
        loss = full_softmax_sgd_step(self.model, batch.centers, batch.contexts, lr)
        if self.frozen is not None:
            self.frozen.restore(torch.cat((batch.centers, batch.contexts)))
        return loss
