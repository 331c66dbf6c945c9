"""The torch kernels: the exact SGD step derived by hand (the CUDA path) and the autograd step for any optimizer,
and the two backends that step them (the device pipeline's and the numpy pair pipeline's).

`sgd_step` computes the exact gradient of `sgns_loss` over the batch by hand and applies it in place with
`index_add_`, so no sparse-gradient tensors are built and no dense V x D tensor is touched; with `row_cap` it
bounds each row's summed update (large batches, see the README's GPU section). `optimizer_step`
goes through autograd and a torch optimizer (SparseAdam). Tests check both against autograd + torch.optim.SGD.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, Tuple

import torch
import torch.nn.functional as F

from sgns.corpus import EncodedCorpus
from sgns.errors import SGNSError
from sgns.model import SGNS, group_size, sgns_loss
from sgns.pipelines.device import DeviceBatch, DevicePairBatches
from sgns.pipelines.negatives import NegativeSampler
from sgns.pipelines.pairs import Batch, PairBatches
from sgns.pipelines.plan import Position
from sgns.vocab import Vocabulary

if TYPE_CHECKING:
    from sgns.distributed import Shard



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


# ------------------------------------------------------------------------------- the backends they step

CPU_BATCH_SIZE = 4096  # data.batch_size=null on the CPU pair pipeline (numpy pairs, the exact torch step)
# data.batch_size, optimizer.row_cap and optimizer.lr_scale null on the torch device pipeline, chosen from
# the CPU quality study in the README's GPU section (whole gutenberg_dev, 3 seeds; scripts/seed_study.py):
# the plain summed update diverges at 16384 pairs and above, and so did a cap of 64 terms per row at twice
# the lr (every seed, by step 150); capped at 32 with twice the lr, 65536 pairs beat the CPU default at
# 1 epoch on every seed and stayed within 0.02 of it at 5 epochs (one seed). Batches up to CPU_BATCH_SIZE
# keep the exact step at the given lr.
DEVICE_BATCH_SIZE = 65536
DEVICE_ROW_CAP = 32.0
DEVICE_LR_SCALE = 2.0


def default_row_cap(batch_size: int) -> float:
    """optimizer.row_cap=null: the exact step up to CPU_BATCH_SIZE pairs, DEVICE_ROW_CAP above."""
    return 0.0 if batch_size <= CPU_BATCH_SIZE else DEVICE_ROW_CAP


def default_lr_scale(batch_size: int) -> float:
    """optimizer.lr_scale=null: 1 up to CPU_BATCH_SIZE pairs, DEVICE_LR_SCALE above."""
    return 1.0 if batch_size <= CPU_BATCH_SIZE else DEVICE_LR_SCALE


# One training update on (centers, contexts, negatives) at `lr`, with the model (and optimizer) bound in.
PairStep = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor]


def make_pair_step(cfg: Any, model: SGNS) -> Tuple[PairStep, Optional[torch.optim.Optimizer]]:
    """The update for `optimizer`, and the torch optimizer it steps (None for plain SGD: the exact torch step)."""
    o = cfg.optimizer
    if o.name == "sparse_adam":
        optimizer = torch.optim.SparseAdam(list(model.parameters()), lr=o.lr)
        fixed_lr = not o.decay  # SparseAdam keeps its own lr unless the schedule decays it

        def adam_step(centers: torch.Tensor, contexts: torch.Tensor, negatives: torch.Tensor,
                      lr: float) -> torch.Tensor:
            return optimizer_step(model, optimizer, centers, contexts, negatives, None if fixed_lr else lr)

        return adam_step, optimizer

    def sgd(centers: torch.Tensor, contexts: torch.Tensor, negatives: torch.Tensor, lr: float) -> torch.Tensor:
        return sgd_step(model, centers, contexts, negatives, lr)

    return sgd, None


class PairBackend:
    """Shuffled positive pairs with negatives drawn per batch, trained by one pair step."""

    def __init__(self, pairs: PairBatches, sampler: NegativeSampler, negatives: int, shared: int,
                 pair_step: PairStep, optimizer: Optional[torch.optim.Optimizer] = None):
        self.pairs, self.sampler, self.k, self.shared = pairs, sampler, negatives, shared
        self.pair_step, self.optimizer = pair_step, optimizer
        self.total_words = pairs.total_words()

    def batches(self, start: Position) -> Iterator[Batch]:
        self.pairs.start = start
        for batch in self.pairs:
            # Drawn as the loop asks for the batch, so the sampler's state at a checkpoint is exactly "after
            # the batches trained so far".
            batch.negatives = self.sampler.draw(batch.pairs, self.k, self.shared)
            yield batch

    def step(self, batch: Batch, lr: float) -> torch.Tensor:
        return self.pair_step(batch.centers, batch.contexts, batch.negatives, lr)

    def state_dict(self) -> dict:
        return {"sampler": self.sampler.state_dict(),
                "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None}

    def load_state_dict(self, state: dict) -> None:
        if state.get("pair_source") == DeviceBackend.SOURCE:
            raise SGNSError(WRONG_SOURCE.format(ran="the torch device pipeline (trainer.kernel=torch or a CUDA device)",
                                                use="trainer.kernel=torch"))
        if "sampler" not in state:
            raise SGNSError("this run's checkpoint was written by the numba kernel over token spans: resume it "
                            "on the CPU with trainer.kernel=numba (or auto) and optimizer.name=sgd")
        self.sampler.load_state_dict(state["sampler"])
        if self.optimizer is not None and state.get("optimizer") is not None:
            self.optimizer.load_state_dict(state["optimizer"])


WRONG_SOURCE = ("this run's checkpoint was trained with {ran}, which builds different pairs: resume it with {use}, "
                "or start a new run (another hydra.run.dir)")


class DeviceBackend:
    """The torch backend: pairs and negatives built as torch ops on the training device (sgns.pipelines.device),
    trained by the torch SGD step (row-capped for large batches) or SparseAdam. The same code on CPU and CUDA.

    Its randomness is a pure function of the batch position, so its checkpoint state is only a tag saying
    which pair source the run used (and the SparseAdam state).
    """

    SOURCE = "device"

    def __init__(self, data: DevicePairBatches, model: SGNS, row_cap: float,
                 optimizer: Optional[torch.optim.Optimizer] = None, fixed_lr: bool = False, lr_scale: float = 1.0):
        self.data, self.model, self.row_cap, self.lr_scale = data, model, row_cap, lr_scale
        self.optimizer, self.fixed_lr = optimizer, fixed_lr
        self.counter = RowCounter(model.input.weight.shape[0], model.input.weight.device) if row_cap > 0 else None
        self.total_words = data.total_words()

    def batches(self, start: Position) -> Iterator[DeviceBatch]:
        self.data.start = start
        return iter(self.data)

    def step(self, batch: DeviceBatch, lr: float) -> torch.Tensor:
        if self.optimizer is not None:
            return optimizer_step(self.model, self.optimizer, batch.centers, batch.contexts, batch.negatives,
                                  None if self.fixed_lr else lr)
        return sgd_step(self.model, batch.centers, batch.contexts, batch.negatives, lr * self.lr_scale,
                        self.row_cap, self.counter)

    def state_dict(self) -> dict:
        return {"pair_source": self.SOURCE,
                "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None}

    def load_state_dict(self, state: dict) -> None:
        if state.get("pair_source") != self.SOURCE:
            raise SGNSError(WRONG_SOURCE.format(ran="a CPU pipeline (trainer.kernel=numba, or auto on the CPU)",
                                                use="that trainer.kernel and trainer.device=cpu"))
        if self.optimizer is not None and state.get("optimizer") is not None:
            self.optimizer.load_state_dict(state["optimizer"])


def make_device_backend(cfg: Any, corpus: EncodedCorpus, vocab: Vocabulary, model: SGNS,
                        device: torch.device, shard: Optional[Shard] = None) -> DeviceBackend:
    d, t, o = cfg.data, cfg.trainer, cfg.optimizer
    batch_size = d.batch_size or DEVICE_BATCH_SIZE
    data = DevicePairBatches(corpus, vocab, d.window, d.subsample, batch_size, d.chunk_tokens, t.epochs, t.seed,
                             d.negatives, d.shared_negatives, d.ns_exponent, device, shard)
    if o.name == "sparse_adam":
        optimizer = torch.optim.SparseAdam(list(model.parameters()), lr=o.lr)
        return DeviceBackend(data, model, 0.0, optimizer, fixed_lr=not o.decay)
    return DeviceBackend(data, model, default_row_cap(batch_size) if o.row_cap is None else o.row_cap,
                         lr_scale=default_lr_scale(batch_size) if o.lr_scale is None else o.lr_scale)
