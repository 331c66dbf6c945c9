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

from typing import Any, Callable, Iterator, Optional, Protocol, Tuple

import torch

from sgns.corpus import EncodedCorpus
from sgns.errors import SGNSError

try:  # numba is a dependency, but the torch path must keep working where it cannot be imported
    from sgns.kernels import numba_kernels
except ImportError:  # pragma: no cover
    numba_kernels = None  # type: ignore[assignment]
from sgns.kernels.torch_kernels import optimizer_step, sgd_step
from sgns.model import SGNS
from sgns.negatives import NegativeSampler, unigram_table
from sgns.pairs import Batch, PairBatches
from sgns.vocab import Vocabulary

Position = Tuple[int, int, int]  # (epoch, chunk, batch) a run continues from
# A pair kernel: one plain-SGD update of `model` on (centers, contexts, negatives) at `lr`; the summed loss.
PairKernel = Callable[[SGNS, torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor]


class TrainBatch(Protocol):
    """What the loop reads of a batch (besides handing it to `step`)."""

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
        if "sampler" not in state:
            raise SGNSError("this run's checkpoint was written by the numba kernel over token spans: resume it "
                            "on the CPU with trainer.kernel=numba (or auto) and optimizer.name=sgd")
        self.sampler.load_state_dict(state["sampler"])
        if self.optimizer is not None and state.get("optimizer") is not None:
            self.optimizer.load_state_dict(state["optimizer"])


def make_backend(cfg: Any, corpus: EncodedCorpus, vocab: Vocabulary, model: SGNS, device: torch.device) -> Backend:
    """The backend for the config (batch source, step, their state), built once at setup."""
    d, t = cfg.data, cfg.trainer
    if uses_numba(cfg, device):
        from sgns.spans import TokenSpans

        return numba_kernels.SpanBackend(TokenSpans(corpus, d.span_tokens, t.epochs), model, vocab, d.window,
                                         d.negatives, d.subsample, d.ns_exponent, t.seed, t.threads, t.deterministic,
                                         lambda progress: learning_rate(cfg.optimizer, progress))
    pairs = PairBatches(corpus, vocab, d.window, d.subsample, d.batch_size, d.chunk_tokens, t.epochs, t.seed,
                        device, d.prefetch)
    sampler = NegativeSampler(unigram_table(vocab.counts, d.ns_exponent), device, t.seed)
    pair_step, optimizer = make_pair_step(cfg, model, device)
    return PairBackend(pairs, sampler, d.negatives, d.shared_negatives, pair_step, optimizer)
