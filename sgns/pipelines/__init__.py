"""Pipelines: a batch source and the step that trains on its batches, one module each, chosen once at setup.

The training loop sees a `Pipeline` and nothing else of the hot path:

    for batch in pipeline.batches(position):    # whatever the pipeline's batch source yields
        loss = pipeline.step(batch, lr)         # trains on it; the summed loss (0-d tensor or float)
        ... batch.words_done, batch.pairs, batch.resume_position ...

so every kernel and optimizer is one `step(batch, lr)`, and the loop never branches on them. Four pipelines
(the tag each writes into checkpoints, checked on restore by sgns.pipelines.base), whose batch sources share the
epoch/chunk plan and the pair batch (sgns.pipelines.plan):

- `span` (sgns.pipelines.span; `trainer.kernel=numba`, the CPU default, also under torchrun): batches are token
  spans and one compiled pass (sgns.pipelines.span_kernel) does subsampling, windows, negatives and the SGD
  update, on all cores racing as word2vec does, or deterministic (`trainer.deterministic=true`).
- `device` (sgns.pipelines.device; `trainer.kernel=torch`, the CUDA default): pairs and negatives built as torch
  ops on the training device, stepped by the torch SGD step (sgns.pipelines.torch_step) or SparseAdam.
- `pairs` (sgns.pipelines.pairs; `optimizer=sparse_adam` on the CPU): shuffled positive pairs built by numpy with
  negatives drawn in (sgns.pipelines.negatives), stepped through torch.optim.SparseAdam.
- `softmax` (sgns.pipelines.softmax; `model=full_softmax`): the pair batches, trained with the full softmax.

`model=subword` (fastText's skip-gram, sgns.model.SubwordSGNS) trains where SGNS does: on the CPU the span pipeline
runs the numba kernel's `train_piece_subword` (sgns.pipelines.subword_kernel) with the model's table of rows (the
span builder passes it); the device pipeline's step reads and updates a center's rows through the model's
`center_rows` (SGNS: one row a word).

This module is the one factory: `choose_pipeline` holds every rule that picks a pipeline or refuses a
combination (kernel, device, optimizer, objective, torch step, torchrun); `resolve` turns the "auto"/null settings
into the values this run uses (logged and saved by the loop); `make_optimizer` builds the optimizer (the one
place); and `BUILDERS` maps each pipeline's name to the function that builds it from the resolved config.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Dict, Iterator, Mapping, Optional, Protocol, Tuple

import numpy as np
import torch

from sgns.config import Config, OptimizerConfig
from sgns.corpus import EncodedCorpus
from sgns.device import cpu_threads
from sgns.errors import SGNSError
from sgns.model import SGNS, SubwordSGNS
from sgns.pipelines.base import PipelineBase
from sgns.pipelines.device import CPU_BATCH_SIZE, DevicePairBatches, DevicePipeline, device_step_defaults
from sgns.pipelines.negatives import NegativeSampler, unigram_table
from sgns.pipelines.pairs import PairBatches, PairPipeline, make_pair_step
from sgns.pipelines.plan import Position
from sgns.pipelines.softmax import SoftmaxPipeline
from sgns.pipelines.span import SpanPipeline, TokenSpans
from sgns.vocab import Vocabulary

if TYPE_CHECKING:
    from sgns.distributed import Shard

__all__ = ["BUILDERS", "Pipeline", "Resolved", "TrainBatch", "choose_pipeline", "learning_rate", "make_optimizer",
           "make_pipeline", "resolve"]


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


def learning_rate(optimizer: OptimizerConfig, progress: float) -> float:
    """Word2vec's schedule: linear from optimizer.lr to lr * min_lr_ratio over the whole run."""
    if not optimizer.decay:
        return optimizer.lr
    return optimizer.lr * max(1.0 - progress, optimizer.min_lr_ratio)


