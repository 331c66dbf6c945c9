"""Kernels: the per-batch work behind one step interface, chosen once at setup.

The training loop sees a `Backend` and nothing else of the hot path:

    for batch in backend.batches(position):     # whatever the backend's batch source yields
        loss = backend.step(batch, lr)          # trains on it; the summed loss (0-d tensor or float)
        ... batch.words_done, batch.pairs, batch.resume_position ...

so every kernel and optimizer is one `step(batch, lr)`, and the loop never branches on them. Two backends:

- `SpanBackend` (sgns.kernels.numba_kernels; `trainer.kernel=numba`, the CPU default): batches are token
  spans (sgns.spans) and one compiled pass does subsampling, windows, negatives and the SGD update, on all
  cores racing as word2vec does, or deterministic (`trainer.deterministic=true`).
- `PairBackend` (`trainer.kernel=torch`, the CUDA default, and `optimizer=sparse_adam` anywhere): shuffled
  positive pairs (sgns.pairs) with negatives drawn in (sgns.negatives), stepped by the torch kernel
  (sgns.kernels.torch_kernels) or an autograd step through torch.optim.SparseAdam.

(The modules are not named torch.py / numba.py: a submodule becomes an attribute of its package, so it would
shadow the library.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, Protocol, Tuple

import numpy as np
import torch

from sgns.corpus import EncodedCorpus
from sgns.errors import SGNSError

try:  # numba is a dependency, but the torch path must keep working where it cannot be imported
    from sgns.kernels import numba_kernels
except ImportError:  # pragma: no cover
    numba_kernels = None  # type: ignore[assignment]
from sgns.kernels.torch_kernels import RowCounter, optimizer_step, sgd_step
from sgns.model import SGNS
from sgns.negatives import NegativeSampler, unigram_table
from sgns.pairs import Batch, PairBatches
from sgns.pairs_device import DeviceBatch, DevicePairBatches
from sgns.vocab import Vocabulary

if TYPE_CHECKING:
    from sgns.distributed import Shard

Position = Tuple[int, int, int]  # (epoch, chunk, batch) a run continues from
CPU_BATCH_SIZE = 4096  # data.batch_size=null on the CPU pair pipeline (numba kernels)
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
# A pair kernel: one plain-SGD update of `model` on (centers, contexts, negatives) at `lr`; the summed loss.
PairKernel = Callable[[SGNS, torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor]


class TrainBatch(Protocol):
    """What the loop reads of a batch (besides handing it to `step`). Under torchrun the loop also reads
    `epoch`, `chunk` and `chunk_fraction` (how far into its chunk the rank is), to merge at the same points."""

    words_done: float  # corpus words covered once this batch is trained (lr decay, progress, eval cadence)

    @property
    def pairs(self) -> int: ...  # positive pairs trained (read after `step`, which may fill it in)

    @property
    def resume_position(self) -> Position: ...  # where the data continues once this batch is trained


class Backend(Protocol):
    """A batch source and the step that trains on its batches, with their state for checkpoints."""

    total_words: int  # corpus words over the whole run (every epoch)

    def batches(self, start: Position) -> Iterator[TrainBatch]: ...

    def step(self, batch: Any, lr: float) -> torch.Tensor | float: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


def learning_rate(cfg: Any, progress: float) -> float:
    """Word2vec's schedule for an `optimizer` config: linear from lr to lr * min_lr_ratio over the whole run."""
    if not cfg.decay:
        return cfg.lr
    return cfg.lr * max(1.0 - progress, cfg.min_lr_ratio)


def uses_numba(cfg: Any, device: torch.device) -> bool:
    """Whether `trainer.kernel` (auto: on the CPU with plain SGD, when numba imports) picks the fused numba
    kernel; SGNSError for a combination it cannot run."""
    kernel, sgd = cfg.trainer.kernel, cfg.optimizer.name == "sgd"
    if kernel == "numba":
        if device.type != "cpu":
            raise SGNSError(f"trainer.kernel=numba runs on the CPU only: use trainer.kernel=torch (or auto) with "
                            f"trainer.device={device}")
        if not sgd:
            raise SGNSError(f"trainer.kernel=numba does plain SGD: use trainer.kernel=torch (or auto) with "
                            f"optimizer={cfg.optimizer.name}")
        if numba_kernels is None:
            raise SGNSError("trainer.kernel=numba needs numba, which is not installed: pip install numba")
    return kernel == "numba" or (kernel == "auto" and device.type == "cpu" and sgd and numba_kernels is not None)


