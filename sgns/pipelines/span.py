"""The numba CPU pipeline: token spans in, the compiled kernel (sgns.pipelines.span_kernel) run over their pieces
on all cores.

Pieces are aligned to sentence starts and defined by positions alone (`piece_bounds`), never by the thread
count. `SpanTrainer` runs a piece kernel (`train_piece`, or `train_piece_per_context` with
data.window_negatives=false) over a span's pieces on several threads at once, racing on shared rows exactly as
word2vec and gensim do (Hogwild, the fast default), or, deterministic, on one thread in piece order.
`SpanPipeline` is the training loop's view of it (sgns.pipelines.Pipeline): batches are token spans
(`TokenSpans`), the step trains one.

No pairs are built for it: a span is `data.span_tokens` consecutive corpus positions (a sentence cut by a span
edge is trained as two), read from the token cache as an in-memory copy (its pages then dropped, so memory
stays flat); the position a run continues from is (epoch, span, 0), so spans are regenerated exactly on
resume. Under torchrun a rank trains only its shard's chunks (sgns.distributed.Shard): each chunk is cut
into spans ending at the points where the ranks merge their tables, so a merge always falls between two steps.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator, List, Optional, Tuple

import numpy as np
import torch

from sgns.config import DataConfig, TrainerConfig
from sgns.corpus import EncodedCorpus
from sgns.errors import SGNSError
from sgns.model import HUGE_PAGE_TABLE_BYTES, SGNS, advise_huge_pages
from sgns.pipelines.base import PipelineBase
from sgns.pipelines.negatives import unigram_table
from sgns.pipelines.plan import ChunkPlan, Position, keep_probabilities
from sgns.pipelines.span_kernel import (
    PieceKernel,
    entry_point,
    kernel_alias_table,
    piece_seed,
    reads_subwords,
    train_piece,
    train_piece_per_context,
)
from sgns.pipelines.subword_kernel import hidden_gains, train_piece_subword
from sgns.subwords import SubwordTable
from sgns.vocab import Vocabulary

if TYPE_CHECKING:
    from sgns.distributed import Shard


def piece_bounds(starts: np.ndarray, piece_tokens: int) -> np.ndarray:
    """Sentence indices that cut a span into pieces: a piece holds the sentences starting in one
    `piece_tokens`-long stretch of positions. A function of the positions only, never of the thread count."""
    n_sent = len(starts) - 1
    marks = np.searchsorted(starts[:-1], np.arange(0, int(starts[-1]), piece_tokens))
    return np.unique(np.concatenate([marks, [n_sent]])).astype(np.int64)


PIECE_TOKENS = 1 << 12  # corpus positions per piece: the unit of parallel work and of random streams
LOSS_SAMPLE_MIN_SPAN = 1 << 12  # spans from this length on sum the loss of a sample of their windows


class SpanTrainer:
    """Runs a piece kernel over the pieces of a span: on `threads` threads at once racing on shared rows
    (Hogwild, the fast default), or, when `deterministic`, on one thread in piece order, so that the result
    is a function of the seed alone whatever the thread count. `kernel`: `train_piece` (the window's
    contexts share their negatives) or `train_piece_per_context` (each context draws its own), or with
    `subwords` (model=subword: W holds a row per word and per n-gram bucket) `train_piece_subword`."""

    def __init__(self, W: np.ndarray, C: np.ndarray, remap: np.ndarray, keep: np.ndarray, accept: np.ndarray,
                 alias: np.ndarray, window: int, negatives: int, seed: int, threads: int = 1,
                 piece_tokens: int = PIECE_TOKENS, loss_every: int = 16, deterministic: bool = False,
                 kernel: PieceKernel = train_piece, subwords: Optional[SubwordTable] = None):
        if reads_subwords(kernel) != (subwords is not None):
            raise SGNSError("the subword kernel trains with a table of subword rows, the SGNS kernels without one")
        if subwords is not None and (len(W) != subwords.input_rows or len(C) != subwords.n_words):
            raise SGNSError(f"model=subword's tables have {subwords.input_rows:,} input rows (words + buckets) and "
                            f"{subwords.n_words:,} output rows: got {len(W):,} and {len(C):,}")
        if subwords is not None and not _table_fits(subwords, len(W)):  # the kernel reads rows unchecked
            raise SGNSError(f"model=subword's table of rows does not fit its {len(W):,}-row input table")
        # model=subword: each word's rows and the step of its mean per row step (the kernel's arguments before dim)
        self.subword_args: Tuple[np.ndarray, ...] = () if subwords is None else (
            subwords.offsets, subwords.rows, hidden_gains(subwords.offsets, subwords.rows))
        self.W, self.C, self.remap = W, C, remap
        self.keep = np.asarray(keep, dtype=np.float32)
        self.accept, self.alias = accept, alias
        self.window, self.negatives, self.seed = window, negatives, seed
        self.threads, self.piece_tokens, self.loss_every = threads, piece_tokens, loss_every
        self.deterministic = deterministic
        self.kernel = kernel
        self._pool: Optional[ThreadPoolExecutor] = None  # the helper threads, started on first use
        # Compiled (or loaded from numba's cache) now, announced if it compiles: the loop's first step, which
        # the words/s is timed over, would otherwise pay it.
        entry_point(kernel, W.shape[1])

    def train_span(self, raw: np.ndarray, starts: np.ndarray, epoch: int, chunk: int, lr0: float,
                   lr1: float) -> Tuple[float, int, int]:
        """Train on one span (its ids and sentence starts); lr falls linearly from lr0 at the span's start to
        lr1 at its end. Returns (summed loss of the sampled windows, their positive pairs, all positive pairs)."""
        bounds = piece_bounds(starts, self.piece_tokens)
        pieces = len(bounds) - 1
        span = max(int(starts[-1]), 1)
        # A short span (a corpus under ~400k words) sums the loss of every window: a 1-in-16 sample of it may
        # hold none, and the step would report no loss for its pairs. Summing all costs ~30% of the kernel's time.
        loss_every = self.loss_every if span >= LOSS_SAMPLE_MIN_SPAN else min(self.loss_every, 1)

        dim = self.W.shape[1]
        kernel = entry_point(self.kernel, dim)

        def run(p: int) -> Tuple[float, int, int, int]:
            a, b = int(bounds[p]), int(bounds[p + 1])
            la = lr0 + (lr1 - lr0) * int(starts[a]) / span
            lb = lr0 + (lr1 - lr0) * int(starts[b]) / span
            return kernel(self.W, self.C, raw, self.remap, starts, a, b, self.keep, self.accept, self.alias,
                          self.window, self.negatives, la, lb, np.uint64(piece_seed(self.seed, epoch, chunk, p)),
                          loss_every, *self.subword_args, dim)

        if self.deterministic or self.threads <= 1 or pieces <= 1:
            results = [run(p) for p in range(pieces)]
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads - 1, thread_name_prefix="sgns-numba")
            results = _run_threads(run, range(pieces), self.threads, self._pool)
        return sum(r[0] for r in results), sum(r[1] for r in results), sum(r[2] for r in results)


def _table_fits(table: SubwordTable, input_rows: int) -> bool:
    """Whether every word's rows (offsets rising from 0 to len(rows), each word's own row first) index the table."""
    offsets, rows = table.offsets, table.rows
    if len(offsets) != table.n_words + 1 or offsets[0] != 0 or offsets[-1] != len(rows):
        return False
    return len(rows) == 0 or (bool(np.all(np.diff(offsets) >= 1)) and 0 <= rows.min() and rows.max() < input_rows)


def _run_threads(fn: Callable[[int], Tuple[float, int, int, int]], items: range, threads: int,
                 pool: ThreadPoolExecutor) -> List[Tuple[float, int, int, int]]:
    """fn over items on this thread and `threads - 1` of the pool's, each taking the next item when it is free
    (load balance on a shared machine); fn must release the GIL (the kernel is nogil). The pool's threads
    live as long as the trainer: a thread per span would churn malloc arenas (resident memory)."""
    todo = list(items)
    results: List[Optional[Tuple[float, int, int, int]]] = [None] * len(todo)
    lock = threading.Lock()
    nxt = [0]
    errors: List[BaseException] = []

    def worker() -> None:
        while True:
            with lock:
                i = nxt[0]
                nxt[0] += 1
            if i >= len(todo) or errors:
                return
            try:
                results[i] = fn(todo[i])
            except BaseException as e:  # hand it to the caller
                errors.append(e)
                return

    helpers = [pool.submit(worker) for _ in range(threads - 1)]
    worker()
    for helper in helpers:
        helper.result()
    if errors:
        raise errors[0]
    return results  # type: ignore[return-value]


# ------------------------------------------------------------------------------- the batch source: spans

STEPS_PER_EPOCH = 100  # a small corpus gets spans shorter than data.span_tokens: about this many steps an epoch
MIN_SPAN = 1000  # ...but never shorter than this


@dataclass
class Span:
    """One chunk of the corpus for the fused kernel (what the loop hands to its step)."""

    ids: np.ndarray  # int32 corpus ids (first-seen order) of the chunk's positions
    starts: np.ndarray  # int64 sentence starts within the chunk, then its length
    epoch: int
    chunk: int  # the corpus chunk the span is part of (alone: a chunk is one span)
    stream: int  # with the seed and epoch, keys the span's random streams: unique within an epoch
    words_before: float  # corpus words covered before this span (all epochs; all ranks together)
    words_done: float  # corpus words covered once it is trained
    resume_position: Position  # where the spans continue once this one is trained
    chunk_fraction: float = 1.0  # under torchrun: how far into its chunk the rank is once this span is trained
    pairs: int = 0  # positive pairs trained, filled in by the step


class TokenSpans:
    """Spans for every epoch from a position on; a pure function of the corpus and the position."""

    def __init__(self, corpus: EncodedCorpus, span_tokens: int, epochs: int, shard: Optional[Shard] = None,
                 order: str = "sequential", seed: int = 0, streams: int = 1):
        self.corpus, self.epochs, self.shard = corpus, epochs, shard
        self.total_tokens = corpus.total_tokens
        # Steps are what logs, evaluation and checkpoints count: a small corpus still gets enough of them.
        self.span_tokens = min(span_tokens, max(MIN_SPAN, -(-self.total_tokens // STEPS_PER_EPOCH)))
        # Alone, a chunk is one span; under torchrun a shard chunk is cut into spans_per_chunk spans: at most
        # span_tokens long, a multiple of the merge points per chunk.
        self.plan = ChunkPlan(self.total_tokens, self.span_tokens, epochs, shard, order, seed, streams)
        self.spans_per_chunk = 1
        if shard is not None:
            longest = -(-self.total_tokens // shard.n_chunks)
            per_chunk, m = -(-longest // self.span_tokens), shard.points_per_chunk
            self.spans_per_chunk = -(-per_chunk // m) * m

    def total_words(self) -> int:
        return self.plan.total_words()

    def __call__(self, start: Position) -> Iterator[Span]:
        """Spans from `start`: (epoch, chunk, span in it); alone a chunk is one span."""
        m = self.spans_per_chunk
        for epoch, slot, chunk, first in self.plan.chunks(start):
            for i in range(first, m):
                yield Span(*self.plan.read(self.corpus, chunk, i, m), epoch, chunk, chunk * m + i,
                           self.plan.words_done(epoch, slot, i, m), self.plan.words_done(epoch, slot, i + 1, m),
                           (epoch, slot, i + 1), (i + 1) / m)


def _kernel(window_negatives: bool, subwords: Optional[SubwordTable]) -> PieceKernel:
    if subwords is not None:
        return train_piece_subword
    return train_piece if window_negatives else train_piece_per_context


class SpanPipeline(PipelineBase):
    """The fused kernel behind the loop's step interface (sgns.pipelines.Pipeline): batches are token spans,
    `step` trains one with plain SGD, lr falling linearly across it as the schedule says."""

    name = "span"

    def __init__(self, spans: TokenSpans, model: SGNS, vocab: Vocabulary, data: DataConfig, trainer: TrainerConfig,
                 lr_at: Callable[[float], float], subwords: Optional[SubwordTable] = None):
        """`data`: window, negatives, subsample, ns_exponent, window_negatives; `trainer`: seed, deterministic and
        threads (resolved: sgns.pipelines.resolve). `subwords`: model=subword's table of every word's input rows
        (the subword kernel, `train_piece_subword`, which draws negatives per context whatever
        data.window_negatives says, as fastText does)."""
        W, C = model.input.weight, model.output.weight
        if W.device.type != "cpu" or W.dtype != torch.float32 or not (W.is_contiguous() and C.is_contiguous()):
            raise SGNSError("the numba kernel trains contiguous float32 CPU weights: use trainer.kernel=torch")
        self.spans, self.lr_at = spans, lr_at
        self.total_words = spans.total_words()
        accept, alias = kernel_alias_table(unigram_table(vocab.counts, data.ns_exponent))
        for table in (W, C):  # torch's tables are in 4 KiB pages: a big one's rows miss the TLB (docs/kernels.md)
            if table.nbytes >= HUGE_PAGE_TABLE_BYTES:
                advise_huge_pages(table.detach().numpy())
        self.trainer = SpanTrainer(W.detach().numpy(), C.detach().numpy(), vocab.remap(len(spans.corpus.counts)),
                                   keep_probabilities(vocab.counts, data.subsample), accept, alias, data.window,
                                   data.negatives, trainer.seed, trainer.threads, deterministic=trainer.deterministic,
                                   kernel=_kernel(data.window_negatives, subwords), subwords=subwords)

    def batches(self, start: Position) -> Iterator[Span]:
        return self.spans(start)

    def step(self, batch: Span, lr: float) -> float:
        """Train one span; its summed loss (estimated from the sampled windows, see `train_piece`)."""
        lr_end = self.lr_at(batch.words_done / self.total_words)
        loss, loss_pairs, pairs = self.trainer.train_span(batch.ids, batch.starts, batch.epoch, batch.stream, lr,
                                                          lr_end)
        if self.frozen is not None:
            self.frozen.restore()  # a span says no rows: every frozen row
        batch.pairs = pairs
        return loss * pairs / loss_pairs if loss_pairs else 0.0

    def own_state(self) -> dict:
        # No random state to keep: every piece's stream is a function of (seed, epoch, span, piece). Plain SGD
        # has no optimizer state (the key is there as in every checkpoint).
        return {"spans": {"span_tokens": self.spans.span_tokens, "piece_tokens": self.trainer.piece_tokens},
                "optimizer": None}
