"""Kernels: the per-batch work behind one step interface, chosen once at setup.

The training loop sees a `Backend` and nothing else of the hot path:

    for batch in backend.batches(position):     # whatever the backend's batch source yields
        loss = backend.step(batch, lr)          # trains on it; the summed loss (0-d tensor or float)
        ... batch.words_done, batch.pairs, batch.resume_position ...

so every kernel and optimizer is one `step(batch, lr)`, and the loop never branches on them. `PairBackend`
(the one there is today) yields batches of shuffled positive pairs (sgns.pairs) with their negatives drawn
in (sgns.negatives); its step runs the kernel `trainer.kernel` picks (`make_sgd_step`) or, for
`optimizer=sparse_adam`, an autograd step through torch.optim.SparseAdam. A backend whose batches are token
spans, and whose step draws its own negatives, plugs in the same way: give it `batches`, `step`,
`total_words` and `state_dict` / `load_state_dict` (its RNG and optimizer state, saved in checkpoints), and
build it in `make_backend`.

The kernels (`trainer.kernel`): `torch` (sgns.kernels.torch_kernels, the CUDA path) and `numba`, `sequential`,
`hogwild` (sgns.kernels.numba_kernels, CPU); `auto` is numba on CPU, torch on CUDA. See those modules. (Not
named torch.py / numba.py: a submodule becomes an attribute of its package, so it would shadow the library.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, Protocol, Tuple

import numpy as np
import torch

from sgns.corpus import EncodedCorpus
from sgns.errors import SGNSError
from sgns.kernels import numba_kernels
from sgns.kernels.torch_kernels import optimizer_step, sgd_step
from sgns.model import SGNS
from sgns.negatives import NegativeSampler, unigram_table
from sgns.pairs import Batch, PairBatches
from sgns.vocab import Vocabulary

if TYPE_CHECKING:
    from sgns.distributed import Shard

Position = Tuple[int, int, int]  # (epoch, chunk, batch) a run continues from
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


def make_sgd_step(kernel: str, device: torch.device, threads: int = 0) -> PairKernel:
    """The plain-SGD pair kernel for `trainer.kernel`: auto is numba on CPU (torch where numba is missing),
    torch on CUDA."""
    numba = numba_kernels.numba
    if kernel == "auto":
        kernel = "numba" if device.type == "cpu" and numba is not None else "torch"
    if kernel == "torch":
        return sgd_step
    if device.type != "cpu":
        raise SGNSError(f"trainer.kernel={kernel} runs on the CPU only: use trainer.kernel=torch (or auto) "
                        f"with trainer.device={device}")
    if numba is None:
        raise SGNSError(f"trainer.kernel={kernel} needs numba, which is not installed: pip install numba")
    if kernel == "hogwild":  # racing threads over the batch: two unless asked
        numba.set_num_threads(min(threads or 2, numba.config.NUMBA_NUM_THREADS))
        return lambda model, centers, contexts, negatives, lr: numba_kernels.hogwild_step(
            model, centers, contexts, negatives, lr, numba.get_num_threads())
    # One compute thread unless asked: the data thread has the other core, and on a shared 2-core machine
    # parallel regions per batch measured slower than one thread.
    numba.set_num_threads(min(threads or 1, numba.config.NUMBA_NUM_THREADS))
    return numba_kernels.numba_step if kernel == "numba" else numba_kernels.sequential_step


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
        self.sampler.load_state_dict(state["sampler"])
        if self.optimizer is not None and state.get("optimizer") is not None:
            self.optimizer.load_state_dict(state["optimizer"])


def make_backend(cfg: Any, corpus: EncodedCorpus, vocab: Vocabulary, model: SGNS, device: torch.device,
                 shard: Optional[Shard] = None) -> Backend:
    """The backend for the config (batch source, step, their state), built once at setup.

    `shard`: under torchrun, this rank's share of every epoch (sgns.distributed); its negatives then come from
    a stream of its own, seeded by (seed, rank).
    """
    d, t = cfg.data, cfg.trainer
    pairs = PairBatches(corpus, vocab, d.window, d.subsample, d.batch_size, d.chunk_tokens, t.epochs, t.seed,
                        device, d.prefetch, shard)
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
