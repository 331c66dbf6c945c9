"""Pairs stage: token ids -> shuffled (center, context) positive pairs, in batches.

Word2vec semantics, vectorised per chunk of the corpus with numpy (no per-token Python):
out-of-vocabulary tokens dropped, frequent words subsampled with keep probability (sqrt(f/t) + 1) * t / f,
then for every kept position a radius drawn uniformly in [1, window] and every word within that radius in
the same sentence paired with it. Each chunk's randomness comes from its own generator seeded by
(seed, epoch, chunk), so any position can be regenerated exactly: that is what makes resume exact.
Negatives are not drawn here: sgns.pipelines.negatives draws them per batch (sgns.pipelines puts them into the batch).
"""

from __future__ import annotations

import mmap
import queue
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import IterableDataset

from sgns.corpus import EncodedCorpus
from sgns.vocab import Vocabulary

if TYPE_CHECKING:
    from sgns.distributed import Shard


def keep_probabilities(counts: np.ndarray, subsample: float) -> np.ndarray:
    """Word2vec's subsampling keep probability per word, (sqrt(f/t) + 1) * t / f, capped at 1."""
    if subsample <= 0:
        return np.ones(len(counts), dtype=np.float64)
    f = counts / counts.sum()
    return np.minimum((np.sqrt(f / subsample) + 1) * subsample / f, 1.0)


def _window_masks(sentence: np.ndarray, radius: np.ndarray, window: int) -> Iterator[Tuple[int, np.ndarray,
                                                                                      np.ndarray]]:
    """Per offset o: which positions i pair with i + o as center (right) and as context (left)."""
    for offset in range(1, min(window, len(sentence) - 1) + 1):
        same = sentence[:-offset] == sentence[offset:]
        yield offset, same & (radius[:-offset] >= offset), same & (radius[offset:] >= offset)


