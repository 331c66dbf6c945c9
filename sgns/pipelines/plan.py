"""What every batch source shares: the epoch/chunk plan, reading a chunk's ids, subsampling, the pair batch.

A batch source walks the corpus epoch by epoch in chunks of consecutive positions (under torchrun: only its
rank's chunks, as sgns.distributed.Shard cuts them) and cuts each chunk into batches (pairs) or spans. The
position a run continues from is (epoch, chunk, index within the chunk), so any batch can be regenerated
exactly from its position and the seed: that is what makes resume exact on every pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Optional, Tuple

import numpy as np
import torch

from sgns.corpus import release_pages

if TYPE_CHECKING:
    from sgns.distributed import Shard

Position = Tuple[int, int, int]  # (epoch, chunk, batch or span within the chunk) a batch source continues from


def keep_probabilities(counts: np.ndarray, subsample: float) -> np.ndarray:
    """Word2vec's subsampling keep probability per word, (sqrt(f/t) + 1) * t / f, capped at 1."""
    if subsample <= 0:
        return np.ones(len(counts), dtype=np.float64)
    f = counts / counts.sum()
    return np.minimum((np.sqrt(f / subsample) + 1) * subsample / f, 1.0)


def read_ids(ids: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """ids[lo:hi] as an in-memory copy. From a memmap, the pages read are then dropped from this process
    (madvise DONTNEED), so resident memory does not grow with the corpus as the pass goes on."""
    part = np.array(ids[lo:hi])
    release_pages(ids, lo, hi)
    return part


def sentence_starts(offsets: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """The sentence start offsets within corpus positions [lo, hi), as an in-memory copy; from a memmap, its
    pages are then dropped, as `read_ids` drops the ids'."""
    starts = np.array(offsets[np.searchsorted(offsets, lo) : np.searchsorted(offsets, hi)])
    release_pages(offsets)
    return starts


class ChunkPlan:
    """The chunks of every epoch in training order, from a position on: `chunk_tokens`-long chunks of the
    corpus, or under torchrun the rank's shard's chunks."""

    def __init__(self, total_tokens: int, chunk_tokens: int, epochs: int, shard: Optional[Shard] = None):
        self.total_tokens, self.chunk_tokens, self.epochs, self.shard = total_tokens, chunk_tokens, epochs, shard
        self.n_chunks = max(1, -(-total_tokens // chunk_tokens))

    def bounds(self, chunk: int) -> Tuple[int, int]:
        """The token range [lo, hi) of a chunk."""
        if self.shard is not None:
            return self.shard.bounds(chunk)
        return chunk * self.chunk_tokens, min((chunk + 1) * self.chunk_tokens, self.total_tokens)

    def chunks(self, start: Position) -> Iterator[Tuple[int, int, int]]:
        """(epoch, chunk, first index to train in it) for every chunk from `start` on."""
        e0, c0, i0 = start
        for epoch in range(e0, self.epochs):
            for chunk in self.shard.chunks() if self.shard is not None else range(self.n_chunks):
                if epoch == e0 and chunk < c0:
                    continue
                yield epoch, chunk, i0 if (epoch, chunk) == (e0, c0) else 0

    def words_done(self, epoch: int, chunk: int, done: int, parts: int) -> float:
        """Corpus words covered once `done` of a chunk's `parts` equal parts are trained (under torchrun: by
        all ranks together)."""
        if self.shard is not None:
            return self.shard.global_words(epoch, chunk, done / parts)
        lo, hi = self.bounds(chunk)
        return epoch * self.total_tokens + lo + (hi - lo) * done / parts

    def total_words(self) -> int:
        return self.epochs * self.total_tokens


@dataclass
class PairBatch:
    """A batch of positive pairs (pairs, device and softmax pipelines); the loop reads `words_done`, `pairs`
    and `resume_position`."""

    centers: torch.Tensor  # (B,) int32 on the CPU (strided views of a chunk), int64 or int32 on other devices
    contexts: torch.Tensor  # (B,) like centers
    epoch: int
    chunk: int
    index: int  # batch index within the chunk
    words_done: float  # corpus words covered once this batch is trained (for lr decay and words/s)
    chunk_fraction: float = 1.0  # fraction of its chunk trained once this batch is (torchrun merges by it)
    negatives: Optional[torch.Tensor] = None  # (ceil(B / shared), K), drawn by the pipeline's batch source

    @property
    def pairs(self) -> int:
        """Positive pairs in the batch (the loss window averages over them)."""
        return len(self.centers)

    @property
    def resume_position(self) -> Position:
        """(epoch, chunk, batch) the data continues from once this batch is trained."""
        return self.epoch, self.chunk, self.index + 1