def make_sgd_step(kernel: str, device: torch.device, threads: int = 0) -> PairKernel:
    """The plain-SGD kernel of the pair pipeline: the torch step (exact batch SGD, any device)."""
    return sgd_step


# One training update on (centers, contexts, negatives) at `lr`, with the model (and optimizer) bound in.
PairStep = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor]


def make_pair_step(cfg: Any, model: SGNS, device: torch.device) -> Tuple[PairStep, Optional[torch.optim.Optimizer]]:
    """The update for `optimizer` and `trainer.kernel`, and the torch optimizer it steps (None for plain SGD)."""
    o, t = cfg.optimizer, cfg.trainer
    if o.name == "sparse_adam":
        optimizer = torch.optim.SparseAdam(list(model.parameters()), lr=o.lr)
        fixed_lr = not o.decay  # SparseAdam keeps its own lr unless the schedule decays it

        def adam_step(centers: torch.Tensor, contexts: torch.Tensor, negatives: torch.Tensor,
                      lr: float) -> torch.Tensor:
            return optimizer_step(model, optimizer, centers, contexts, negatives, None if fixed_lr else lr)

        return adam_step, optimizer
    kernel = make_sgd_step(t.kernel, device, t.threads)

    def sgd(centers: torch.Tensor, contexts: torch.Tensor, negatives: torch.Tensor, lr: float) -> torch.Tensor:
        return kernel(model, centers, contexts, negatives, lr)

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


def uses_device_pipeline(kernel: str, device: torch.device) -> bool:
    """trainer.kernel=torch, or auto on an accelerator: pairs and negatives are built on the device."""
    return kernel == "torch" or (kernel == "auto" and device.type != "cpu")


class DeviceBackend:
    """The torch backend: pairs and negatives built as torch ops on the training device (sgns.pairs_device),
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


def make_backend(cfg: Any, corpus: EncodedCorpus, vocab: Vocabulary, model: SGNS, device: torch.device,
                 shard: Optional[Shard] = None) -> Backend:
    """The backend for the config (batch source, step, their state), built once at setup.

    `shard`: under torchrun, this rank's share of every epoch (sgns.distributed); its negatives then come from
    a stream of its own, seeded by (seed, rank).
    """
    d, t = cfg.data, cfg.trainer
    if cfg.model.name != "full_softmax":
        if uses_device_pipeline(t.kernel, device):
            return make_device_backend(cfg, corpus, vocab, model, device, shard)
        if shard is not None and t.kernel == "numba":
            raise SGNSError("trainer.kernel=numba does not run under torchrun yet: use trainer.kernel=auto (the pair "
                            "pipeline on CPUs) or trainer.kernel=torch")
        if shard is None and uses_numba(cfg, device):
            from sgns.spans import TokenSpans

            return numba_kernels.SpanBackend(TokenSpans(corpus, d.span_tokens, t.epochs), model, vocab, d.window,
                                             d.negatives, d.subsample, d.ns_exponent, t.seed, t.threads,
                                             t.deterministic, lambda progress: learning_rate(cfg.optimizer, progress))
    pairs = PairBatches(corpus, vocab, d.window, d.subsample, d.batch_size or CPU_BATCH_SIZE, d.chunk_tokens,
                        t.epochs, t.seed, device, d.prefetch, shard)
    if cfg.model.name == "full_softmax":
        from sgns.kernels.softmax import SoftmaxBackend

        if t.kernel not in ("auto", "torch") or cfg.optimizer.name != "sgd":
            raise SGNSError(f"model=full_softmax trains with its own torch SGD step: use trainer.kernel=auto and "
                            f"optimizer=sgd (got trainer.kernel={t.kernel}, optimizer.name={cfg.optimizer.name})")
        return SoftmaxBackend(pairs, model)
    seed = t.seed if shard is None else int(np.random.SeedSequence([t.seed, shard.rank]).generate_state(1)[0])
    sampler = NegativeSampler(unigram_table(vocab.counts, d.ns_exponent), device, seed)
    pair_step, optimizer = make_pair_step(cfg, model, device)
    return PairBackend(pairs, sampler, d.negatives, d.shared_negatives, pair_step, optimizer)