def window_pairs(ids: np.ndarray, sentence: np.ndarray, window: int,
                 rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """All (center, context) pairs within a per-position radius drawn uniformly from [1, window]."""
    packed = _packed_window_pairs(ids, sentence, window, rng)
    return _unpack(packed, ids.dtype)


def _packed_window_pairs(ids: np.ndarray, sentence: np.ndarray, window: int,
                         rng: np.random.Generator) -> np.ndarray:
    """Window pairs as one int64 per pair (center, context as two int32 halves), written in place.

    One array and no per-offset lists: a chunk's pairs cost 8 bytes each, and shuffling them is one
    in-place 1-d shuffle (no permutation array, no gathered copies).
    """
    ids = np.ascontiguousarray(ids, dtype=np.int32)
    radius = rng.integers(1, window + 1, size=len(ids), dtype=np.int8)
    masks = list(_window_masks(sentence, radius, window))
    total = sum(int(np.count_nonzero(r)) + int(np.count_nonzero(l_)) for _, r, l_ in masks)
    packed = np.empty(total, dtype=np.int64)
    halves = packed.view(np.int32).reshape(-1, 2)  # column 0: center, 1: context
    at = 0
    for offset, right, left in masks:
        for mask, center, context in ((right, ids[:-offset], ids[offset:]), (left, ids[offset:], ids[:-offset])):
            n = int(np.count_nonzero(mask))
            halves[at : at + n, 0] = center[mask]
            halves[at : at + n, 1] = context[mask]
            at += n
    return packed


def _unpack(packed: np.ndarray, dtype: np.dtype = np.int32) -> Tuple[np.ndarray, np.ndarray]:
    halves = packed.view(np.int32).reshape(-1, 2)
    return halves[:, 0].astype(dtype), halves[:, 1].astype(dtype)


def read_ids(ids: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """ids[lo:hi] as an in-memory copy. From a memmap, the pages read are then dropped from this process
    (madvise DONTNEED), so resident memory does not grow with the corpus as the pass goes on."""
    part = np.array(ids[lo:hi])
    if isinstance(ids, np.memmap) and hasattr(mmap, "MADV_DONTNEED"):
        base = ids._mmap  # the whole mapping (offset 0 for our id files)
        if base is not None:
            page = mmap.PAGESIZE
            start = (lo * ids.itemsize) // page * page
            stop = min(-(-(hi * ids.itemsize) // page) * page, len(base))
            try:
                base.madvise(mmap.MADV_DONTNEED, start, stop - start)
            except (OSError, ValueError):  # advisory only
                pass
    return part


@dataclass
class Batch:
    """A batch of positive pairs; the training loop reads `words_done`, `pairs` and `resume_position`."""

    centers: torch.Tensor  # (B,) int32 on the CPU (strided views of a chunk), int64 on other devices
    contexts: torch.Tensor  # (B,) like centers
    epoch: int
    chunk: int
    index: int  # batch index within the chunk
    words_done: float  # corpus words covered once this batch is trained (for lr decay and words/s)
    chunk_fraction: float  # fraction of its chunk trained once this batch is (1.0 for the chunk's last batch)
    negatives: Optional[torch.Tensor] = None  # (ceil(B / shared), K), drawn by the backend's batch source

    @property
    def pairs(self) -> int:
        """Positive pairs in the batch (the loss window averages over them)."""
        return len(self.centers)

    @property
    def resume_position(self) -> Tuple[int, int, int]:
        """(epoch, chunk, batch) the data continues from once this batch is trained."""
        return (self.epoch, self.chunk, self.index + 1)


class PairBatches(IterableDataset):
    """Iterable over batches of positive pairs for every epoch, resumable at any batch."""

    def __init__(self, corpus: EncodedCorpus, vocab: Vocabulary, window: int, subsample: float,
                 batch_size: int, chunk_tokens: int, epochs: int, seed: int,
                 device: torch.device = torch.device("cpu"), prefetch: bool = True,
                 shard: Optional[Shard] = None):
        self.corpus, self.window, self.batch_size = corpus, window, batch_size
        self.chunk_tokens, self.epochs, self.seed = chunk_tokens, epochs, seed
        self.device, self.prefetch = device, prefetch
        self.remap = vocab.remap(len(corpus.words))
        self.keep = keep_probabilities(vocab.counts, subsample)
        self.total_tokens = corpus.total_tokens
        self.n_chunks = max(1, -(-self.total_tokens // chunk_tokens))
        self.shard = shard  # a torchrun rank's share of each epoch (its chunks, cut as the shard says), or all
        self.start = (0, 0, 0)  # (epoch, chunk, batch) to begin at; set by resume

    def chunk_pairs(self, epoch: int, chunk: int) -> Tuple[np.ndarray, np.ndarray]:
        """Shuffled (centers, contexts) for one chunk: a pure function of (seed, epoch, chunk)."""
        rng = np.random.default_rng([self.seed, epoch, chunk])
        lo, hi = self.bounds(chunk)
        ids = self.remap[read_ids(self.corpus.ids, lo, hi)]
        starts = self.corpus.offsets[np.searchsorted(self.corpus.offsets, lo):]
        starts = starts[starts < hi] - lo
        boundary = np.zeros(hi - lo, dtype=np.int32)
        boundary[starts] = 1
        sentence = np.cumsum(boundary)
        kept = ids >= 0
        kept &= rng.random(hi - lo) < self.keep[np.maximum(ids, 0)]
        packed = _packed_window_pairs(ids[kept], sentence[kept], self.window, rng)
        rng.shuffle(packed)
        halves = packed.view(np.int32).reshape(-1, 2)
        # int32 column views of the shuffled pairs (no copy): the kernels index with them directly.
        return halves[:, 0], halves[:, 1]

    def bounds(self, chunk: int) -> Tuple[int, int]:
        """The token range [lo, hi) of a chunk."""
        if self.shard is not None:
            return self.shard.bounds(chunk)
        return chunk * self.chunk_tokens, min((chunk + 1) * self.chunk_tokens, self.total_tokens)

    def _chunks(self) -> Iterator[Tuple[int, int, np.ndarray, np.ndarray]]:
        e0, c0, _ = self.start
        for epoch in range(e0, self.epochs):
            for chunk in self.shard.chunks() if self.shard is not None else range(self.n_chunks):
                if epoch == e0 and chunk < c0:
                    continue
                yield (epoch, chunk, *self.chunk_pairs(epoch, chunk))

    def _prefetched(self) -> Iterator[Tuple[int, int, np.ndarray, np.ndarray]]:
        """Build the next chunk in a background thread (numpy releases the GIL) while this one trains.

        The worker starts a chunk only once the consumer has taken the previous one, so at most two
        chunks of pairs are alive (the one training and the next), which keeps peak memory flat.
        """
        q: queue.Queue = queue.Queue(maxsize=1)
        stop = threading.Event()

        def work() -> None:
            try:
                for item in self._chunks():
                    while not stop.is_set():
                        try:
                            q.put(item, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
                    del item
                    while q.unfinished_tasks and not stop.is_set():  # wait until the consumer took it
                        stop.wait(0.002)
                q.put(None)
            except BaseException as e:  # hand errors to the consumer
                q.put(e)

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        try:
            while (item := q.get()) is not None:
                q.task_done()
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()

    def __iter__(self) -> Iterator[Batch]:
        e0, c0, b0 = self.start
        chunks = self._prefetched() if self.prefetch else self._chunks()
        for epoch, chunk, centers, contexts in chunks:
            n = len(centers)
            n_batches = max(1, -(-n // self.batch_size))
            lo, hi = self.bounds(chunk)
            if self.device.type == "cpu":  # strided int32 views; the CPU kernels take them as they are
                centers_t, contexts_t = torch.from_numpy(centers), torch.from_numpy(contexts)
            else:  # one contiguous int64 copy per chunk on the device
                centers_t = torch.from_numpy(centers).to(self.device, torch.int64)
                contexts_t = torch.from_numpy(contexts).to(self.device, torch.int64)
            first = b0 if (epoch, chunk) == (e0, c0) else 0
            for b in range(first, n_batches):
                s = slice(b * self.batch_size, (b + 1) * self.batch_size)
                fraction = (b + 1) / n_batches
                if self.shard is None:
                    done = epoch * self.total_tokens + lo + (hi - lo) * (b + 1) / n_batches
                else:  # words done by all ranks together
                    done = self.shard.global_words(epoch, chunk, fraction)
                yield Batch(centers_t[s], contexts_t[s], epoch, chunk, b, done, fraction)

    def total_words(self) -> int:
        return self.epochs * self.total_tokens

