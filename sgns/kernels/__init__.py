"""Kernels: the per-batch work behind one step interface, chosen once at setup.

The training loop sees a `Backend` and nothing else of the hot path:

    for batch in backend.batches(position):     # whatever the backend's batch source yields
        loss = backend.step(batch, lr)          # trains on it; the summed loss (0-d tensor or float)
        ... batch.words_done, batch.pairs, batch.resume_position ...

so every kernel and optimizer is one `step(batch, lr)`, and the loop never branches on them. Three backends:

- `SpanBackend` (sgns.kernels.numba_kernels; `trainer.kernel=numba`, the CPU default, also under torchrun):
  batches are token spans (sgns.spans) and one compiled pass does subsampling, windows, negatives and the SGD
  update, on all cores racing as word2vec does, or deterministic (`trainer.deterministic=true`).
- `DeviceBackend` (`trainer.kernel=torch`, the CUDA default): pairs and negatives built as torch ops on the
  training device (sgns.pairs_device), stepped by the torch kernel (sgns.kernels.torch_kernels).
- `PairBackend` (`optimizer=sparse_adam` on the CPU, `model=full_softmax`): shuffled positive pairs built by
  numpy (sgns.pairs) with negatives drawn in (sgns.negatives), stepped by the torch kernel or an autograd step
  through torch.optim.SparseAdam.

(The modules are not named torch.py / numba.py: a submodule becomes an attribute of its package, so it would
shadow the library.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, Optional, Protocol

import numpy as np
import torch

from sgns.corpus import EncodedCorpus
from sgns.errors import SGNSError

try:  # numba is a dependency, but the torch path must keep working where it cannot be imported
    from sgns.kernels import numba_kernels
except ImportError:  # pragma: no cover
    numba_kernels = None  # type: ignore[assignment]
from sgns.kernels.torch_kernels import (  # the torch backends, and the defaults they are chosen with
    CPU_BATCH_SIZE,
    DEVICE_BATCH_SIZE,
    DEVICE_LR_SCALE,
    DEVICE_ROW_CAP,
    DeviceBackend,
    PairBackend,
    make_device_backend,
    make_pair_step,
)
from sgns.model import SGNS
from sgns.negatives import NegativeSampler, unigram_table
from sgns.pairs import PairBatches
from sgns.spans import Position
from sgns.vocab import Vocabulary

if TYPE_CHECKING:
    from sgns.distributed import Shard

__all__ = ["CPU_BATCH_SIZE", "DEVICE_BATCH_SIZE", "DEVICE_LR_SCALE", "DEVICE_ROW_CAP", "Backend", "DeviceBackend",
           "PairBackend", "TrainBatch", "learning_rate", "make_backend", "uses_device_pipeline", "uses_numba"]


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


def uses_device_pipeline(kernel: str, device: torch.device) -> bool:
    """trainer.kernel=torch, or auto on an accelerator: pairs and negatives are built on the device."""
    return kernel == "torch" or (kernel == "auto" and device.type != "cpu")


def make_backend(cfg: Any, corpus: EncodedCorpus, vocab: Vocabulary, model: SGNS, device: torch.device,
                 shard: Optional[Shard] = None) -> Backend:
    """The backend for the config (batch source, step, their state), built once at setup.

    `shard`: under torchrun, this rank's share of every epoch (sgns.distributed). Its random streams differ
    from the other ranks': the span and device pipelines key them by chunk, the pair pipeline's negatives by
    (seed, rank).
    """
    d, t = cfg.data, cfg.trainer
    if cfg.model.name != "full_softmax":
        if uses_device_pipeline(t.kernel, device):
            return make_device_backend(cfg, corpus, vocab, model, device, shard)
        if uses_numba(cfg, device):
            from sgns.spans import TokenSpans

            return numba_kernels.SpanBackend(TokenSpans(corpus, d.span_tokens, t.epochs, shard), model, vocab, d.window,
                                             d.negatives, d.subsample, d.ns_exponent, t.seed, t.threads,
                                             t.deterministic, lambda progress: learning_rate(cfg.optimizer, progress),
                                             d.window_negatives)
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
    pair_step, optimizer = make_pair_step(cfg, model)
    return PairBackend(pairs, sampler, d.negatives, d.shared_negatives, pair_step, optimizer)
