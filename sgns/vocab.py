"""Vocabulary stage: word counts -> the kept words, most frequent first, and their ids.

Words of equal count are ordered as gensim 4 orders them (`KeyedVectors.sort_by_descending_frequency`: the word
first seen later comes first), so `vocab.txt` equals gensim's `index_to_key` on the same text and a cut of the
vocabulary (`data.max_vocab_size`, an evaluation's `restrict_vocab`) keeps the same words in both tools. Runs
checkpointed before this order (sgns up to issue 27) broke ties alphabetically; resuming one keeps that order."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from sgns.errors import SGNSError

TIES = "gensim"  # how `build` orders words of equal count: the word first seen later first, as gensim 4
OLD_TIES = "alphabetical"  # the rule of checkpoints that record none (written before the gensim order)
TIE_RULES = (TIES, OLD_TIES)


class Vocabulary:
    """Words sorted by descending count; `ties` says how words of equal count are ordered (TIE_RULES)."""

    def __init__(self, words: List[str], counts: np.ndarray, source_ids: Optional[np.ndarray] = None,
                 ties: Optional[str] = None):
        self.words = list(words)
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
            alphabetical = np.asarray(sorted(keep.tolist(), key=words.__getitem__), dtype=np.int64)
            order = alphabetical[np.argsort(-counts[alphabetical], kind="stable")][:max_vocab_size]
        # Fresh strings, not the corpus's: the kept words then sit together in memory, so once the caller drops
        # the corpus's list (train does) its strings free whole pages instead of leaving the kept ones scattered.
        kept = list(map(words.__getitem__, order.tolist()))
        compact = "\n".join(kept).split("\n")
        return cls(compact if len(compact) == len(kept) else kept, counts[order], order,  # a word with "\n": as is
                   ties)

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

        state = {"words": self.words, "counts": torch.from_numpy(self.counts.copy())}
        if self.ties is not None:
            state["ties"] = self.ties
        return state

    @classmethod
    def from_state_dict(cls, state: dict) -> Vocabulary:
        return cls(list(state["words"]), state["counts"].numpy(), ties=tie_rule(state))


def tie_rule(vocab_state: Optional[dict]) -> str:
    """The tie rule of a checkpoint's vocabulary (its "vocab" entry; None: no checkpoint, a new run's rule).
    Checkpoints written before sgns recorded one broke ties alphabetically."""
    if vocab_state is None:
        return TIES
    return vocab_state.get("ties", OLD_TIES)
