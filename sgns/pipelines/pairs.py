"""The pair pipeline: token ids -> shuffled (center, context) positive pairs in batches, negatives drawn per
batch, trained by the torch SGD step or an autograd step through torch.optim.SparseAdam (`optimizer=sparse_adam`
on the CPU). Its batches also feed the full softmax (sgns.pipelines.softmax).

Word2vec semantics, vectorised per chunk of the corpus with numpy (no per-token Python):
out-of-vocabulary tokens dropped, frequent words subsampled with keep probability (sqrt(f/t) + 1) * t / f,
then for every kept position a radius drawn uniformly in [1, window] and every word within that radius in
the same sentence paired with it. Each chunk's randomness comes from its own generator seeded by
(seed, epoch, chunk), so any position can be regenerated exactly: that is what makes resume exact.
Negatives are drawn per batch by a seeded sampler (sgns.pipelines.negatives), whose state checkpoints keep.
"""

from __future__ import annotations

import queue
import threading
from typing import TYPE_CHECKING, Callable, Iterator, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import IterableDataset

from sgns.config import DataConfig
from sgns.corpus import EncodedCorpus
from sgns.model import SGNS
from sgns.pipelines.base import PipelineBase
from sgns.pipelines.negatives import NegativeSampler
from sgns.pipelines.plan import ChunkPlan, PairBatch, Position, keep_probabilities
from sgns.pipelines.torch_step import optimizer_step, sgd_step
from sgns.vocab import Vocabulary

if TYPE_CHECKING:
    from sgns.distributed import Shard


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


class PairBatches(IterableDataset):
    """Iterable over batches of positive pairs for every epoch, resumable at any batch."""

    def __init__(self, corpus: EncodedCorpus, vocab: Vocabulary, data: DataConfig, epochs: int, seed: int,
                 device: torch.device = torch.device("cpu"), shard: Optional[Shard] = None):
        """`data`: window, subsample, batch_size (resolved: an int), chunk_tokens, prefetch."""
        self.corpus, self.window, self.batch_size, self.seed = corpus, data.window, data.batch_size, seed
        self.device, self.prefetch = device, data.prefetch
        self.remap = vocab.remap(len(corpus.counts))
        self.keep = keep_probabilities(vocab.counts, data.subsample)
        self.total_tokens = corpus.total_tokens
        self.plan = ChunkPlan(corpus.total_tokens, data.chunk_tokens, epochs, shard, data.order, seed, data.streams)
        self.start: Position = (0, 0, 0)  # (epoch, slot, batch) to begin at; set by resume

    def chunk_pairs(self, epoch: int, chunk: int) -> Tuple[np.ndarray, np.ndarray]:
        """Shuffled (centers, contexts) for one chunk: a pure function of (seed, epoch, chunk)."""
        rng = np.random.default_rng([self.seed, epoch, chunk])
        raw, starts = self.plan.read(self.corpus, chunk)
        ids = self.remap[raw]
        boundary = np.zeros(len(ids), dtype=np.int32)
        boundary[starts[:-1]] = 1
        sentence = np.cumsum(boundary)
        kept = ids >= 0
        kept &= rng.random(len(ids)) < self.keep[np.maximum(ids, 0)]
        packed = _packed_window_pairs(ids[kept], sentence[kept], self.window, rng)
        rng.shuffle(packed)
        halves = packed.view(np.int32).reshape(-1, 2)
        # int32 column views of the shuffled pairs (no copy): the kernels index with them directly.
        return halves[:, 0], halves[:, 1]

    def _chunks(self) -> Iterator[Tuple[int, int, int, int, np.ndarray, np.ndarray]]:
        for epoch, slot, chunk, first in self.plan.chunks(self.start):
            yield (epoch, slot, chunk, first, *self.chunk_pairs(epoch, chunk))

    def _prefetched(self) -> Iterator[Tuple[int, int, int, int, np.ndarray, np.ndarray]]:
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

    def __iter__(self) -> Iterator[PairBatch]:
        chunks = self._prefetched() if self.prefetch else self._chunks()
        for epoch, slot, chunk, first, centers, contexts in chunks:
            n_batches = max(1, -(-len(centers) // self.batch_size))
            if self.device.type == "cpu":  # strided int32 views; the CPU kernels take them as they are
                centers_t, contexts_t = torch.from_numpy(centers), torch.from_numpy(contexts)
            else:  # one contiguous int64 copy per chunk on the device
                centers_t = torch.from_numpy(centers).to(self.device, torch.int64)
                contexts_t = torch.from_numpy(contexts).to(self.device, torch.int64)
            for b in range(first, n_batches):
                s = slice(b * self.batch_size, (b + 1) * self.batch_size)
                yield PairBatch(centers_t[s], contexts_t[s], epoch, chunk, slot, b,
                                self.plan.words_done(epoch, slot, b + 1, n_batches), (b + 1) / n_batches)

    def total_words(self) -> int:
        return self.plan.total_words()


# One training update on (centers, contexts, negatives) at `lr`, with the model (and optimizer) bound in.
PairStep = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor]


def make_pair_step(model: SGNS, optimizer: Optional[torch.optim.Optimizer] = None,
                   fixed_lr: bool = False) -> PairStep:
    """The update: an autograd step through `optimizer` (at its own lr when `fixed_lr`, else the schedule's), or
    for None the exact torch SGD step."""
    if optimizer is not None:
        def optimizer_update(centers: torch.Tensor, contexts: torch.Tensor, negatives: torch.Tensor,
                             lr: float) -> torch.Tensor:
            return optimizer_step(model, optimizer, centers, contexts, negatives, None if fixed_lr else lr)

        return optimizer_update

    def sgd(centers: torch.Tensor, contexts: torch.Tensor, negatives: torch.Tensor, lr: float) -> torch.Tensor:
        return sgd_step(model, centers, contexts, negatives, lr)

    return sgd


class PairPipeline(PipelineBase):
    """Shuffled positive pairs with negatives drawn per batch, trained by one pair step."""

    name = "pairs"

    def __init__(self, pairs: PairBatches, sampler: NegativeSampler, negatives: int, shared: int,
                 pair_step: PairStep, optimizer: Optional[torch.optim.Optimizer] = None):
        self.pairs, self.sampler, self.k, self.shared = pairs, sampler, negatives, shared
        self.pair_step, self.optimizer = pair_step, optimizer
        self.total_words = pairs.total_words()

    def batches(self, start: Position) -> Iterator[PairBatch]:
        self.pairs.start = start
        for batch in self.pairs:
            # Drawn as the loop asks for the batch, so the sampler's state at a checkpoint is exactly "after
            # the batches trained so far".
            batch.negatives = self.sampler.draw(batch.pairs, self.k, self.shared)
            yield batch

    def step(self, batch: PairBatch, lr: float) -> torch.Tensor:
        loss = self.pair_step(batch.centers, batch.contexts, batch.negatives, lr)
        if self.frozen is not None:
            self.frozen.restore(torch.cat((batch.centers, batch.contexts)))
        return loss

    def own_state(self) -> dict:
        return {"sampler": self.sampler.state_dict(),
                "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None}

    def load_own_state(self, state: dict) -> None:
        self.sampler.load_state_dict(state["sampler"])
        if self.optimizer is not None and state.get("optimizer") is not None:
            self.optimizer.load_state_dict(state["optimizer"])
