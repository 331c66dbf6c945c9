"""When the loop writes a checkpoint before the end: by this process's clock, by corpus words, by steps.

Under torchrun only rank 0's wish counts (sgns.distributed.team: `after_batch` agrees on it at the next whole merge),
so the ranks' clocks need not agree.
"""

from __future__ import annotations

from typing import Optional


class CheckpointCadence:
    """Due every `minutes` of this process's time since its start or last checkpoint, every `every_words` corpus
    words, every `every_steps` steps: whichever comes first (0 or None turns one off)."""

    def __init__(self, minutes: float, every_words: Optional[int], every_steps: int, step: int, words_done: float,
                 now: float) -> None:
        self.seconds = minutes * 60.0 if minutes else None
        self.every_words, self.every_steps = every_words or None, every_steps or None
        self.written(step, words_done, now)

    def due(self, step: int, words_done: float, now: float) -> bool:
        return ((self.seconds is not None and now - self.since >= self.seconds)
                or (self.next_words is not None and words_done >= self.next_words)
                or (self.next_step is not None and step >= self.next_step))

    def written(self, step: int, words_done: float, now: float) -> None:
        """A checkpoint of `step`, `words_done` was written (or the loop starts there) at `now`."""
        self.since = now
        self.next_words = (words_done // self.every_words + 1) * self.every_words if self.every_words else None
        self.next_step = (step // self.every_steps + 1) * self.every_steps if self.every_steps else None