def choose_pipeline(config: Config, device: torch.device, world_size: int = 1) -> str:
    """The pipeline for model.name, optimizer.name, trainer.kernel and the device; SGNSError for a combination
    no pipeline runs (every compatibility rule is here: objectives, pipelines, optimizers, torch steps, torchrun)."""
    chosen, optimizer = config.trainer.kernel, config.optimizer.name  # trainer.kernel: the pipeline asked for
    subword = config.model.name == "subword"
    if subword and optimizer != "sgd":
        raise SGNSError(f"model=subword trains with fastText's SGD update (every row of a word gets the full "
                        f"gradient): use optimizer=sgd (got optimizer.name={optimizer})")
    if config.model.name == "full_softmax":
        if chosen not in ("auto", "torch") or optimizer != "sgd":
            raise SGNSError(f"model=full_softmax trains with its own torch SGD step: use trainer.kernel=auto and "
                            f"optimizer=sgd (got trainer.kernel={chosen}, optimizer.name={optimizer})")
        pipeline = "softmax"
    elif chosen == "numba":
        if device.type != "cpu":
            raise SGNSError(f"trainer.kernel=numba runs on the CPU only: use trainer.kernel=torch (or auto) with "
                            f"trainer.device={device}")
        if optimizer != "sgd":
            raise SGNSError(f"trainer.kernel=numba does plain SGD: use trainer.kernel=torch (or auto) with "
                            f"optimizer={optimizer}")
        pipeline = "span"
    elif chosen == "torch" or device.type != "cpu":
        pipeline = "device"
    else:
        pipeline = "span" if optimizer == "sgd" else "pairs"
    step_mode = config.trainer.torch_step
    if pipeline == "device" and optimizer != "sgd" and step_mode != "eager":
        raise SGNSError(f"trainer.torch_step={step_mode} is the sgd step: use trainer.torch_step=eager with "
                        f"optimizer={optimizer}")
    if pipeline == "device" and step_mode.endswith("cuda_graph") and device.type != "cuda":
        raise SGNSError(f"trainer.torch_step={step_mode} needs a CUDA device (got {device})")
    if pipeline == "device" and subword and step_mode != "eager":
        raise SGNSError(f"trainer.torch_step={step_mode} is SGNS's fixed-shape step (a word's n-gram rows vary in "
                        f"number): use trainer.torch_step=eager with model=subword")
    if world_size > 1 and optimizer != "sgd":
        raise SGNSError(f"torchrun runs train with optimizer.name=sgd only (optimizer.name={optimizer} keeps per-row "
                        f"state that the merge would not combine)")
    return pipeline


@dataclass(frozen=True)
class Resolved:
    """The run's pipeline and its typed config with every "auto"/null setting the hot path reads replaced by the
    value this run uses, resolved once at setup: the pipelines read `config`, never the asked values."""

    pipeline: str  # trainer.kernel (with model.name, optimizer.name, the device): span | device | pairs | softmax
    config: Config  # trainer.device, trainer.threads, data.batch_size, optimizer.row_cap and lr_scale resolved

    # The keys resolved, in resolved.yaml's order. data.batch_size is null for the span pipeline (it trains spans,
    # not batches of pairs), optimizer.row_cap and lr_scale unless the device pipeline's step uses them.
    KEYS: ClassVar[Tuple[str, ...]] = ("trainer.kernel", "trainer.device", "trainer.threads", "data.batch_size",
                                       "optimizer.row_cap", "optimizer.lr_scale")

    def values(self) -> Dict[str, Any]:
        """key -> the value this run uses (trainer.kernel: the pipeline's name)."""
        return {key: self.pipeline if key == "trainer.kernel" else _select(self.config, key) for key in self.KEYS}

    def step_size(self) -> Dict[str, Any]:
        """What one step (trainer.checkpoint_every, log_every count them) trains: {"size": N, "unit": words | pairs}.
        The span pipeline's step is a span of at most data.span_tokens corpus words, the others' a batch of pairs."""
        if self.pipeline == "span":
            return {"size": self.config.data.span_tokens, "unit": "words"}
        return {"size": self.config.data.batch_size, "unit": "pairs"}

    def with_asked(self, record: Mapping[str, Any]) -> Dict[str, Dict[str, Any]]:
        """{"asked": the run's config record's values of these keys, "resolved": what they became, "step": the step
        size}: resolved.yaml."""
        return {"asked": {key: _select(record, key) for key in self.KEYS}, "resolved": self.values(),
                "step": self.step_size()}

    def describe(self) -> str:
        step = self.step_size()
        return ", ".join([*(f"{key}={value}" for key, value in self.values().items() if value is not None),
                          f"step={step['size']:,} {step['unit']}"])


def _select(config: Config | Mapping[str, Any], key: str) -> Any:
    node = config
    for part in key.split("."):
        node = node[part] if isinstance(node, Mapping) else getattr(node, part)
    return node


