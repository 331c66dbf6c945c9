"""Compiled tokeniser for large pieces of text: str.split's tokens and first-seen ids in one pass.

The text arrives as an array of code points (uint8 when it is ASCII, uint32 otherwise), already lowercased
and with NUL replaced where the caller wants that. Whitespace is exactly the set str.split uses, lines end at
"\\n". Each token is hashed and looked up in an open-addressing table whose hits are confirmed by comparing
the characters with the word's first occurrence, so the ids are exact (never a hash collision), in first-seen
order, as a Python dict would give them — at a fraction of a dict's cost per token.
"""

from __future__ import annotations

from typing import Tuple

import numba
import numpy as np

_SPACES_BELOW_256 = np.zeros(256, dtype=np.bool_)
for _c in (9, 10, 11, 12, 13, 28, 29, 30, 31, 32, 0x85, 0xA0):  # str.isspace() below U+0100
    _SPACES_BELOW_256[_c] = True


@numba.njit(cache=True, inline="always")
def _is_space(c: int, low: np.ndarray) -> bool:
    if c < 256:
        return low[c]
    return (c == 0x1680 or 0x2000 <= c <= 0x200A or c == 0x2028 or c == 0x2029 or c == 0x202F or c == 0x205F
            or c == 0x3000)


@numba.njit(cache=True, nogil=True)
def _scan(text: np.ndarray, low: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    n = len(text)
    ids = np.empty(n // 2 + 1, dtype=np.int32)  # at most one token per two characters
    lines = np.empty(16, dtype=np.int64)
    first = np.empty(1024, dtype=np.int64)  # start of each distinct word's first occurrence
    length = np.empty(1024, dtype=np.int64)
    bits = 16
    keys = np.zeros(1 << bits, dtype=np.uint64)
    slots = np.full(1 << bits, -1, dtype=np.int32)
    n_tokens = n_lines = n_words = line_tokens = 0
    i = 0
    while True:
        while i < n and _is_space(text[i], low):  # whitespace; each newline ends a line
            if text[i] == 10:
                if n_lines == len(lines):
                    lines = np.concatenate((lines, np.empty(len(lines), dtype=np.int64)))
                lines[n_lines] = line_tokens
                n_lines += 1
                line_tokens = 0
            i += 1
        if i >= n:
            break
        start = i
        h = np.uint64(14695981039346656037)  # FNV-1a over the code points
        while i < n and not _is_space(text[i], low):
            h = (h ^ np.uint64(text[i])) * np.uint64(1099511628211)
            i += 1
        size = i - start
        mask = (1 << bits) - 1
        slot = np.int64(h & np.uint64(mask))
        while True:
            word = slots[slot]
            if word < 0:  # new word: first sight
                if n_words == len(first):
                    first = np.concatenate((first, np.empty(len(first), dtype=np.int64)))
                    length = np.concatenate((length, np.empty(len(length), dtype=np.int64)))
                first[n_words] = start
                length[n_words] = size
                keys[slot] = h
                slots[slot] = n_words
                word = n_words
                n_words += 1
                if 2 * n_words > (1 << bits):  # keep the table at most half full
                    bits += 1
                    mask = (1 << bits) - 1
                    new_keys = np.zeros(1 << bits, dtype=np.uint64)
                    new_slots = np.full(1 << bits, -1, dtype=np.int32)
                    for s in range(len(slots)):
                        if slots[s] >= 0:
                            t = np.int64(keys[s] & np.uint64(mask))
                            while new_slots[t] >= 0:
                                t = (t + 1) & mask
                            new_keys[t] = keys[s]
                            new_slots[t] = slots[s]
                    keys, slots = new_keys, new_slots
                break
            if keys[slot] == h and length[word] == size:
                same = True
                other = first[word]
                for k in range(size):
                    if text[other + k] != text[start + k]:
                        same = False
                        break
                if same:
                    break
            slot = (slot + 1) & mask
        ids[n_tokens] = word
        n_tokens += 1
        line_tokens += 1
    if n_lines == len(lines):
        lines = np.concatenate((lines, np.empty(1, dtype=np.int64)))
    lines[n_lines] = line_tokens  # the last segment (continues into the next piece)
    return ids[:n_tokens], lines[: n_lines + 1], first[:n_words], length[:n_words], n_words


def scan(text: str) -> Tuple[list, np.ndarray, np.ndarray]:
    """(distinct words in first-seen order, int32 id of every token, int64 tokens per "\\n"-separated segment)."""
    if text.isascii():
        points = np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    else:
        points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    ids, lines, first, length, _ = _scan(points, _SPACES_BELOW_256)
    words = [text[s : s + n] for s, n in zip(first.tolist(), length.tolist(), strict=True)]
    return words, ids, lines
