"""Pipelines: a batch source and the step that trains on its batches, one module each, chosen once at setup.

The training loop sees a `Pipeline` and nothing else of the hot path:

    for batch in pipeline.batches(position):    # whatever the pipeline's batch source yields
        loss = pipeline.step(batch, lr)         # trains on it; the summed loss (0-d tensor or float)
        ... batch.words_done, batch.pairs, batch.resume_position ...

so every kernel and optimizer is one `step(batch, lr)`, and the loop never branches on them. Four pipelines
(the tag each writes into checkpoints, checked on restore by sgns.pipelines.base):

- `span` (sgns.pipelines.span; `trainer.kernel=numba`, the CPU default, also under torchrun): batches are token
  spans and one compiled pass does subsampling, windows, negatives and the SGD update, on all cores racing as
  word2vec does, or deterministic (`trainer.deterministic=true`).
- `device` (sgns.pipelines.device; `trainer.kernel=torch`, the CUDA default): pairs and negatives built as torch
  ops on the training device, stepped by the torch SGD step (sgns.pipelines.torch_step) or SparseAdam.
- `pairs` (sgns.pipelines.pairs; `optimizer=sparse_adam` on the CPU): shuffled positive pairs built by numpy with
  negatives drawn in (sgns.pipelines.negatives), stepped through torch.optim.SparseAdam.
- `softmax` (sgns.pipelines.softmax; `model=full_softmax`): the pair batches, trained with the full softmax.

`choose_pipeline` holds every rule that picks one; `resolve_settings` turns the "auto"/null settings into the
values this run uses (logged and saved by the loop), and `make_pipeline` builds the pipeline from them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Dict, Iterator, Optional, Protocol

import numpy as np
import torch

from sgns.corpus import EncodedCorpus
from sgns.device import cpu_threads
from sgns.errors import SGNSError
from sgns.model import SGNS
from sgns.pipelines.base import PipelineBase
from sgns.pipelines.device import CPU_BATCH_SIZE, device_step_defaults, make_device_pipeline
from sgns.pipelines.negatives import NegativeSampler, unigram_table
from sgns.pipelines.pairs import PairBatches, PairPipeline, make_pair_step
from sgns.pipelines.plan import Position
from sgns.pipelines.softmax import SoftmaxPipeline
from sgns.pipelines.span import SpanPipeline, TokenSpans
from sgns.vocab import Vocabulary

if TYPE_CHECKING:
    from sgns.distributed import Shard

__all__ = ["Pipeline", "Settings", "TrainBatch", "choose_pipeline", "learning_rate", "make_pipeline",
           "resolve_settings"]


class TrainBatch(Protocol):
    """What the loop reads of a batch (besides handing it to `step`). Under torchrun the loop also reads
    `epoch`, `chunk` and `chunk_fraction` (how far into its chunk the rank is), to merge at the same points."""

    words_done: float  # corpus words covered once this batch is trained (lr decay, progress, eval cadence)

    @property
    def pairs(self) -> int: ...  # positive pairs trained (read after `step`, which may fill it in)

    @property
    def resume_position(self) -> Position: ...  # where the data continues once this batch is trained


class Pipeline(Protocol):
    """A batch source and the step that trains on its batches, with their state for checkpoints."""

    total_words: int  # corpus words over the whole run (every epoch)

    def batches(self, start: Position) -> Iterator[TrainBatch]: ...

    def step(self, batch: Any, lr: float) -> torch.Tensor | float: ...

    def freeze(self, weight: torch.Tensor, rows: Optional[np.ndarray]) -> None: ...  # model.freeze_init

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


def learning_rate(cfg: Any, progress: float) -> float:
    """Word2vec's schedule for an `optimizer` config: linear from lr to lr * min_lr_ratio over the whole run."""
    if not cfg.decay:
        return cfg.lr
    return cfg.lr * max(1.0 - progress, cfg.min_lr_ratio)


def choose_pipeline(cfg: Any, device: torch.device) -> str:
    """The pipeline for model.name, optimizer.name, trainer.kernel and the device (every rule that picks one);
    SGNSError for a combination no pipeline runs."""
    kernel, optimizer = cfg.trainer.kernel, cfg.optimizer.name
    if cfg.model.name == "full_softmax":
        if kernel not in ("auto", "torch") or optimizer != "sgd":
            raise SGNSError(f"model=full_softmax trains with its own torch SGD step: use trainer.kernel=auto and "
                            f"optimizer=sgd (got trainer.kernel={kernel}, optimizer.name={optimizer})")
        return "softmax"
    if kernel == "numba":
        if device.type != "cpu":
            raise SGNSError(f"trainer.kernel=numba runs on the CPU only: use trainer.kernel=torch (or auto) with "
                            f"trainer.device={device}")
        if optimizer != "sgd":
            raise SGNSError(f"trainer.kernel=numba does plain SGD: use trainer.kernel=torch (or auto) with "
                            f"optimizer={optimizer}")
        return "span"
    if kernel == "torch" or device.type != "cpu":
        return "device"
    return "span" if optimizer == "sgd" else "pairs"


