"""Vocabulary stage: word counts -> the kept words, most frequent first, and their ids."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from sgns.errors import SGNSError


class Vocabulary:
    """Words sorted by descending count, ties broken alphabetically so the order is deterministic."""

    def __init__(self, words: List[str], counts: np.ndarray):
        self.words = list(words)
        self.counts = np.asarray(counts, dtype=np.int64)
        self.index: Dict[str, int] = {w: i for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self.index

    @classmethod
    def build(cls, words: Sequence[str], counts: np.ndarray, min_count: int = 5,
              max_vocab_size: Optional[int] = None) -> Vocabulary:
        counts = np.asarray(counts, dtype=np.int64)
        keep = np.flatnonzero(counts >= min_count)
        if len(keep) == 0:
            top = int(counts.max()) if len(counts) else 0
            raise SGNSError(f"no word occurs at least data.min_count={min_count} times (the most frequent "
                            f"occurs {top} times): lower data.min_count or use a larger corpus")
        order = sorted(keep.tolist(), key=lambda i: (-counts[i], words[i]))
        if max_vocab_size is not None:
            order = order[:max_vocab_size]
        vocab = cls([words[i] for i in order], counts[order])
        vocab.source_ids = np.asarray(order, dtype=np.int64)  # first-seen id of each kept word
        return vocab

    def remap(self, n_source: int) -> np.ndarray:
        """int32 table from a corpus's first-seen ids to vocabulary ids (-1: not kept)."""
        table = np.full(n_source, -1, dtype=np.int32)
        table[self.source_ids] = np.arange(len(self), dtype=np.int32)
        return table

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

        return {"words": self.words, "counts": torch.from_numpy(self.counts.copy())}

    @classmethod
    def from_state_dict(cls, state: dict) -> Vocabulary:
        return cls(list(state["words"]), state["counts"].numpy())
