"""What every batch source shares: the epoch/chunk plan, reading a chunk's ids, subsampling, the pair batch.

A batch source walks the corpus epoch by epoch in chunks (under torchrun: only its rank's chunks, as
sgns.distributed.Shard cuts them), front to back or shuffled (data.order), and cuts each chunk into batches (pairs)
or spans. A chunk is a stretch of consecutive positions or, with data.streams = S > 1, S stretches, one in each
S-th of the corpus, read as one text sentence by sentence (`interleave_sentences`). The position a run continues
from is (epoch, the chunk's slot in the epoch's order, index within the chunk), so any batch can be regenerated
exactly from its position and the seed: that is what makes resume exact on every pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch

from sgns.corpus import release_pages
from sgns.distributed.plan import stretches

if TYPE_CHECKING:
    from sgns.corpus import EncodedCorpus
    from sgns.distributed import Shard

Position = Tuple[int, int, int]  # (epoch, chunk slot in its order, batch or span within the chunk) to continue from


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


def span_starts(offsets: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Sentence starts within corpus positions [lo, hi) relative to lo (a sentence cut by lo starts at 0),
    then hi - lo."""
    inner = sentence_starts(offsets, lo, hi)
    head = [] if len(inner) and inner[0] == lo else [lo]
    return (np.concatenate([head, inner, [hi]]) - lo).astype(np.int64)


def interleave_sentences(texts: List[Tuple[np.ndarray, np.ndarray]]) -> Tuple[np.ndarray, np.ndarray]:
    """Stretches of text (ids, `span_starts`) as one, sentence by sentence: each sentence placed by the share of
    its stretch before it (ties: the earlier stretch first), so every stretch advances token for token, as
    fastText's threads advance through their parts of the corpus side by side."""
    texts = [text for text in texts if len(text[0])] or texts[:1]
    if len(texts) == 1:
        return texts[0]
    ids = np.concatenate([i for i, _ in texts])
    firsts, lengths, shares, which = [], [], [], []
    base = 0
    for s, (part, starts) in enumerate(texts):
        firsts.append(base + starts[:-1])
        lengths.append(np.diff(starts))
        shares.append(starts[:-1] / int(starts[-1]))
        which.append(np.full(len(starts) - 1, s))
        base += len(part)
    order = np.lexsort((np.concatenate(which), np.concatenate(shares)))
    first, length = np.concatenate(firsts)[order], np.concatenate(lengths)[order]
    starts = np.concatenate([[0], np.cumsum(length)]).astype(np.int64)
    positions = np.repeat(first - starts[:-1], length) + np.arange(len(ids))
    return ids[positions], starts


_ORDER_STREAM = 0x6F72646572  # keys the chunk order's generator apart from every other stream of the seed


