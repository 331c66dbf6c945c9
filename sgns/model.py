"""Model stage: two embedding tables and the SGNS objective (the full softmax it replaces; fastText's subwords).

P(pair is real) = sigmoid(w . v), w the center word's input vector, v the other word's output vector.
A positive (center, context) pair has label 1; each of its K negatives label 0. The loss is binary
cross-entropy with logits, summed over the K + 1 terms of every pair (word2vec applies each pair's full
gradient, so the sum, not the mean, matches its learning rate).
"""

from __future__ import annotations

import ctypes
import math
import os
import sys
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence, Tuple

import numba
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sgns.errors import SGNSError
from sgns.subwords import SubwordTable, subword_table

if TYPE_CHECKING:
    from sgns.config import ModelConfig


HUGE_PAGE = 1 << 21
HUGE_PAGE_TABLE_BYTES = 64 << 20  # tables from this size on get huge pages (a 60k x 100 table, 24 MB, does not)
_MADV_HUGEPAGE, _MADV_NOHUGEPAGE, _MADV_COLLAPSE = 14, 15, 25  # Linux madvise advice values (COLLAPSE: >= 6.1)


def advise_huge_pages(table: np.ndarray, huge: bool = True, collapse: bool = True) -> bool:
    """Back `table`'s memory with 2 MiB transparent huge pages where Linux allows (THP `madvise` or `always`
    mode): the kernel's rows are random accesses, and with 4 KiB pages a big table misses the TLB on nearly
    every row. MADV_COLLAPSE converts the already-written pages now (about 2 s for 800 MB here; before Linux
    6.1, khugepaged does it later). With `huge` false, the opposite advice (MADV_NOHUGEPAGE: numpy asks for
    huge pages for its large arrays by itself, torch does not). `collapse` false: advice only, for memory not
    written yet (`embedding_table`: its first writes fault in huge pages, no conversion needed). Returns whether
    the advice was taken; a no-op elsewhere and for tables under two huge pages. Best effort: it changes no value."""
    if not sys.platform.startswith("linux") or table.nbytes < 2 * HUGE_PAGE:
        return False
    lo = (table.ctypes.data + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1)
    hi = (table.ctypes.data + table.nbytes) & ~(HUGE_PAGE - 1)
    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return False
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    if madvise(lo, hi - lo, _MADV_HUGEPAGE if huge else _MADV_NOHUGEPAGE) != 0:
        return False
    if huge and collapse:
        madvise(lo, hi - lo, _MADV_COLLAPSE)  # best effort: EINVAL before Linux 6.1, EAGAIN/ENOMEM under pressure
    return True


def embedding_table(rows: int, dim: int, sparse: bool, torch_init: bool = True) -> nn.Embedding:
    """nn.Embedding(rows, dim): a large one's weight advised huge pages before its first write, so it is faulted in
    as 2 MiB pages instead of converted later (MADV_COLLAPSE of a written 800 MB table: 2-4 s here). `torch_init`:
    nn.Embedding's own normal_ initialisation (the same draws from torch's generator, so runs keep their bits)."""
    weight = torch.empty(rows, dim)
    if weight.nbytes >= HUGE_PAGE_TABLE_BYTES:
        advise_huge_pages(weight.numpy(), collapse=False)
    table = nn.Embedding(rows, dim, sparse=sparse, _weight=weight)
    if torch_init:
        with torch.no_grad():
            nn.init.normal_(table.weight)
    return table


_GOLDEN, _MIX1, _MIX2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