def resolve(config: Config, device: torch.device, corpus_words: int, world_size: int = 1) -> Resolved:
    """The pipeline (`choose_pipeline`) and every "auto"/null setting of the hot path as the value this run uses
    (the device is resolved before, by sgns.device.resolve_device, or given by torchrun)."""
    pipeline = choose_pipeline(config, device, world_size)
    d, o, t = config.data, config.optimizer, config.trainer
    batch_size, row_cap, lr_scale = None, None, None
    if pipeline == "device":
        batch_size, row_cap, lr_scale = device_step_defaults(corpus_words, d.window, d.batch_size, o.row_cap,
                                                             o.lr_scale)
        if o.name != "sgd":
            row_cap, lr_scale = 0.0, 1.0  # the optimizer's autograd step neither caps rows nor scales the lr
    elif pipeline in ("pairs", "softmax"):
        batch_size = d.batch_size or CPU_BATCH_SIZE
    return Resolved(pipeline, replace(
        config, trainer=replace(t, device=str(device), threads=cpu_threads(t.threads)),
        data=replace(d, batch_size=batch_size), optimizer=replace(o, row_cap=row_cap, lr_scale=lr_scale)))


def make_optimizer(optimizer: OptimizerConfig, model: torch.nn.Module) -> Optional[torch.optim.Optimizer]:
    """The torch optimizer `optimizer.name` steps the tables with; None for sgd (the pipelines' own SGD steps)."""
    if optimizer.name == "sparse_adam":
        return torch.optim.SparseAdam(list(model.parameters()), lr=optimizer.lr)
    return None


# Each builder: (the resolved config, corpus, vocabulary, model, device, this rank's shard or None) -> pipeline.
# `shard`: under torchrun, this rank's share of every epoch (sgns.distributed). Its random streams differ from the
# other ranks': the span and device pipelines key them by chunk, the pair pipeline's negatives by (seed, rank).
Builder = Callable[[Config, EncodedCorpus, Vocabulary, SGNS, torch.device, Optional["Shard"]], PipelineBase]


def _span(config: Config, corpus: EncodedCorpus, vocab: Vocabulary, model: SGNS, device: torch.device,
          shard: Optional[Shard]) -> PipelineBase:
    d, t = config.data, config.trainer
    spans = TokenSpans(corpus, d.span_tokens, t.epochs, shard, d.order, t.seed, d.streams)
    return SpanPipeline(spans, model, vocab, d, t, lambda progress: learning_rate(config.optimizer, progress),
                        subwords=model.table if isinstance(model, SubwordSGNS) else None)


def _device(config: Config, corpus: EncodedCorpus, vocab: Vocabulary, model: SGNS, device: torch.device,
            shard: Optional[Shard]) -> PipelineBase:
    t, o = config.trainer, config.optimizer
    data = DevicePairBatches(corpus, vocab, config.data, t.epochs, t.seed, device, shard)
    return DevicePipeline(data, model, o.row_cap, make_optimizer(o, model), fixed_lr=not o.decay,
                          lr_scale=o.lr_scale, step_mode=t.torch_step)


def _pair_batches(config: Config, corpus: EncodedCorpus, vocab: Vocabulary, device: torch.device,
                  shard: Optional[Shard]) -> PairBatches:
    return PairBatches(corpus, vocab, config.data, config.trainer.epochs, config.trainer.seed, device, shard)


def _pairs(config: Config, corpus: EncodedCorpus, vocab: Vocabulary, model: SGNS, device: torch.device,
           shard: Optional[Shard]) -> PipelineBase:
    d, t, o = config.data, config.trainer, config.optimizer
    seed = t.seed if shard is None else int(np.random.SeedSequence([t.seed, shard.rank]).generate_state(1)[0])
    sampler = NegativeSampler(unigram_table(vocab.counts, d.ns_exponent), device, seed)
    optimizer = make_optimizer(o, model)
    return PairPipeline(_pair_batches(config, corpus, vocab, device, shard), sampler, d.negatives,
                        d.shared_negatives, make_pair_step(model, optimizer, fixed_lr=not o.decay), optimizer)


def _softmax(config: Config, corpus: EncodedCorpus, vocab: Vocabulary, model: SGNS, device: torch.device,
             shard: Optional[Shard]) -> PipelineBase:
    return SoftmaxPipeline(_pair_batches(config, corpus, vocab, device, shard), model)


BUILDERS: Dict[str, Builder] = {"span": _span, "device": _device, "pairs": _pairs, "softmax": _softmax}


def make_pipeline(resolved: Resolved, corpus: EncodedCorpus, vocab: Vocabulary, model: SGNS, device: torch.device,
                  shard: Optional[Shard] = None) -> PipelineBase:
    """The pipeline `resolved` names, built once at setup from its resolved config."""
    return BUILDERS[resolved.pipeline](resolved.config, corpus, vocab, model, device, shard)
