"""Batch source for the fused CPU kernel: the corpus as spans of token ids with their sentence starts.

No pairs are built here: the kernel (sgns.kernels.numba_kernels) drops out-of-vocabulary words, subsamples,
draws windows and negatives itself. A span is `data.span_tokens` consecutive corpus positions (a sentence cut
by a span edge is trained as two), read from the token cache as an in-memory copy (its pages then dropped, so
memory stays flat); the position a run continues from is (epoch, span, piece), so spans are regenerated
exactly on resume.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Tuple

import numpy as np

from sgns.corpus import EncodedCorpus
from sgns.pairs import read_ids

Position = Tuple[int, int, int]
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
    chunk: int  # the span's index within the epoch
    first_piece: int  # pieces before this one were trained before a resume
    words_before: float  # corpus words covered before this span (all epochs)
    words_done: float  # corpus words covered once it is trained
    pairs: int = 0  # positive pairs trained, filled in by the step

    @property
    def resume_position(self) -> Position:
        return (self.epoch, self.chunk + 1, 0)


class TokenSpans:
    """Spans for every epoch from a position on; a pure function of the corpus and the position."""

    def __init__(self, corpus: EncodedCorpus, span_tokens: int, epochs: int):
        self.corpus, self.epochs = corpus, epochs
        self.total_tokens = corpus.total_tokens
        # Steps are what logs, evaluation and checkpoints count: a small corpus still gets enough of them.
        self.span_tokens = min(span_tokens, max(MIN_SPAN, -(-self.total_tokens // STEPS_PER_EPOCH)))
        self.n_spans = max(1, -(-self.total_tokens // self.span_tokens))

    def total_words(self) -> int:
        return self.epochs * self.total_tokens

    def __call__(self, start: Position) -> Iterator[Span]:
        e0, c0, p0 = start
        for epoch in range(e0, self.epochs):
            for chunk in range(c0 if epoch == e0 else 0, self.n_spans):
                lo = chunk * self.span_tokens
                hi = min(lo + self.span_tokens, self.total_tokens)
                before = epoch * self.total_tokens + lo
                yield Span(read_ids(self.corpus.ids, lo, hi), span_starts(self.corpus.offsets, lo, hi), epoch, chunk,
                           p0 if (epoch, chunk) == (e0, c0) else 0, before, before + hi - lo)
