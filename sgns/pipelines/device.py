"""Device pipeline: a chunk's token ids -> subsampled, windowed, shuffled pairs + negatives, all as torch ops.

The same code runs on the CPU (`trainer.device=cpu trainer.kernel=torch`) and on CUDA: a chunk's token ids
are copied to the device once, then out-of-vocabulary tokens are dropped, frequent words subsampled with
word2vec's keep probability, a radius drawn uniformly in [1, window] per kept token, every word within that
radius in the same sentence paired with it, the pairs shuffled, and each batch's negatives drawn from the
unigram^0.75 distribution through alias tables, without a sync to the host per batch.

Randomness comes from `torch.Generator`s seeded by (seed, epoch, chunk) for a chunk's pairs and by
(seed, epoch, chunk, batch) for a batch's negatives, so any batch can be regenerated exactly: that is what
makes resume exact on this path too. (CPU and CUDA generators differ, so the two devices draw different
but identically distributed samples.)

The batches are trained by the torch backend (`sgns.pipelines.DeviceBackend`, step `sgns.pipelines.torch_step`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Optional, Tuple

import numpy as np
import torch

from sgns.corpus import EncodedCorpus
from sgns.pipelines.negatives import NegativeSampler, unigram_table
from sgns.pipelines.pairs import keep_probabilities, read_ids
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
        tables = NegativeSampler(probs, device, seed=0)  # builds accept/alias; its generator is unused here
        self.accept, self.alias = tables.accept, tables.alias.to(torch.int32)
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


@dataclass
class DeviceBatch:
    centers: torch.Tensor  # (B,) int32 vocabulary ids, on the training device
    contexts: torch.Tensor  # (B,) int32
    negatives: torch.Tensor  # (ceil(B / shared_negatives), K) int32
    epoch: int
    chunk: int
    index: int  # batch index within the chunk
    words_done: float  # corpus words covered once this batch is trained (for lr decay and words/s)
    chunk_fraction: float = 1.0  # fraction of its chunk trained once this batch is (torchrun merges by it)

    @property
    def pairs(self) -> int:
        return len(self.centers)

    @property
    def resume_position(self) -> Tuple[int, int, int]:
        """(epoch, chunk, batch) the data continues from once this batch is trained."""
        return self.epoch, self.chunk, self.index + 1


class DevicePairBatches:
    """Iterable over device batches of (centers, contexts, negatives) for every epoch, resumable at any batch."""

    def __init__(self, corpus: EncodedCorpus, vocab: Vocabulary, window: int, subsample: float,
                 batch_size: int, chunk_tokens: int, epochs: int, seed: int, negatives: int,
                 shared_negatives: int = 1, ns_exponent: float = 0.75,
                 device: torch.device = torch.device("cpu"), shard: Optional[Shard] = None):
        self.corpus, self.window, self.batch_size = corpus, window, batch_size
        self.chunk_tokens, self.epochs, self.seed = chunk_tokens, epochs, seed
        self.k, self.shared, self.device = negatives, shared_negatives, device
        self.remap = torch.from_numpy(vocab.remap(len(corpus.words))).to(device)
        self.keep = torch.from_numpy(keep_probabilities(vocab.counts, subsample)).to(device, torch.float32)
        self.noise = AliasTable(unigram_table(vocab.counts, ns_exponent), device)
        self.total_tokens = corpus.total_tokens
        self.n_chunks = max(1, -(-self.total_tokens // chunk_tokens))
        self.shard = shard  # a torchrun rank's share of each epoch (its chunks, cut as the shard says), or all
        self.start = (0, 0, 0)  # (epoch, chunk, batch) to begin at; set by resume

    def bounds(self, chunk: int) -> Tuple[int, int]:
        """The token range [lo, hi) of a chunk."""
        if self.shard is not None:
            return self.shard.bounds(chunk)
        return chunk * self.chunk_tokens, min((chunk + 1) * self.chunk_tokens, self.total_tokens)

    def chunk_tokens_on_device(self, chunk: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """(vocabulary ids, -1 for dropped words; sentence number) of a chunk's tokens, on the device."""
        lo, hi = self.bounds(chunk)
        raw = torch.from_numpy(read_ids(self.corpus.ids, lo, hi))
        if self.device.type == "cuda":
            raw = raw.pin_memory()
        ids = self.remap[raw.to(self.device, non_blocking=True).long()]
        offsets = self.corpus.offsets
        starts = offsets[np.searchsorted(offsets, lo):]
        starts = torch.from_numpy(starts[starts < hi] - lo).to(self.device)
        boundary = torch.zeros(hi - lo, dtype=torch.int32, device=self.device)
        boundary[starts] = 1
        return ids, torch.cumsum(boundary, 0, dtype=torch.int32)

    def chunk_pairs(self, epoch: int, chunk: int) -> torch.Tensor:
        """Shuffled packed pairs (see `window_pairs`) of one chunk on the device: a pure function of
        (seed, epoch, chunk)."""
        generator = seeded_generator(self.device, self.seed, epoch, chunk, _PAIRS)
        ids, sentence = self.chunk_tokens_on_device(chunk)
        kept = subsample(ids, self.keep, generator)
        pairs = window_pairs(ids[kept], sentence[kept], self.window, generator)
        return pairs[torch.randperm(len(pairs), generator=generator, device=self.device)]

    def batch_negatives(self, epoch: int, chunk: int, index: int, size: int) -> torch.Tensor:
        """(ceil(size / shared), K) negatives of one batch: a pure function of (seed, epoch, chunk, index)."""
        generator = seeded_generator(self.device, self.seed, epoch, chunk, _NEGATIVES, index)
        return self.noise.sample((-(-size // self.shared), self.k), generator)

    def __iter__(self) -> Iterator[DeviceBatch]:
        e0, c0, b0 = self.start
        for epoch in range(e0, self.epochs):
            for chunk in self.shard.chunks() if self.shard is not None else range(self.n_chunks):
                if epoch == e0 and chunk < c0:
                    continue
                pairs = self.chunk_pairs(epoch, chunk)
                n = len(pairs)
                n_batches = max(1, -(-n // self.batch_size))
                lo, hi = self.bounds(chunk)
                first = b0 if (epoch, chunk) == (e0, c0) else 0
                for b in range(first, n_batches):
                    centers, contexts = unpack(pairs[b * self.batch_size : (b + 1) * self.batch_size])
                    fraction = (b + 1) / n_batches
                    if self.shard is None:
                        done = epoch * self.total_tokens + lo + (hi - lo) * fraction
                    else:  # words done by all ranks together
                        done = self.shard.global_words(epoch, chunk, fraction)
                    yield DeviceBatch(centers, contexts, self.batch_negatives(epoch, chunk, b, len(centers)),
                                      epoch, chunk, b, done, fraction)

    def total_words(self) -> int:
        return self.epochs * self.total_tokens
