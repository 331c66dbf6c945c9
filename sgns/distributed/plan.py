"""The epoch/merge plan of a torchrun run: which chunks of every epoch a rank trains (Shard, plan_shard) and
when it merges its tables with the others' (MergeClock).

Each epoch is cut into a multiple of the world size of chunks, and rank r trains chunks r, r + W, r + 2W, ...
so the ranks cover the corpus exactly once per epoch together. Merges happen at the same points of every rank's
own chunk (evenly spaced by the fraction of the chunk trained), so every rank runs the same number of
collectives in the same order whatever its batch count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

from sgns.errors import SGNSError


@dataclass(frozen=True)
class Shard:
    """Rank `rank`'s share of every epoch: chunks rank, rank + W, ... of `n_chunks` near-equal chunks.

    The chunk count is a multiple of W, so every rank trains the same number of chunks per epoch (and
    merges the same number of times); chunk c covers tokens [c * T // n, (c + 1) * T // n).
    """

    rank: int
    world_size: int
    total_tokens: int
    n_chunks: int
    merges_per_chunk: int  # merges of the whole tables while a rank trains one chunk
    hot_per_merge: int = 1  # merge points per whole-table merge: the others merge only the hot rows
    streams: int = 1  # data.streams: chunk c is the c-th stretch of each of the corpus's equal parts (`stretches`)

    @property
    def points_per_chunk(self) -> int:
        """Merge points (whole or hot rows only) while a rank trains one chunk; every hot_per_merge-th is whole."""
        return self.merges_per_chunk * self.hot_per_merge

    def bounds(self, chunk: int) -> Tuple[int, int]:
        n, t = self.n_chunks, self.total_tokens
        return chunk * t // n, (chunk + 1) * t // n

    def stretches(self, chunk: int) -> List[Tuple[int, int]]:
        """The token ranges of a chunk: `bounds`, or with streams > 1 one in each part (`stretches`)."""
        if self.streams == 1:
            return [self.bounds(chunk)]
        return stretches(self.total_tokens, self.n_chunks, self.streams, chunk)

    def chunks(self) -> range:
        return range(self.rank, self.n_chunks, self.world_size)

    def words_per_epoch(self) -> int:
        """Corpus words this rank trains in one epoch."""
        return sum(hi - lo for c in self.chunks() for lo, hi in self.stretches(c))


def stretches(total_tokens: int, n_chunks: int, streams: int, chunk: int) -> List[Tuple[int, int]]:
    """Chunk `chunk` of `n_chunks` when the corpus's `streams` equal parts train side by side (data.streams): the
    chunk-th of n near-equal stretches of every part, as token ranges [lo, hi)."""
    ranges = []
    for k in range(streams):
        a, b = k * total_tokens // streams, (k + 1) * total_tokens // streams
        ranges.append((a + (b - a) * chunk // n_chunks, a + (b - a) * (chunk + 1) // n_chunks))
    return ranges


def plan_shard(total_tokens: int, chunk_tokens: int, sync_every_words: int, rank: int, world_size: int,
               hot_sync_every_words: Optional[int] = None, streams: int = 1) -> Shard:
    """Cut each epoch into a multiple of `world_size` chunks of at most `chunk_tokens` tokens (each of `streams`
    stretches); merge the whole tables about every `sync_every_words` words, the hot rows about every
    `hot_sync_every_words` (None: never)."""
    n = -(-total_tokens // chunk_tokens)
    n = -(-n // world_size) * world_size
    if total_tokens < n:
        raise SGNSError(f"the corpus has {total_tokens} words, too few to split over {world_size} processes")
    size = total_tokens / n
    merges = max(1, round(world_size * size / sync_every_words))
    hot = 1
    if hot_sync_every_words:
        hot = max(1, round(max(merges, round(world_size * size / hot_sync_every_words)) / merges))
    return Shard(rank, world_size, total_tokens, n, merges, hot, streams)


class MergeClock:
    """When a rank merges: at `per_chunk` points per chunk, evenly spaced fractions of the chunk trained."""

    def __init__(self, per_chunk: int) -> None:
        self.per_chunk = per_chunk
        self.chunk: Optional[Tuple[int, int]] = None  # (epoch, chunk) being trained
        self.done = 0  # merge points passed in it

    def due(self, epoch: int, chunk: int, fraction: float) -> List[int]:
        """The merge points (1 .. per_chunk, within their chunk) due now that (epoch, chunk) is `fraction` trained
        (1.0 at its last batch)."""
        owed: List[int] = []
        if (epoch, chunk) != self.chunk:
            if self.chunk is not None:  # never skip a merge
                owed = list(range(self.done + 1, self.per_chunk + 1))
            self.chunk, self.done = (epoch, chunk), 0
        target = min(self.per_chunk, int(math.floor(fraction * self.per_chunk + 1e-9)))
        owed += range(self.done + 1, target + 1)
        self.done = max(self.done, target)
        return owed

    def state_dict(self) -> dict:
        return {"chunk": list(self.chunk) if self.chunk else None, "done": self.done}

    def load_state_dict(self, state: dict) -> None:
        self.chunk = tuple(state["chunk"]) if state["chunk"] else None  # type: ignore[assignment]
        self.done = state["done"]