@dataclass(frozen=True)
class Settings:
    """The values this run uses for the settings left to "auto"/null, resolved once at setup."""

    pipeline: str  # trainer.kernel (with model.name, optimizer.name, the device): span | device | pairs | softmax
    device: str  # trainer.device
    threads: int  # trainer.threads for the numba kernel (0: the cores, shared by torchrun's local processes)
    batch_size: Optional[int]  # data.batch_size (None: the span pipeline trains spans, not batches of pairs)
    row_cap: Optional[float]  # optimizer.row_cap (None: the pipeline's step caps no rows)
    lr_scale: Optional[float]  # optimizer.lr_scale (None: the pipeline's step does not scale the lr)

    ASKED = {"pipeline": "trainer.kernel", "device": "trainer.device", "threads": "trainer.threads",
             "batch_size": "data.batch_size", "row_cap": "optimizer.row_cap", "lr_scale": "optimizer.lr_scale"}

    def with_asked(self, cfg: Any) -> Dict[str, Dict[str, Any]]:
        """{"asked": the config's values of these keys, "resolved": what they became}, for resolved.yaml."""
        return {"asked": {key: _select(cfg, key) for key in self.ASKED.values()},
                "resolved": {self.ASKED[name]: value for name, value in asdict(self).items()}}

    def describe(self) -> str:
        return ", ".join(f"{self.ASKED[name]}={value}" for name, value in asdict(self).items() if value is not None)


def _select(cfg: Any, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def resolve_settings(cfg: Any, device: torch.device, corpus_words: int) -> Settings:
    """Every "auto"/null setting of the hot path as the value this run uses (the device is resolved before, by
    sgns.device.resolve_device, or given by torchrun)."""
    pipeline = choose_pipeline(cfg, device)
    d, o = cfg.data, cfg.optimizer
    batch_size, row_cap, lr_scale = None, None, None
    if pipeline == "device":
        batch_size, row_cap, lr_scale = device_step_defaults(corpus_words, d.window, d.batch_size, o.row_cap,
                                                             o.lr_scale)
        if o.name == "sparse_adam":
            row_cap, lr_scale = 0.0, 1.0  # the autograd step neither caps rows nor scales the lr
    elif pipeline in ("pairs", "softmax"):
        batch_size = d.batch_size or CPU_BATCH_SIZE
    return Settings(pipeline, str(device), cpu_threads(cfg.trainer.threads), batch_size, row_cap, lr_scale)


def make_pipeline(settings: Settings, cfg: Any, corpus: EncodedCorpus, vocab: Vocabulary, model: SGNS,
                  device: torch.device, shard: Optional[Shard] = None) -> PipelineBase:
    """The pipeline `settings` name, built once at setup.

    `shard`: under torchrun, this rank's share of every epoch (sgns.distributed). Its random streams differ
    from the other ranks': the span and device pipelines key them by chunk, the pair pipeline's negatives by
    (seed, rank).
    """
    d, t = cfg.data, cfg.trainer
    if settings.pipeline == "span":
        return SpanPipeline(TokenSpans(corpus, d.span_tokens, t.epochs, shard), model, vocab, d.window, d.negatives,
                            d.subsample, d.ns_exponent, t.seed, settings.threads, t.deterministic,
                            lambda progress: learning_rate(cfg.optimizer, progress), d.window_negatives)
    if settings.pipeline == "device":
        return make_device_pipeline(cfg, settings.batch_size, settings.row_cap, settings.lr_scale, corpus, vocab,
                                    model, device, shard)
    pairs = PairBatches(corpus, vocab, d.window, d.subsample, settings.batch_size, d.chunk_tokens, t.epochs,
                        t.seed, device, d.prefetch, shard)
    if settings.pipeline == "softmax":
        return SoftmaxPipeline(pairs, model)
    seed = t.seed if shard is None else int(np.random.SeedSequence([t.seed, shard.rank]).generate_state(1)[0])
    sampler = NegativeSampler(unigram_table(vocab.counts, d.ns_exponent), device, seed)
    pair_step, optimizer = make_pair_step(cfg, model)
    return PairPipeline(pairs, sampler, d.negatives, d.shared_negatives, pair_step, optimizer)
