"""The torch steps of the device and pair pipelines: the exact SGD step derived by hand (the CUDA path) and the
autograd step for any optimizer.

`sgd_step` computes the exact gradient of `sgns_loss` over the batch by hand and applies it in place with
`index_add_`, so no sparse-gradient tensors are built and no dense V x D tensor is touched; with `row_cap` it
bounds each row's summed update (large batches). `optimizer_step` goes through autograd and a torch optimizer
(SparseAdam). Tests check both against autograd + torch.optim.SGD.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from sgns.errors import SGNSError
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

    row_cap=0: the exact SGD step of the batch's summed loss (model=subword: fastText's rule, every input row of a
    center moved by the center's full gradient, as the reference's MeanOfRows). row_cap>0: each row's summed
    gradient is scaled by min(1, row_cap / n), n the number of (pair, logit) terms that reach the row (a shared
    negative counts once per positive sharing it; an n-gram row once per center holding it): with large batches a
    frequent word's row gets thousands of terms, all computed from the same stale weights, and their plain sum
    overshoots.
    """
    W, C = model.input.weight, model.output.weight
    b, (groups, k), d = len(centers), negatives.shape, W.shape[1]
    size = group_size(b, groups)
    flat_negatives = negatives.reshape(-1)
    center_rows = model.center_rows(centers)  # SGNS: each center's own row; model=subword: its n-grams' too
    w = center_rows.vectors(W)  # (B, D): the row, or the mean of the rows
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
    grad_rows = center_rows.spread(grad_w)  # every row of a center gets its full dL/dh (fastText's skip-gram)
    if row_cap > 0:
        counter = counter if counter is not None else RowCounter(W.shape[0], W.device)
        ones = torch.ones(b, dtype=torch.float32, device=W.device)
        grad_rows *= counter.scale(center_rows.rows, center_rows.terms(), row_cap).unsqueeze(1)
        out_rows = torch.cat([contexts.to(flat_negatives.dtype), flat_negatives])
        out_weights = torch.cat([ones, torch.full((groups * k,), float(size), device=W.device)])
        out_scale = counter.scale(out_rows, out_weights, row_cap).unsqueeze(1)
        grad_c *= out_scale[:b]
        grad_n *= out_scale[b:]
    W.index_add_(0, center_rows.rows, grad_rows, alpha=-lr)
    C.index_add_(0, contexts, grad_c, alpha=-lr)
    C.index_add_(0, flat_negatives, grad_n, alpha=-lr)
    return loss


def _row_scale(counts: torch.Tensor, rows: torch.Tensor, weights: torch.Tensor, cap: float) -> torch.Tensor:
    """RowCounter.scale on a bare (V,) buffer: min(1, cap / n_row) per entry, the buffer left zero."""
    counts.index_add_(0, rows, weights)
    n = counts[rows]
    counts[rows] = 0.0
    return cap / n.clamp(min=cap)


def fixed_shape_step(W: torch.Tensor, C: torch.Tensor, counts: torch.Tensor, centers: torch.Tensor,
                     contexts: torch.Tensor, negatives: torch.Tensor, weight: torch.Tensor, lr: torch.Tensor,
                     row_cap: float) -> torch.Tensor:
    """`sgd_step` with every shape fixed by the batch size, for torch.compile and CUDA graphs; the summed loss.

    W, C: the input and output tables (updated in place); counts: a zero (V,) buffer when row_cap > 0 (left
    zero); centers, contexts (B,); negatives (G, K) with B a multiple of G; weight (B,) 1 for a real pair and
    0 for padding (a padded entry changes nothing); lr: a 0-d tensor, so a new value needs no recompile or
    recapture. No host sync and no shape that depends on the data.
    """
    b, (groups, k), d = centers.shape[0], negatives.shape, W.shape[1]
    size = b // groups
    flat_negatives = negatives.reshape(-1)
    w, c = W[centers], C[contexts]
    n = C[flat_negatives].view(groups, k, d)
    positive = (w * c).sum(1)
    wg = w.view(groups, size, d)
    negative = torch.bmm(wg, n.transpose(1, 2))  # (groups, size, K)
    loss = ((F.softplus(-positive) + F.softplus(negative).view(b, k).sum(1)) * weight).sum()
    g_pos = (torch.sigmoid(positive) - 1.0) * weight
    g_neg = torch.sigmoid(negative) * weight.view(groups, size, 1)
    grad_w = torch.bmm(g_neg, n).view(b, d) + g_pos.unsqueeze(1) * c
    grad_c = g_pos.unsqueeze(1) * w
    grad_n = torch.bmm(g_neg.transpose(1, 2), wg).reshape(groups * k, d)
    step_w = step_c = step_n = -lr
    if row_cap > 0:
        # As sgd_step: a shared draw counts once per positive sharing it (`size` for any group with a real pair).
        group_weight = weight.view(groups, size).amax(1) * size
        step_w = _row_scale(counts, centers, weight, row_cap).unsqueeze(1) * step_w
        out_rows = torch.cat([contexts.to(flat_negatives.dtype), flat_negatives])
        out_weights = torch.cat([weight, group_weight.unsqueeze(1).expand(groups, k).reshape(-1)])
        out_step = _row_scale(counts, out_rows, out_weights, row_cap).unsqueeze(1) * step_c
        step_c, step_n = out_step[:b], out_step[b:]
    W.index_add_(0, centers, grad_w * step_w)
    C.index_add_(0, contexts, grad_c * step_c)
    C.index_add_(0, flat_negatives, grad_n * step_n)
    return loss


