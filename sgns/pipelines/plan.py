"""Batch source for the fused CPU kernel: the corpus as spans of token ids with their sentence starts.

No pairs are built here: the kernel (sgns.pipelines.span) drops out-of-vocabulary words, subsamples,
draws windows and negatives itself. A span is `data.span_tokens` consecutive corpus positions (a sentence cut
by a span edge is trained as two), read from the token cache as an in-memory copy (its pages then dropped, so
memory stays flat); the position a run continues from is (epoch, span, piece), so spans are regenerated
exactly on resume.

Under torchrun a rank trains only its shard's chunks (sgns.distributed.Shard): each chunk is cut into
spans ending at the points where the ranks merge their tables, so a merge always falls between two steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Optional, Tuple

import numpy as np

from sgns.corpus import EncodedCorpus
from sgns.pipelines.pairs import read_ids

if TYPE_CHECKING:
    from sgns.distributed import Shard

Position = Tuple[int, int, int]  # (epoch, chunk, batch or piece or span) a batch source continues from
STEPS_PER_EPOCH = 100  # a small corpus gets spans shorter than data.span_tokens: about this many steps an epoch
MIN_SPAN = 1000  # ...but never shorter than this


def span_starts(offsets: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Sentence starts within corpus positions [lo, hi) relative to lo (a sentence cut by lo starts at 0),
    then hi - lo."""
    inner = offsets[np.searchsorted(offsets, lo) : np.searchsorted(offsets, hi)]
    head = [] if len(inner) and inner[0] == lo else [lo]
    return (np.concatenate([head, inner, [hi]]) - lo).astype(np.int64)


@dataclass
class Span:
    """One chunk of the corpus for the fused kernel (what the loop hands to its step)."""

    ids: np.ndarray  # int32 corpus ids (first-seen order) of the chunk's positions
    starts: np.ndarray  # int64 sentence starts within the chunk, then its length
    epoch: int
    chunk: int  # the span's index within the epoch (under torchrun: the shard chunk it is part of)
    stream: int  # with the seed and epoch, keys the span's random streams: unique within an epoch
    first_piece: int  # pieces before this one were trained before a resume
    words_before: float  # corpus words covered before this span (all epochs; all ranks together)
    words_done: float  # corpus words covered once it is trained
    resume_position: Position  # where the spans continue once this one is trained
    chunk_fraction: float = 1.0  # under torchrun: how far into its chunk the rank is once this span is trained
    pairs: int = 0  # positive pairs trained, filled in by the step


class TokenSpans:
    """Spans for every epoch from a position on; a pure function of the corpus and the position."""

    def __init__(self, corpus: EncodedCorpus, span_tokens: int, epochs: int, shard: Optional[Shard] = None):
        self.corpus, self.epochs, self.shard = corpus, epochs, shard
        self.total_tokens = corpus.total_tokens
        # Steps are what logs, evaluation and checkpoints count: a small corpus still gets enough of them.
        self.span_tokens = min(span_tokens, max(MIN_SPAN, -(-self.total_tokens // STEPS_PER_EPOCH)))
        self.n_spans = max(1, -(-self.total_tokens // self.span_tokens))
        if shard is not None:  # spans per chunk: at most span_tokens long, a multiple of the merge points per chunk
            longest = -(-self.total_tokens // shard.n_chunks)
            per_chunk, m = -(-longest // self.span_tokens), shard.points_per_chunk
            self.spans_per_chunk = -(-per_chunk // m) * m

    def total_words(self) -> int:
        return self.epochs * self.total_tokens

    def __call__(self, start: Position) -> Iterator[Span]:
        """Spans from `start`: (epoch, span, first piece), or under torchrun (epoch, shard chunk, span in it)."""
        if self.shard is not None:
            yield from self._sharded(start)
            return
        e0, c0, p0 = start
        for epoch in range(e0, self.epochs):
            for chunk in range(c0 if epoch == e0 else 0, self.n_spans):
                lo = chunk * self.span_tokens
                hi = min(lo + self.span_tokens, self.total_tokens)
                before = epoch * self.total_tokens + lo
                yield Span(read_ids(self.corpus.ids, lo, hi), span_starts(self.corpus.offsets, lo, hi), epoch, chunk,
                           chunk, p0 if (epoch, chunk) == (e0, c0) else 0, before, before + hi - lo,
                           (epoch, chunk + 1, 0))

    def _sharded(self, start: Position) -> Iterator[Span]:
        """This rank's chunks, each as `spans_per_chunk` near-equal spans; words counted over all ranks."""
        shard, m = self.shard, self.spans_per_chunk
        assert shard is not None
        e0, c0, i0 = start
        for epoch in range(e0, self.epochs):
            for chunk in shard.chunks():
                if epoch == e0 and chunk < c0:
                    continue
                lo, hi = shard.bounds(chunk)
                for i in range(i0 if (epoch, chunk) == (e0, c0) else 0, m):
                    a, b = lo + (hi - lo) * i // m, lo + (hi - lo) * (i + 1) // m
                    yield Span(read_ids(self.corpus.ids, a, b), span_starts(self.corpus.offsets, a, b), epoch, chunk,
                               chunk * m + i, 0, shard.global_words(epoch, chunk, i / m),
                               shard.global_words(epoch, chunk, (i + 1) / m), (epoch, chunk, i + 1), (i + 1) / m)
