"""When the loop evaluates during training, and what that costs.

By default (`eval.every_words=null`) a run with benchmark files evaluates at `eval.points` evenly spaced word
counts, the last of them being the final evaluation, so TensorBoard shows accuracy rising as training goes on.
A point is skipped when evaluating would push the evaluation time past `AUTO_MAX_OVERHEAD` of the training time
so far. A point during training scores a fixed sample of each analogy benchmark's questions (eval.sample_questions)
on one CPU thread, the final evaluation everything, so at the defaults every point runs: on the dev corpus the
English suite cost 3.7% of 5 epochs' training, on the synthetic corpus the planted set 5-6% (docs/evaluation.md).
An explicit `eval.every_words=N` evaluates every N words, whatever it costs; `eval.every_words=0` only at the end.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any, Callable, Iterator, Optional, TypeVar

import torch

AUTO_MAX_OVERHEAD = 0.1  # auto cadence: periodic evaluation takes at most this share of the training time
T = TypeVar("T")


class EvalSchedule:
    """Says when an evaluation is due (`due`) and times the ones that run (`run`)."""

    def __init__(self, every_words: Optional[int], points: int, total_words: int, words_done: float,
                 has_benchmarks: bool, clock: Callable[[], float] = time.perf_counter) -> None:
        self.auto, self.clock = every_words is None, clock
        if not has_benchmarks or every_words == 0 or total_words <= 0:
            self.every: Optional[float] = None
        elif every_words is None:
            self.every = total_words / max(points, 1)  # the last point is the final evaluation
        else:
            self.every = float(every_words)
        self.total_words = total_words
        self.next = self._after(words_done)
        self.seconds = 0.0  # time spent evaluating, in this process
        self.count = 0  # evaluations run, in this process
        self.last_seconds = 0.0  # how long the latest one took

    def _after(self, words_done: float) -> float:
        if self.every is None:
            return math.inf
        return (math.floor(words_done / self.every + 1e-9) + 1) * self.every

    def due(self, words_done: float, train_seconds: float) -> bool:
        """Whether to evaluate now, `words_done` words and `train_seconds` of training (evaluations left out)
        into the run; the final evaluation at the end of training is not this schedule's business."""
        if words_done < self.next - 1e-6 or words_done >= self.total_words:
            return False
        self.next = self._after(words_done)
        if self.auto and self.count:
            expected = self.seconds / self.count
            if self.seconds + expected > AUTO_MAX_OVERHEAD * train_seconds:
                return False
        return True

    def run(self, evaluate: Callable[..., T], *args: Any) -> T:
        """`evaluate(*args)`, timed."""
        started = self.clock()
        result = evaluate(*args)
        self.last_seconds = self.clock() - started
        self.seconds += self.last_seconds
        self.count += 1
        return result


@contextlib.contextmanager
def one_cpu_thread(device: torch.device) -> Iterator[None]:
    """torch on one thread while a point during training is scored on the CPU: the numba kernel's threads are
    still spinning after its last step, and torch's own thread pool fighting them made a point of the planted
    benchmark take 160-260 ms instead of 25 ms (2 cores, docs/evaluation.md#what-a-point-costs)."""
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
