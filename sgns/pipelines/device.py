"""The device pipeline: a chunk's token ids -> subsampled, windowed, shuffled pairs + negatives, all as torch ops,
trained by the torch SGD step (row-capped for large batches) or SparseAdam.

The same code runs on the CPU (`trainer.device=cpu trainer.kernel=torch`) and on CUDA: a chunk's token ids
are copied to the device once, then out-of-vocabulary tokens are dropped, frequent words subsampled with
word2vec's keep probability, a radius drawn uniformly in [1, window] per kept token, every word within that
radius in the same sentence paired with it, the pairs shuffled, and each batch's negatives drawn from the
unigram^0.75 distribution through alias tables, without a sync to the host per batch.

Randomness comes from `torch.Generator`s seeded by (seed, epoch, chunk) for a chunk's pairs and by
(seed, epoch, chunk, batch) for a batch's negatives, so any batch can be regenerated exactly: that is what
makes resume exact on this path too. (CPU and CUDA generators differ, so the two devices draw different
but identically distributed samples.)

`DevicePipeline` steps the batches with sgns.pipelines.torch_step; `device_step_defaults` fills in its batch
size, row cap and lr scale when they are left null.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator, Optional, Tuple

import numpy as np
import torch

from sgns.config import DataConfig
from sgns.corpus import EncodedCorpus
from sgns.model import SGNS
from sgns.pipelines.base import PipelineBase
from sgns.pipelines.negatives import alias_table, unigram_table
from sgns.pipelines.plan import ChunkPlan, PairBatch, Position, keep_probabilities
from sgns.pipelines.torch_step import FixedShapeStep, RowCounter, optimizer_step, sgd_step
from sgns.vocab import Vocabulary

if TYPE_CHECKING:
    from sgns.distributed import Shard

# Streams of randomness per (seed, epoch, chunk): kept apart so that e.g. drawing more negatives never
# shifts the pairs.
_PAIRS, _NEGATIVES = 0, 1


def stream_seed(*parts: int) -> int:
    """A 64-bit generator seed from integer parts (SeedSequence mixes them, so nearby tuples are unrelated)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0])


def seeded_generator(device: torch.device, *parts: int) -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(stream_seed(*parts))
    return generator