class FixedShapeStep:
    """The torch SGD step at one batch shape: a short batch (a chunk's last) is padded with weight-0 pairs.

    mode: static (eager `fixed_shape_step`), compiled (under torch.compile: elementwise work fused), cuda_graph
    / compiled_cuda_graph (captured once, then each step is four copies into fixed buffers and one replay).
    With cuda_graph the returned loss is a buffer the next step overwrites: read or add it before then.
    """

    def __init__(self, model: SGNS, batch_size: int, shared: int, negatives: int, row_cap: float, mode: str):
        W = model.input.weight
        self.W, self.C = W.detach(), model.output.weight.detach()  # aliases: updated in place, no autograd
        self.groups = -(-batch_size // shared)
        self.size, self.k, self.row_cap, self.mode = self.groups * shared, negatives, row_cap, mode
        self.counts = torch.zeros(W.shape[0] if row_cap > 0 else 1, dtype=torch.float32, device=W.device)
        self.ones = torch.ones(self.size, dtype=torch.float32, device=W.device)
        self.lr = torch.zeros((), dtype=torch.float32, device=W.device)
        self.fn = torch.compile(fixed_shape_step, dynamic=False, fullgraph=True) if "compiled" in mode \
            else fixed_shape_step
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        if mode.endswith("cuda_graph") and W.device.type != "cuda":  # a run is refused before, by choose_pipeline
            raise SGNSError(f"trainer.torch_step={mode} needs a CUDA device (got {W.device})")

    def padded(self, centers: torch.Tensor, contexts: torch.Tensor, negatives: torch.Tensor
               ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        b = len(centers)
        if b == self.size:
            return centers, contexts, negatives, self.ones
        weight = (torch.arange(self.size, device=centers.device) < b).to(torch.float32)
        return (F.pad(centers, (0, self.size - b)), F.pad(contexts, (0, self.size - b)),
                F.pad(negatives, (0, 0, 0, self.groups - len(negatives))), weight)

    @torch.no_grad()
    def __call__(self, centers: torch.Tensor, contexts: torch.Tensor, negatives: torch.Tensor,
                 lr: float) -> torch.Tensor:
        inputs = self.padded(centers, contexts, negatives)
        self.lr.fill_(lr)
        if not self.mode.endswith("cuda_graph"):
            return self.fn(self.W, self.C, self.counts, *inputs, self.lr, self.row_cap)
        if self.graph is None:
            self.capture(inputs)
        for buffer, value in zip(self.buffers, inputs, strict=True):
            buffer.copy_(value, non_blocking=True)
        self.graph.replay()
        return self.loss

    def capture(self, inputs: Tuple[torch.Tensor, ...]) -> None:
        """Warm up (compiling, if so) and capture the step on fixed buffers; weight 0 while warming up, so the
        warm-up steps change no parameter."""
        self.buffers = [x.clone() for x in inputs]
        self.buffers[3].zero_()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                self.fn(self.W, self.C, self.counts, *self.buffers, self.lr, self.row_cap)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.loss = self.fn(self.W, self.C, self.counts, *self.buffers, self.lr, self.row_cap)


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
