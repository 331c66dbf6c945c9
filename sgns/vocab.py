"""Vocabulary stage: word counts -> the kept words, most frequent first, and their ids.

Words of equal count are ordered as gensim 4 orders them (`KeyedVectors.sort_by_descending_frequency`: the word
first seen later comes first), so `vocab.txt` equals gensim's `index_to_key` on the same text and a cut of the
vocabulary (`data.max_vocab_size`, an evaluation's `restrict_vocab`) keeps the same words in both tools. Runs
checkpointed before this order (sgns up to issue 27) broke ties alphabetically; resuming one keeps that order."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Union, overload

import numpy as np

from sgns.errors import SGNSError

TIES = "gensim"  # how `build` orders words of equal count: the word first seen later first, as gensim 4
OLD_TIES = "alphabetical"  # the rule of checkpoints that record none (written before the gensim order)
TIE_RULES = (TIES, OLD_TIES)
DECODE_WORDS = 65536  # words decoded at a time when a WordList is iterated
NEWLINE = ord("\n")
# A checkpoint's vocabulary words: WordList's two arrays (since issue 32); older checkpoints hold a list of str
# under "words", which still loads and resumes.
UTF8_KEY, BOUNDS_KEY, OLD_WORDS_KEY = "words_utf8", "word_bounds", "words"


class WordList(Sequence[str]):
    """Words as one UTF-8 buffer and the bounds of each word in it (word i is utf8[bounds[i]:bounds[i + 1]]).

    A vocabulary's words live through a whole run; as Python strings in a list they take ~56 bytes a word plus
    the word (115 MB at 2.05M words), here the word's bytes plus 8, and a checkpoint stores the two arrays as
    tensors instead of pickling millions of strings (docs/memory.md). Python strings are made only when read:
    `words[i]`, a slice (a list), iteration (decoded DECODE_WORDS at a time), `list(words)`."""

    __slots__ = ("utf8", "bounds")

    def __init__(self, utf8: np.ndarray, bounds: np.ndarray) -> None:
        self.utf8 = np.asarray(utf8, dtype=np.uint8)
        self.bounds = np.asarray(bounds, dtype=np.int64)
        if self.bounds.ndim != 1 or len(self.bounds) == 0 or self.bounds[0] != 0 \
                or self.bounds[-1] != len(self.utf8) or np.any(np.diff(self.bounds) < 0):
            raise ValueError(f"word bounds do not fit a buffer of {len(self.utf8)} bytes")

    @classmethod
    def from_strings(cls, words: Iterable[str]) -> WordList:
        words = words if isinstance(words, list) else list(words)
        joined = "".join(words)
        utf8 = joined.encode("utf-8")
        if len(utf8) == len(joined):  # ASCII: a character is a byte
            lengths = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
        else:
            lengths = np.fromiter(map(len, map(str.encode, words)), dtype=np.int64, count=len(words))
        bounds = np.zeros(len(words) + 1, dtype=np.int64)
        np.cumsum(lengths, out=bounds[1:])
        return cls(np.frombuffer(utf8, dtype=np.uint8).copy(), bounds)

    @classmethod
    def from_lines(cls, utf8: np.ndarray) -> WordList:
        """The words of a buffer that holds each word followed by "\n" (the token cache's words.txt)."""
        newlines = np.flatnonzero(np.asarray(utf8, dtype=np.uint8) == NEWLINE)
        bounds = np.zeros(len(newlines) + 1, dtype=np.int64)
        bounds[1:] = newlines - np.arange(len(newlines))  # each earlier "\n" removed
        keep = np.ones(len(utf8), dtype=bool)
        keep[newlines] = False
        return cls(np.asarray(utf8, dtype=np.uint8)[keep], bounds)

    def take(self, ids: np.ndarray) -> WordList:
        """The words `ids`, in that order, as a new compact WordList (numpy only: no string is made)."""
        ids = np.asarray(ids, dtype=np.int64)
        starts, lengths = self.bounds[ids], self.bounds[ids + 1] - self.bounds[ids]
        bounds = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(lengths, out=bounds[1:])
        # byte k of new word j is old byte starts[j] + (k - bounds[j])
        source = np.repeat(starts - bounds[:-1], lengths) + np.arange(bounds[-1], dtype=np.int64)
        return WordList(self.utf8[source], bounds)

    def __len__(self) -> int:
        return len(self.bounds) - 1

    @overload
    def __getitem__(self, i: int) -> str: ...

    @overload
    def __getitem__(self, i: slice) -> List[str]: ...

    def __getitem__(self, i: Union[int, slice]) -> Union[str, List[str]]:
        if isinstance(i, slice):
            start, stop, step = i.indices(len(self))
            if step != 1:
                return [self[k] for k in range(start, stop, step)]
            return self._decode(start, stop) if start < stop else []
        n = len(self)
        k = int(i) + n if int(i) < 0 else int(i)  # numpy integers too
        if not 0 <= k < n:
            raise IndexError(f"word index {i} out of range for {n} words")
        return self.utf8[self.bounds[k] : self.bounds[k + 1]].tobytes().decode("utf-8")

    def _decode(self, start: int, stop: int) -> List[str]:
        """Words start..stop-1 as strings: their bytes with a "\n" put after each (numpy), one decode and one
        split, the speed of "\n".join(words).split("\n"); a word holding "\n" itself is sliced out alone."""
        base = int(self.bounds[start])
        chunk = self.utf8[base : self.bounds[stop]]
        ends = self.bounds[start + 1 : stop + 1] - base
        if not (chunk == NEWLINE).any():
            lines = np.empty(len(chunk) + len(ends), dtype=np.uint8)
            separators = ends + np.arange(len(ends))  # word j's bytes move right by the j separators before it
            lines[separators] = NEWLINE
            between = np.ones(len(lines), dtype=bool)
            between[separators] = False
            lines[between] = chunk
            return lines.tobytes().decode("utf-8").split("\n")[:-1]
        data, bounds = chunk.tobytes(), [0, *ends.tolist()]
        return [data[a:b].decode("utf-8") for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    def __iter__(self) -> Iterator[str]:
        for start in range(0, len(self), DECODE_WORDS):
            yield from self._decode(start, min(start + DECODE_WORDS, len(self)))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, WordList):
            return np.array_equal(self.bounds, other.bounds) and np.array_equal(self.utf8, other.utf8)
        if isinstance(other, (list, tuple)):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable arrays, compared by value

    def __repr__(self) -> str:
        shown = ", ".join(map(repr, self[:5]))
        return f"WordList([{shown}{', ...' if len(self) > 5 else ''}], {len(self):,} words)"

    def nbytes(self) -> int:
        return self.utf8.nbytes + self.bounds.nbytes


def as_word_list(words: Sequence[str]) -> WordList:
    return words if isinstance(words, WordList) else WordList.from_strings(words)


def checkpoint_words(vocab_state: dict) -> WordList:
    """The words of a checkpoint's vocabulary entry: its two arrays, or an older checkpoint's list of str."""
    if UTF8_KEY in vocab_state:
        return WordList(vocab_state[UTF8_KEY].numpy(), vocab_state[BOUNDS_KEY].numpy())
    return WordList.from_strings(list(vocab_state[OLD_WORDS_KEY]))


def has_words(vocab_state: object) -> bool:
    """Whether a checkpoint's vocabulary entry holds words (either format)."""
    return isinstance(vocab_state, dict) and (UTF8_KEY in vocab_state or OLD_WORDS_KEY in vocab_state)


class Vocabulary:
    """Words sorted by descending count; `ties` says how words of equal count are ordered (TIE_RULES)."""

    def __init__(self, words: Sequence[str], counts: np.ndarray, source_ids: Optional[np.ndarray] = None,
                 ties: Optional[str] = None):
        self.words = as_word_list(words)  # compact through the run (WordList); strings only where read
        self.counts = np.asarray(counts, dtype=np.int64)
        # The corpus (first-seen) id of each word when built from a corpus's counts; None when loaded.
        self.source_ids = source_ids
        self.ties = ties  # the tie rule it was built with (None: loaded from a file, unknown)
        self._index: Optional[Dict[str, int]] = None

    @property
    def index(self) -> Dict[str, int]:
        """word -> id. Built on first use: training never looks words up, and at millions of words the dict and
        its int objects are ~80 bytes a word (peak memory, docs/memory.md)."""
        if self._index is None:
            self._index = dict(zip(self.words, range(len(self.words)), strict=True))
        return self._index

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self.index

    @classmethod
    def build(cls, words: Sequence[str], counts: np.ndarray, min_count: int = 5,
              max_vocab_size: Optional[int] = None, ties: str = TIES) -> Vocabulary:
        """The words counted at least `min_count` times, by descending count, at most `max_vocab_size` of them.

        `words` and `counts` are indexed by corpus id, and corpus ids are first-seen order (sgns.corpus, also
        after phrases): ties put the larger id first, as gensim 4 does with its first-seen index. A tie at the
        `max_vocab_size` cut keeps the words that come first in this order, the words gensim's
        `restrict_vocab` would keep (gensim's own max_final_vocab never cuts a tie: it drops every word of the
        count at its cut)."""
        if ties not in TIE_RULES:
            raise ValueError(f"ties must be one of {TIE_RULES}, not {ties!r}")
        counts = np.asarray(counts, dtype=np.int64)
        keep = np.flatnonzero(counts >= min_count)
        if len(keep) == 0:
            top = int(counts.max()) if len(counts) else 0
            raise SGNSError(f"no word occurs at least data.min_count={min_count} times (the most frequent "
                            f"occurs {top} times): lower data.min_count or use a larger corpus")
        if ties == TIES:  # gensim's np.lexsort((-indices, -counts)), on the first-seen ids
            order = keep[np.lexsort((-keep, -counts[keep]))][:max_vocab_size]
        else:  # alphabetical first (one C-keyed sort), then a stable sort by descending count
            strings = list(words) if isinstance(words, WordList) else words  # a per-word lookup for the sort key
            alphabetical = np.asarray(sorted(keep.tolist(), key=strings.__getitem__), dtype=np.int64)
            order = alphabetical[np.argsort(-counts[alphabetical], kind="stable")][:max_vocab_size]
        # The kept words as one compact WordList (no string each): once the caller drops the corpus's words
        # (train does) nothing of them stays scattered over the heap, and the run holds bytes, not strings.
        if isinstance(words, WordList):
            kept = words.take(order)
        else:
            kept = WordList.from_strings(list(map(words.__getitem__, order.tolist())))
        return cls(kept, counts[order], order, ties)

    def remap(self, source: Union[int, Sequence[str]]) -> np.ndarray:
        """int32 table from a corpus's first-seen ids to vocabulary ids (-1: not kept). `source` is the corpus's
        word list, or only its length for a vocabulary built from that corpus's counts."""
        if isinstance(source, int):
            if self.source_ids is None:
                raise SGNSError("this vocabulary was not built from the corpus's counts (it was loaded): pass "
                                "the corpus's words to remap()")
            table = np.full(source, -1, dtype=np.int32)
            table[self.source_ids] = np.arange(len(self), dtype=np.int32)
            return table
        get = self.index.get
        return np.fromiter((get(w, -1) for w in source), dtype=np.int32, count=len(source))

    def save(self, path: str | Path) -> None:
        """`word count` per line, as word2vec's -save-vocab writes it."""
        with open(path, "w", encoding="utf-8") as f:
            for w, c in zip(self.words, self.counts.tolist(), strict=False):
                f.write(f"{w} {c}\n")

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        words, counts = [], []
        with open(path, encoding="utf-8") as f:
            for line in f:
                w, c = line.rstrip("\n").rsplit(" ", 1)
                words.append(w)
                counts.append(int(c))
        return cls(words, np.asarray(counts, dtype=np.int64))

    def state_dict(self) -> dict:
        import torch

        # The words as two tensors (written from memory, no pickled strings); checkpoint_words reads both formats
        state = {UTF8_KEY: torch.from_numpy(self.words.utf8), BOUNDS_KEY: torch.from_numpy(self.words.bounds),
                 "counts": torch.from_numpy(self.counts.copy())}
        if self.ties is not None:
            state["ties"] = self.ties
        return state

    @classmethod
    def from_state_dict(cls, state: dict) -> Vocabulary:
        return cls(checkpoint_words(state), state["counts"].numpy(), ties=tie_rule(state))


def tie_rule(vocab_state: Optional[dict]) -> str:
    """The tie rule of a checkpoint's vocabulary (its "vocab" entry; None: no checkpoint, a new run's rule).
    Checkpoints written before sgns recorded one broke ties alphabetically."""
    if vocab_state is None:
        return TIES
    return vocab_state.get("ties", OLD_TIES)