@numba.njit(cache=True, nogil=True)
def _fill_uniform(table: np.ndarray, first: int, last: int, low: float, high: float, seed: np.uint64) -> None:
    """Rows first..last-1 of `table` (float32, C order) uniform in [low, high): two values from each 64-bit
    splitmix64 output of the counter seed + (element pair + 1) * golden, 24 bits each, so every value depends on the
    seed and its position alone (any row range, any thread, the same values)."""
    flat = table.reshape(-1)
    dim = table.shape[1]
    width = np.float32(high - low)
    base = np.float32(low)
    unit = np.float32(1.0 / 16777216.0)
    for e in range(first * dim - (first * dim) % 2, last * dim, 2):
        z = seed + np.uint64(e // 2 + 1) * _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        z = z ^ (z >> np.uint64(31))
        if e >= first * dim:
            flat[e] = base + width * (np.float32(z >> np.uint64(40)) * unit)
        if e + 1 < last * dim:
            flat[e + 1] = base + width * (np.float32((z >> np.uint64(8)) & np.uint64(0xFFFFFF)) * unit)


def uniform_table(table: torch.Tensor, low: float, high: float, threads: Optional[int] = None,
                  seed: Optional[int] = None) -> int:
    """Fill a CPU float32 table uniformly in [low, high) from one seed drawn from torch's generator (so trainer.seed
    decides it), on `threads` threads (default: torch's thread count), each writing its own rows: the first writes
    fault the pages in on every thread too. The values do not depend on the thread count. About 4x faster than
    torch's serial uniform_ on 2 threads for model=subword's 0.8 GB input table (docs/subwords.md, "Speed").
    `seed`: fill again from a seed an earlier fill returned (no draw); returns the seed."""
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())
    counter = np.uint64(seed)
    values = table.detach().numpy()
    rows = values.shape[0]
    threads = max(1, min(threads or torch.get_num_threads(), rows // 4096 + 1))
    bounds = [rows * i // threads for i in range(threads + 1)]
    if threads == 1:
        _fill_uniform(values, 0, rows, low, high, counter)
        return seed
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads - 1) as pool:
        done = [pool.submit(_fill_uniform, values, bounds[i], bounds[i + 1], low, high, counter)
                for i in range(1, threads)]
        _fill_uniform(values, bounds[0], bounds[1], low, high, counter)
        for future in done:
            future.result()
    return seed


def group_size(positives: int, rows: int) -> int:
    """Positives served by each of `rows` rows of negatives: row r serves positives r*size .. (r+1)*size-1."""
    return -(-positives // rows)


@dataclass
class CenterRows:
    """The input rows behind a batch of center words. SGNS: `rows` are the centers themselves (one row each).
    model=subword: each distinct center's rows, flat (`rows`, int64), `bag` the distinct center each belongs to,
    `counts` rows per distinct center, `inverse` each center's distinct index and `pairs` the centers sharing it."""

    rows: torch.Tensor
    bag: Optional[torch.Tensor] = None
    counts: Optional[torch.Tensor] = None
    inverse: Optional[torch.Tensor] = None
    pairs: Optional[torch.Tensor] = None

    def means(self, weight: torch.Tensor) -> torch.Tensor:
        """Each distinct center's mean of rows (model=subword)."""
        sums = weight.new_zeros((len(self.counts), weight.shape[1])).index_add_(0, self.bag, weight[self.rows])
        return sums / self.counts.unsqueeze(1).to(weight.dtype)

    def vectors(self, weight: torch.Tensor) -> torch.Tensor:
        """Each center's input vector h (B, D): its row, or the mean of its rows."""
        if self.bag is None:
            return weight.index_select(0, self.rows)
        return self.means(weight).index_select(0, self.inverse)

    def spread(self, grad: torch.Tensor) -> torch.Tensor:
        """Each row's gradient from the centers' dL/dh (B, D), row by row as `rows`: fastText's skip-gram gives every
        row of a word the FULL dL/dh (not dL/dh / n, the mean's own derivative), summed over the batch's pairs of
        that word first (the rows of a word are expanded once per distinct center, not once per pair)."""
        if self.bag is None:
            return grad
        per_center = grad.new_zeros((len(self.counts), grad.shape[1])).index_add_(0, self.inverse, grad)
        return per_center.index_select(0, self.bag)

    def terms(self) -> torch.Tensor:
        """How many pairs' gradients each entry of `rows` carries (the row cap counts them)."""
        if self.bag is None:
            return torch.ones(len(self.rows), dtype=torch.float32, device=self.rows.device)
        return self.pairs.index_select(0, self.bag).to(torch.float32)


class SGNS(nn.Module):
    def __init__(self, vocab_size: int, dim: int, sparse: bool = True):
        super().__init__()
        self.input = embedding_table(vocab_size, dim, sparse)  # center-word vectors (the embeddings)
        self.output = embedding_table(vocab_size, dim, sparse)  # context-word vectors
        self.reset_parameters()

    def reset_parameters(self) -> None:
        dim = self.input.embedding_dim
        with torch.no_grad():  # word2vec's initialisation
            self.input.weight.uniform_(-0.5 / dim, 0.5 / dim)
            self.output.weight.zero_()

    def forward(self, centers: torch.Tensor, contexts: torch.Tensor,
                negatives: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Logits of the positives (B,) and of the negatives (B, K).

        `negatives` is (B, K), or (ceil(B / G), K) when G consecutive positives share one draw of
        negatives: their logits are then one (G, D) x (D, K) product per group.
        """
        w = self.center_vectors(centers)
        positive = (w * self.output(contexts)).sum(-1)
        groups, k = negatives.shape
        size = group_size(len(centers), groups)
        w = F.pad(w, (0, 0, 0, groups * size - len(centers))).view(groups, size, -1)
        negative = torch.bmm(w, self.output(negatives).transpose(1, 2)).reshape(-1, k)[: len(centers)]
        return positive, negative

    def untrained_loss(self, negatives: int) -> float:
        """The loss per pair with every logit 0 (the scale of a diverged run): (1 + K) ln 2 for K negatives."""
        return (1 + negatives) * math.log(2)

    def center_rows(self, centers: torch.Tensor) -> CenterRows:
        """The input rows a batch of centers reads and updates: a word's own row."""
        return CenterRows(centers)

    def center_vectors(self, centers: torch.Tensor) -> torch.Tensor:
        """The centers' input vectors (differentiable: the reference's forward)."""
        return self.input(centers)

    @torch.no_grad()
    def word_vectors(self) -> torch.Tensor:
        """Every vocabulary word's vector (vectors.bin, evaluation): its input row."""
        return self.input.weight.detach()


class MeanOfRows(torch.autograd.Function):
    """h = the mean of each center's input rows; backward hands every row the center's FULL dL/dh, fastText's
    skip-gram update (its Model::update adds the hidden gradient to each input row unscaled), not the mean's true
    derivative dL/dh / n. The result is a sparse gradient of the input table, as nn.Embedding(sparse=True) gives."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, rows: torch.Tensor, bag: torch.Tensor,  # type: ignore[override]
                counts: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(rows, bag)
        ctx.table_shape = weight.shape
        return CenterRows(rows, bag, counts).means(weight)

    @staticmethod
    def backward(ctx, grad_h: torch.Tensor):  # type: ignore[override]
        rows, bag = ctx.saved_tensors
        grad = torch.sparse_coo_tensor(rows.unsqueeze(0), grad_h.index_select(0, bag), ctx.table_shape,
                                       check_invariants=False)
        return grad, None, None, None


class SubwordSGNS(SGNS):
    """fastText's skip-gram with negative sampling (`model=subword`): a center word's input vector h is the mean of
    its rows in `input` (its own row, then one per character n-gram, sgns.subwords), the loss is SGNS's on h, and
    every row of the center gets the full gradient dL/dh (MeanOfRows). `input` has n_words + bucket rows (words
    first, then the hash buckets), `output` n_words; initialised as fastText: input uniform(-1/dim, 1/dim), output 0.
    The table of rows is rebuilt from the vocabulary and minn/maxn/bucket (buffers left out of the state dict)."""

    def __init__(self, table: SubwordTable, dim: int, sparse: bool = True):
        nn.Module.__init__(self)
        self.table = table
        # words' own rows, then the n-gram buckets; set by reset_parameters alone (no normal_ pass over 0.8 GB)
        self.input = embedding_table(table.input_rows, dim, sparse, torch_init=False)
        self.output = embedding_table(table.n_words, dim, sparse, torch_init=False)  # context-word vectors
        self.register_buffer("offsets", torch.from_numpy(table.offsets), persistent=False)
        self.register_buffer("rows", torch.from_numpy(table.rows).long(), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        dim = self.input.embedding_dim
        with torch.no_grad():  # fastText's initialisation (src/fasttext.cc: wi uniform(-1/dim, 1/dim), wo zero)
            low, high = -1.0 / dim, 1.0 / dim
            # rows no word has (buckets none of its n-grams hash to) keep this fill: a checkpoint stores the others
            self.input_fill: Optional[dict] = {"seed": uniform_table(self.input.weight, low, high), "low": low,
                                               "high": high, "rows": self.input.num_embeddings}
            self.output.weight.zero_()

    def checkpoint_state(self) -> Tuple[dict, Optional[dict]]:
        """(state_dict, input_fill) for a checkpoint: while the rows no word has still hold the initial fill (no
        init_from replaced them), 'input.weight' holds only the rows words have and 'input.rows' their numbers,
        and `input_fill` says how to fill the rest again (`unpack_input_rows`): at the default 2M buckets most
        rows (86% on the 22M-word dev corpus) are never trained, and the checkpoint shrinks as much. Otherwise
        (state_dict, None)."""
        state = self.state_dict()
        if self.input_fill is None:
            return state, None
        trained = torch.unique(self.rows)
        if len(trained) == self.input.num_embeddings:
            return state, None
        state["input.weight"] = state["input.weight"][trained.to(state["input.weight"].device)]
        state["input.rows"] = trained.cpu()
        return state, dict(self.input_fill)

    def center_rows(self, centers: torch.Tensor) -> CenterRows:
        """Every input row of each distinct center, flat (host syncs for their numbers), with the center each belongs
        to: a frequent word is the center of many pairs of a batch, its rows are gathered once."""
        distinct, inverse, pairs = torch.unique(centers.long(), return_inverse=True, return_counts=True)
        starts = self.offsets[distinct]
        counts = self.offsets[distinct + 1] - starts
        bag = torch.repeat_interleave(torch.arange(len(distinct), device=centers.device), counts)
        first = torch.cumsum(counts, 0) - counts  # where each center's rows begin in the flat list
        position = torch.arange(len(bag), device=centers.device) - first[bag]
        return CenterRows(self.rows[starts[bag] + position], bag, counts, inverse, pairs)

    def center_vectors(self, centers: torch.Tensor) -> torch.Tensor:
        found = self.center_rows(centers)
        return MeanOfRows.apply(self.input.weight, found.rows, found.bag, found.counts).index_select(0, found.inverse)

    @torch.no_grad()
    def word_vectors(self) -> torch.Tensor:
        """Every vocabulary word's vector: the mean of its rows (fastText's getWordVector)."""
        return mean_of_rows(self.input.weight.detach(), self.offsets, self.rows)


@torch.no_grad()
def mean_of_rows(input_table: torch.Tensor | np.ndarray, offsets: torch.Tensor | np.ndarray,
                 rows: torch.Tensor | np.ndarray) -> torch.Tensor:
    """(len(offsets) - 1, dim) float32: row i the mean of input_table[rows[offsets[i]:offsets[i + 1]]] (zeros for an
    empty one), as fastText's getWordVector composes a word. The one implementation: vectors.bin, a checkpoint's or
    a fastText .bin's word vectors, one word's (torch's embedding_bag, on torch's threads). `input_table` may be a
    read-only array (a mapped .bin): it is only read."""
    if isinstance(input_table, np.ndarray):
        with warnings.catch_warnings():  # torch warns that a read-only array is not writable: it is not written
            warnings.simplefilter("ignore", UserWarning)
            input_table = torch.from_numpy(input_table)
    device = input_table.device
    rows = torch.as_tensor(rows).to(device=device, dtype=torch.long)
    offsets = torch.as_tensor(offsets).to(device=device, dtype=torch.long)
    return F.embedding_bag(rows, input_table, offsets[:-1], mode="mean")


def sgns_loss(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """BCE-with-logits summed over all pairs: label 1 for positives, 0 for negatives."""
    return (F.binary_cross_entropy_with_logits(positive, torch.ones_like(positive), reduction="sum")
            + F.binary_cross_entropy_with_logits(negative, torch.zeros_like(negative), reduction="sum"))


# Full-softmax skip-gram (`model=full_softmax`), the objective negative sampling replaces:
# P(context | center) = softmax over the whole vocabulary of C @ w, w the center's input vector and C the
# output table; the loss is the cross-entropy of the true context, summed over the batch. Every pair costs
# |V| dot products (and its gradient touches every output row) where negative sampling costs K + 1: that is
# what `scripts/studies/why_negative_sampling.py` measures. Same tables, names and initialisation as SGNS (`input`,
# `output`), so checkpoints, vector export, `load_model` and `model.init_from` work unchanged. The training
# step is sgns.pipelines.softmax.


class FullSoftmax(nn.Module):
    def __init__(self, vocab_size: int, dim: int):
        super().__init__()
        self.input = nn.Embedding(vocab_size, dim)  # center-word vectors (the embeddings)
        self.output = nn.Embedding(vocab_size, dim)  # one softmax row per vocabulary word
        self.reset_parameters()

    def reset_parameters(self) -> None:
        dim = self.input.embedding_dim
        with torch.no_grad():  # word2vec's initialisation, as SGNS
            self.input.weight.uniform_(-0.5 / dim, 0.5 / dim)
            self.output.weight.zero_()

    def forward(self, centers: torch.Tensor) -> torch.Tensor:
        """Logits over the whole vocabulary, (B, |V|)."""
        return self.input(centers) @ self.output.weight.T

    def untrained_loss(self, negatives: int) -> float:
        """The loss per pair with every logit 0: ln |V| (no negatives: every word is scored)."""
        return math.log(max(self.input.num_embeddings, 2))

    @torch.no_grad()
    def word_vectors(self) -> torch.Tensor:
        """Every vocabulary word's vector: its input row."""
        return self.input.weight.detach()


def full_softmax_loss(model: FullSoftmax, centers: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the true contexts over all |V| logits, summed over the batch (the reference)."""
    return F.cross_entropy(model(centers), contexts, reduction="sum")


def available_memory() -> int:
    """Bytes this machine can still allocate without swapping (MemAvailable; physical memory elsewhere)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_table_memory(vocab_size: int, dim: int, tables: int = 2, available: int | None = None,
                       bucket: int = 0) -> None:
    """One clear SGNSError when the float32 tables cannot fit in memory (not an allocator traceback later);
    `bucket`: the subword model's n-gram rows, in the input table beside its vocabulary_size word rows."""
    need = (tables * vocab_size + bucket) * dim * 4
    available = available_memory() if available is None else available
    if need > available:
        buckets = f" and {bucket:,} n-gram buckets" if bucket else ""
        lower = "model.bucket, " if bucket else ""
        raise SGNSError(f"the model's {tables} tables of {vocab_size:,} words{buckets} x {dim:,} dims need "
                        f"{need / 2**30:,.1f} GiB but {available / 2**30:,.1f} GiB of memory is available: lower "
                        f"{lower}model.dim, or shrink the vocabulary (raise data.min_count or set data.max_vocab_size)")


def unpack_input_rows(model_state: dict, fill: Optional[dict]) -> dict:
    """A checkpoint's model state with its whole input table: the rows it stores put back among the initial fill's
    (`SubwordSGNS.checkpoint_state`), bit for bit what was trained. Without a fill (or already whole), the state
    as it is."""
    if fill is None or "input.rows" not in model_state:
        return model_state
    state = dict(model_state)
    rows, kept = state.pop("input.rows"), state["input.weight"]
    table = torch.empty(int(fill["rows"]), kept.shape[1], dtype=kept.dtype)
    uniform_table(table, fill["low"], fill["high"], seed=int(fill["seed"]))
    table[rows.long()] = kept.to(table.device)
    state["input.weight"] = table
    return state


def make_model(model: ModelConfig, vocab_size: int, words: Optional[Sequence[str]] = None
               ) -> SGNS | FullSoftmax | SubwordSGNS:
    """The model group's module: SGNS, the full softmax it replaces (`model=full_softmax`), or fastText's subword
    skip-gram (`model=subword`: its rows built here from the vocabulary `words`, in index order)."""
    if model.name == "subword":
        if words is None or len(words) != vocab_size:
            raise ValueError("model=subword needs the vocabulary's words to build its n-gram rows")
        table = subword_table(words, model.minn, model.maxn, model.bucket)
        check_table_memory(vocab_size, model.dim, bucket=table.bucket)
        return SubwordSGNS(table, model.dim)
    check_table_memory(vocab_size, model.dim)
    if model.name == "full_softmax":
        return FullSoftmax(vocab_size, model.dim)
    return SGNS(vocab_size, model.dim)
