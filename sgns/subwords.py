"""Subword stage (`model=subword`): fastText's character n-grams of every vocabulary word, hashed into buckets.

A word's input vector is the mean of its rows in the input table: its own row (its vocabulary index) and one row
per character n-gram of "<word>" with minn..maxn characters, at n_words + hash(n-gram) % bucket. The hash and the
n-grams are fastText's (src/dictionary.cc, `Dictionary::hash` and `computeSubwords`), so a table trained here is
read by fastText and gensim with the same rows:
- hash: 32-bit FNV-1a over the UTF-8 bytes, each byte sign-extended through int8_t before the xor;
- n-grams: counted in characters (a UTF-8 continuation byte never starts one), in order of start then length,
  repeats kept; a 1-character n-gram that is the leading "<" or trailing ">" is skipped.
`minn=0` or `maxn=0` turns n-grams off (each word has its own row only, plain SGNS with a larger input table).
An out-of-vocabulary word has only its n-gram rows (fastText's `getSubwords` of an unknown word).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence

import numba
import numpy as np

FNV_OFFSET = 2166136261
FNV_PRIME = 16777619
BOW, EOW = "<", ">"


def fasttext_hash(data: bytes) -> int:
    """fastText's `Dictionary::hash`: FNV-1a over bytes, each byte taken as a signed char (int8_t)."""
    h = FNV_OFFSET
    for byte in data:
        h = ((h ^ ((byte - 256 if byte > 127 else byte) & 0xFFFFFFFF)) * FNV_PRIME) & 0xFFFFFFFF
    return h


def ngrams(word: str, minn: int, maxn: int) -> List[bytes]:
    """The character n-grams of "<word>" that fastText hashes, in its order (the reference for `subword_table`)."""
    if minn <= 0 or maxn <= 0:
        return []
    data = (BOW + word + EOW).encode("utf-8")
    grams: List[bytes] = []
    for start in range(len(data)):
        if data[start] & 0xC0 == 0x80:
            continue
        end, n = start, 1
        while end < len(data) and n <= maxn:
            end += 1
            while end < len(data) and data[end] & 0xC0 == 0x80:
                end += 1
            if n >= minn and not (n == 1 and (start == 0 or end == len(data))):
                grams.append(data[start:end])
            n += 1
    return grams


@dataclass
class SubwordTable:
    """Every vocabulary word's input rows, flat: word i's rows are rows[offsets[i]:offsets[i + 1]], its own row i
    first, then n_words + bucket index of each n-gram."""

    offsets: np.ndarray  # int64, n_words + 1
    rows: np.ndarray  # int32 row indices into the input table (n_words + bucket rows)
    n_words: int  # vocabulary size: the output table's rows, and where the n-gram buckets start
    minn: int  # shortest n-gram, in characters
    maxn: int  # longest n-gram, in characters
    bucket: int  # number of hash buckets (input rows beyond the vocabulary)

    @property
    def input_rows(self) -> int:
        """Rows of the input table: one per word and one per bucket."""
        return self.n_words + self.bucket

    def rows_of(self, index: int) -> np.ndarray:
        return self.rows[self.offsets[index]:self.offsets[index + 1]]

    def unknown_word_rows(self, word: str) -> np.ndarray:
        """The rows of a word outside the vocabulary: its n-grams' buckets only (may be empty)."""
        return np.asarray([self.n_words + fasttext_hash(g) % self.bucket for g in ngrams(word, self.minn, self.maxn)],
                          dtype=np.int32)


def subword_table(words: Sequence[str], minn: int, maxn: int, bucket: int) -> SubwordTable:
    """The rows of every word in `words` (the vocabulary, in index order)."""
    n_words = len(words)
    if bucket < 1 or minn <= 0 or maxn <= 0:
        offsets = np.arange(n_words + 1, dtype=np.int64)
        return SubwordTable(offsets, np.arange(n_words, dtype=np.int32), n_words, minn, maxn, max(bucket, 0))
    encoded = [(BOW + w + EOW).encode("utf-8") for w in words]
    starts = np.zeros(n_words + 1, dtype=np.int64)
    np.cumsum([len(e) for e in encoded], out=starts[1:])
    data = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    counts = np.empty(n_words, dtype=np.int64)
    _count_ngrams(data, starts, minn, maxn, counts)
    offsets = np.zeros(n_words + 1, dtype=np.int64)
    np.cumsum(counts + 1, out=offsets[1:])
    rows = np.empty(offsets[-1], dtype=np.int32)
    _fill_rows(data, starts, offsets, minn, maxn, n_words, bucket, rows)
    return SubwordTable(offsets, rows, n_words, minn, maxn, bucket)


@numba.njit(cache=True, nogil=True)
def _walk(data, begin, end, minn, maxn, n_words, bucket, rows, at):  # pragma: no cover - compiled
    """Count (rows is None) or write the n-gram rows of the word data[begin:end] (its "<word>" bytes) from `at`."""
    count = 0
    for start in range(begin, end):
        if data[start] & 0xC0 == 0x80:
            continue
        h = np.int64(FNV_OFFSET)  # 32-bit arithmetic kept in 64 bits and masked (numba widens uint32 products)
        stop, n = start, 1
        while stop < end and n <= maxn:
            h = ((h ^ (np.int64(np.int8(data[stop])) & 0xFFFFFFFF)) * FNV_PRIME) & 0xFFFFFFFF
            stop += 1
            while stop < end and data[stop] & 0xC0 == 0x80:
                h = ((h ^ (np.int64(np.int8(data[stop])) & 0xFFFFFFFF)) * FNV_PRIME) & 0xFFFFFFFF
                stop += 1
            if n >= minn and not (n == 1 and (start == begin or stop == end)):
                if rows is not None:
                    rows[at + count] = n_words + h % bucket
                count += 1
            n += 1
    return count


@numba.njit(cache=True, nogil=True)
def _count_ngrams(data, starts, minn, maxn, counts):  # pragma: no cover - compiled
    for i in range(len(counts)):
        counts[i] = _walk(data, starts[i], starts[i + 1], minn, maxn, 0, 1, None, 0)


@numba.njit(cache=True, nogil=True)
def _fill_rows(data, starts, offsets, minn, maxn, n_words, bucket, rows):  # pragma: no cover - compiled
    for i in range(len(offsets) - 1):
        rows[offsets[i]] = i
        _walk(data, starts[i], starts[i + 1], minn, maxn, n_words, bucket, rows, offsets[i] + 1)