class ChunkPlan:
    """The chunks of every epoch in training order, from a position on: `chunk_tokens`-long chunks of the
    corpus, or under torchrun the rank's shard's chunks (rank r of W: chunks r, r + W, ...).

    `order="shuffled"` visits each epoch's chunks in a permutation drawn from (seed, epoch) (under torchrun: of
    its rounds of W adjacent chunks, the same on every rank), so that a corpus sorted by topic or date does not
    leave its last part to the end of the learning rate's fall; "sequential" walks them front to back, as gensim
    does. A position names a chunk by its slot, r + W x its place in the rank's training order (alone: its place),
    which under "sequential" is the chunk itself; random streams are keyed by the chunk, so a chunk draws the same
    whatever its place.

    `streams` > 1 trains that many equal parts of the corpus side by side: chunk c is the c-th of n stretches of
    every part (n: the chunk count), their sentences interleaved (`read`), so that the end of an epoch's learning
    rate falls on the ends of all parts, not on the corpus's last part alone (fastText's threads read the corpus so,
    each from its own part)."""

    def __init__(self, total_tokens: int, chunk_tokens: int, epochs: int, shard: Optional[Shard] = None,
                 order: str = "sequential", seed: int = 0, streams: int = 1):
        self.total_tokens, self.chunk_tokens, self.epochs, self.shard = total_tokens, chunk_tokens, epochs, shard
        self.n_chunks = max(1, -(-total_tokens // chunk_tokens))
        self.order, self.seed = order, seed
        self.streams = streams if shard is None else shard.streams
        self.rank, self.world = (0, 1) if shard is None else (shard.rank, shard.world_size)
        self._walks: Dict[int, Tuple[np.ndarray, np.ndarray]] = {}

    def _walk(self, epoch: int) -> Tuple[np.ndarray, np.ndarray]:
        """The rank's chunks in the epoch's training order, and the corpus words (all ranks together) trained
        before each place, then the epoch's total."""
        walk = self._walks.get(epoch)
        if walk is None:
            w = self.world
            rounds = (self.n_chunks if self.shard is None else self.shard.n_chunks) // w
            if self.order == "shuffled":
                order = np.random.default_rng([self.seed, epoch, _ORDER_STREAM]).permutation(rounds)
            else:
                order = np.arange(rounds)
            round_words = [sum(self.chunk_words(r * w + i) for i in range(w)) for r in order]
            walk = (order * w + self.rank, np.concatenate([[0], np.cumsum(round_words)]).astype(np.int64))
            # kept for this epoch and the one before: a prefetching thread may be an epoch ahead of the loop
            self._walks = {**{e: v for e, v in self._walks.items() if e >= epoch - 1}, epoch: walk}
        return walk

    def bounds(self, chunk: int) -> Tuple[int, int]:
        """The token range [lo, hi) of a chunk (one stream)."""
        if self.shard is not None:
            return self.shard.bounds(chunk)
        return chunk * self.chunk_tokens, min((chunk + 1) * self.chunk_tokens, self.total_tokens)

    def stretches(self, chunk: int, part: int = 0, parts: int = 1) -> List[Tuple[int, int]]:
        """The token ranges [lo, hi) that part `part` of `parts` equal parts of a chunk trains: one per stream."""
        if self.shard is not None:
            ranges = self.shard.stretches(chunk)
        elif self.streams == 1:
            ranges = [self.bounds(chunk)]
        else:
            ranges = stretches(self.total_tokens, self.n_chunks, self.streams, chunk)
        return [(lo + (hi - lo) * part // parts, lo + (hi - lo) * (part + 1) // parts) for lo, hi in ranges]

    def chunk_words(self, chunk: int) -> int:
        """Corpus words in a chunk (all its stretches)."""
        return sum(hi - lo for lo, hi in self.stretches(chunk))

    def read(self, corpus: EncodedCorpus, chunk: int, part: int = 0, parts: int = 1) -> Tuple[np.ndarray, np.ndarray]:
        """The corpus ids (int32, in-memory) of part `part` of `parts` of a chunk and its sentence starts (relative;
        the first is 0, then the length: `span_starts`), its streams' sentences interleaved."""
        return interleave_sentences([(read_ids(corpus.ids, lo, hi), span_starts(corpus.offsets, lo, hi))
                                     for lo, hi in self.stretches(chunk, part, parts)])

    def chunks(self, start: Position) -> Iterator[Tuple[int, int, int, int]]:
        """(epoch, slot, chunk, first index to train in it) for every chunk from `start` on."""
        e0, s0, i0 = start
        first = max(0, -(-(s0 - self.rank) // self.world))  # the place of the first slot from s0 on
        for epoch in range(e0, self.epochs):
            walk, _ = self._walk(epoch)
            for place in range(first if epoch == e0 else 0, len(walk)):
                resumed = epoch == e0 and place * self.world + self.rank == s0
                yield epoch, place * self.world + self.rank, int(walk[place]), i0 if resumed else 0

    def words_done(self, epoch: int, slot: int, done: int, parts: int) -> float:
        """Corpus words covered once `done` of the chunk at `slot`'s `parts` equal parts are trained (under
        torchrun by all ranks together: they move in step, so while this rank is in a chunk, its round's W chunks
        are that fraction done)."""
        before = self._walk(epoch)[1]
        place = (slot - self.rank) // self.world
        lo, hi = int(before[place]), int(before[place + 1])
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
    chunk: int  # the corpus chunk its pairs come from
    slot: int  # the chunk's slot in the epoch's training order (ChunkPlan), the middle of the batch's position
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
        """(epoch, slot, batch) the data continues from once this batch is trained."""
        return self.epoch, self.slot, self.index + 1