class AliasTable:
    """Walker alias tables of a fixed distribution on the device: O(1) per draw, two gathers, no host sync."""

    def __init__(self, probs: np.ndarray, device: torch.device):
        accept, alias = alias_table(probs)
        self.accept = torch.tensor(accept, dtype=torch.float32, device=device)
        self.alias = torch.tensor(alias, dtype=torch.int32, device=device)
        self.size = len(probs)

    def sample(self, shape: Tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        """int32 draws of `shape` from the distribution."""
        device = self.accept.device
        slot = torch.randint(self.size, shape, generator=generator, device=device, dtype=torch.int32)
        coin = torch.rand(shape, generator=generator, device=device)
        return torch.where(coin < self.accept[slot], slot, self.alias[slot])


def subsample(ids: torch.Tensor, keep: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mask of the tokens kept: in the vocabulary (id >= 0) and surviving word2vec's subsampling."""
    coin = torch.rand(ids.shape, generator=generator, device=ids.device, dtype=keep.dtype)
    return (ids >= 0) & (coin < keep[ids.clamp(min=0)])


def window_pairs(ids: torch.Tensor, sentence: torch.Tensor, window: int,
                 generator: torch.Generator) -> torch.Tensor:
    """All (center, context) pairs within a per-token radius drawn uniformly from [1, window], same sentence,
    packed one int64 per pair (center * 2**32 + context: one array to select, shuffle and slice).

    One boolean mask per offset and direction (2 * window host syncs per chunk for the sizes, none per pair);
    only the selected positions are gathered and packed.
    """
    radius = torch.randint(1, window + 1, ids.shape, generator=generator, device=ids.device, dtype=torch.int8)
    wide = ids.long()
    high = wide << 32
    parts = []
    for offset in range(1, min(window, len(ids) - 1) + 1):
        same = sentence[:-offset] == sentence[offset:]
        right = (same & (radius[:-offset] >= offset)).nonzero().squeeze(1)  # center i, context i + offset
        left = (same & (radius[offset:] >= offset)).nonzero().squeeze(1) + offset  # center i, context i - offset
        parts += [high[right] | wide[right + offset], high[left] | wide[left - offset]]
    return torch.cat(parts) if parts else wide[:0]


def unpack(pairs: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(centers, contexts) as int32 from packed pairs."""
    return (pairs >> 32).to(torch.int32), (pairs & 0xFFFFFFFF).to(torch.int32)


class DevicePairBatches:
    """Iterable over device batches of (centers, contexts, negatives) for every epoch, resumable at any batch."""

    def __init__(self, corpus: EncodedCorpus, vocab: Vocabulary, data: DataConfig, epochs: int, seed: int,
                 device: torch.device = torch.device("cpu"), shard: Optional[Shard] = None):
        """`data`: window, subsample, batch_size (resolved: an int), chunk_tokens, negatives, shared_negatives,
        ns_exponent."""
        self.corpus, self.window, self.batch_size, self.seed = corpus, data.window, data.batch_size, seed
        self.k, self.shared, self.device = data.negatives, data.shared_negatives, device
        self.remap = torch.from_numpy(vocab.remap(len(corpus.counts))).to(device)
        self.keep = torch.from_numpy(keep_probabilities(vocab.counts, data.subsample)).to(device, torch.float32)
        self.noise = AliasTable(unigram_table(vocab.counts, data.ns_exponent), device)
        self.total_tokens = corpus.total_tokens
        self.plan = ChunkPlan(corpus.total_tokens, data.chunk_tokens, epochs, shard, data.order, seed, data.streams)
        self.start: Position = (0, 0, 0)  # (epoch, slot, batch) to begin at; set by resume

    def chunk_tokens_on_device(self, chunk: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """(vocabulary ids, -1 for dropped words; sentence number) of a chunk's tokens, on the device."""
        ids_np, starts_np = self.plan.read(self.corpus, chunk)
        raw = torch.from_numpy(ids_np)
        if self.device.type == "cuda":
            raw = raw.pin_memory()
        ids = self.remap[raw.to(self.device, non_blocking=True).long()]
        starts = torch.from_numpy(starts_np[:-1]).to(self.device)
        boundary = torch.zeros(len(raw), dtype=torch.int32, device=self.device)
        boundary[starts] = 1
        return ids, torch.cumsum(boundary, 0, dtype=torch.int32)

    def chunk_pairs(self, epoch: int, chunk: int) -> torch.Tensor:
        """Shuffled packed pairs (see `window_pairs`) of one chunk on the device: a pure function of
        (seed, epoch, chunk)."""
        generator = seeded_generator(self.device, self.seed, epoch, chunk, _PAIRS)
        ids, sentence = self.chunk_tokens_on_device(chunk)
        kept = subsample(ids, self.keep, generator).nonzero().squeeze(1)  # one sync for both selections
        pairs = window_pairs(ids[kept], sentence[kept], self.window, generator)
        return pairs[torch.randperm(len(pairs), generator=generator, device=self.device)]

    def batch_negatives(self, epoch: int, chunk: int, index: int, size: int) -> torch.Tensor:
        """(ceil(size / shared), K) negatives of one batch: a pure function of (seed, epoch, chunk, index)."""
        generator = seeded_generator(self.device, self.seed, epoch, chunk, _NEGATIVES, index)
        return self.noise.sample((-(-size // self.shared), self.k), generator)

    def __iter__(self) -> Iterator[PairBatch]:
        for epoch, slot, chunk, first in self.plan.chunks(self.start):
            centers_all, contexts_all = unpack(self.chunk_pairs(epoch, chunk))  # once a chunk: batches are views
            n_batches = max(1, -(-len(centers_all) // self.batch_size))
            for b in range(first, n_batches):
                rows = slice(b * self.batch_size, (b + 1) * self.batch_size)
                centers, contexts = centers_all[rows], contexts_all[rows]
                done = self.plan.words_done(epoch, slot, b + 1, n_batches)
                yield PairBatch(centers, contexts, epoch, chunk, slot, b, done, (b + 1) / n_batches,
                                self.batch_negatives(epoch, chunk, b, len(centers)))

    def total_words(self) -> int:
        return self.plan.total_words()


# ------------------------------------------------------------------------------- the step and its defaults

CPU_BATCH_SIZE = 4096  # data.batch_size=null on the CPU pair pipelines; up to it the exact step at the given lr
# The device pipeline's largest default batch, and the row cap and lr multiplier above CPU_BATCH_SIZE (how they
# were chosen: docs/device_pipeline.md, docs/notes_from_code.md).
DEVICE_BATCH_SIZE = 65536
DEVICE_ROW_CAP = 32.0
DEVICE_LR_SCALE = 2.0
DEVICE_MIN_STEPS_PER_EPOCH = 1000  # the default batch leaves at least this many steps in an epoch
PAIRS_PER_KEPT_WORD_SHARE = 0.7  # positive pairs per corpus word / (window + 1), on English text at 1e-3


def default_batch_size(corpus_words: int, window: int) -> int:
    """data.batch_size=null on this pipeline: the largest power of two of pairs per step that still leaves
    DEVICE_MIN_STEPS_PER_EPOCH steps an epoch, within [CPU_BATCH_SIZE, DEVICE_BATCH_SIZE]. Pairs per epoch are
    estimated as corpus_words * (window + 1) * PAIRS_PER_KEPT_WORD_SHARE (a radius uniform in [1, window] gives
    window + 1 pairs per kept word on average). Too few steps (65,536 pairs on a 3M-word corpus: ~200 an epoch)
    starve the capped rows and the vectors come out far worse (docs/device_pipeline.md)."""
    pairs_per_epoch = corpus_words * (window + 1) * PAIRS_PER_KEPT_WORD_SHARE
    fits = max(1, int(pairs_per_epoch // DEVICE_MIN_STEPS_PER_EPOCH))
    return min(DEVICE_BATCH_SIZE, max(CPU_BATCH_SIZE, 1 << (fits.bit_length() - 1)))


def device_step_defaults(corpus_words: int, window: int, batch_size: Optional[int], row_cap: Optional[float],
                         lr_scale: Optional[float]) -> Tuple[int, float, float]:
    """(data.batch_size, optimizer.row_cap, optimizer.lr_scale) of the device pipeline's SGD step, each null one
    filled in: the batch from the corpus size (default_batch_size); up to CPU_BATCH_SIZE pairs the exact step at
    the given lr, above it DEVICE_ROW_CAP terms per row at DEVICE_LR_SCALE x lr."""
    batch = batch_size or default_batch_size(corpus_words, window)
    large = batch > CPU_BATCH_SIZE
    return (batch, (DEVICE_ROW_CAP if large else 0.0) if row_cap is None else row_cap,
            (DEVICE_LR_SCALE if large else 1.0) if lr_scale is None else lr_scale)


class DevicePipeline(PipelineBase):
    """Pairs and negatives built as torch ops on the training device, trained by the torch SGD step (row-capped
    for large batches) or SparseAdam. The same code on CPU and CUDA.

    Its randomness is a pure function of the batch position, so its checkpoint state is only its tag (and the
    SparseAdam state).
    """

    name = "device"

    def __init__(self, data: DevicePairBatches, model: SGNS, row_cap: float,
                 optimizer: Optional[torch.optim.Optimizer] = None, fixed_lr: bool = False, lr_scale: float = 1.0,
                 step_mode: str = "eager"):
        self.data, self.model, self.row_cap, self.lr_scale = data, model, row_cap, lr_scale
        self.optimizer, self.fixed_lr = optimizer, fixed_lr
        self.counter = RowCounter(model.input.weight.shape[0], model.input.weight.device) if row_cap > 0 else None
        self.fixed = (FixedShapeStep(model, data.batch_size, data.shared, data.k, row_cap, step_mode)
                      if step_mode != "eager" else None)
        self.total_words = data.total_words()

    def batches(self, start: Position) -> Iterator[PairBatch]:
        self.data.start = start
        return iter(self.data)

    def step(self, batch: PairBatch, lr: float) -> torch.Tensor:
        if self.optimizer is not None:
            loss = optimizer_step(self.model, self.optimizer, batch.centers, batch.contexts, batch.negatives,
                                  None if self.fixed_lr else lr)
        elif self.fixed is not None:
            loss = self.fixed(batch.centers, batch.contexts, batch.negatives, lr * self.lr_scale)
        else:
            loss = sgd_step(self.model, batch.centers, batch.contexts, batch.negatives, lr * self.lr_scale,
                            self.row_cap, self.counter)
        if self.frozen is not None:
            self.frozen.restore(torch.cat((batch.centers, batch.contexts)))
        return loss

    def own_state(self) -> dict:
        return {"optimizer": self.optimizer.state_dict() if self.optimizer is not None else None}

    def load_own_state(self, state: dict) -> None:
        if self.optimizer is not None and state.get("optimizer") is not None:
            self.optimizer.load_state_dict(state["optimizer"])
