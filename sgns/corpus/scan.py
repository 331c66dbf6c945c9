"""Compiled tokeniser for large pieces of text: str.split's tokens and first-seen ids in one pass.

The text arrives as an array of code points (uint8 when it is ASCII, uint32 otherwise), already lowercased
and with NUL replaced where the caller wants that. Whitespace is exactly the set str.split uses, lines end at
"\\n". Each token is hashed and looked up in an open-addressing table whose hits are confirmed by comparing
the characters with the word's first occurrence, so the ids are exact (never a hash collision), in first-seen
order, as a Python dict would give them — at a fraction of a dict's cost per token.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Tuple

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


_LOW32 = np.uint64(0xFFFFFFFF)
_HIGH32 = np.uint64(0xFFFFFFFF00000000)
_FNV_OFFSET = np.uint64(14695981039346656037)
_FNV_PRIME = np.uint64(1099511628211)


@numba.njit(cache=True, inline="always")
def _mix(h: np.uint64) -> np.uint64:
    """murmur3's finaliser: FNV-1a's low bits (the table's slot) then depend on every character."""
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return h


@numba.njit(cache=True, nogil=True)
def _place(slots: np.ndarray, h: np.uint64, entry: np.uint64, where: int) -> None:
    """Put (`entry`, `where`) in the first free slot from h's (linear probing)."""
    mask = len(slots) // 2 - 1
    slot = np.int64(h & np.uint64(mask))
    while slots[2 * slot] != 0:
        slot = (slot + 1) & mask
    slots[2 * slot] = entry
    slots[2 * slot + 1] = where


# A table slot is two uint64: the hash's high 32 bits | (id + 1) (0 when free), and where the word's characters
# are (its first occurrence in the piece; its bytes in the parent's store). A lookup's cache misses are then the
# slot and those characters, one after the other, and nothing else; the table is at most 2/3 full.


@numba.njit(cache=True, nogil=True)
def _scan(text: np.ndarray, low: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    n = len(text)
    ids = np.empty(n // 2 + 1, dtype=np.int32)  # at most one token per two characters
    lines = np.empty(16, dtype=np.int64)
    span = np.empty(2048, dtype=np.int64)  # start and length of each distinct word's first occurrence
    hashes = np.empty(1024, dtype=np.uint64)
    bits = 10
    while (1 << bits) < n // 8:  # ~the distinct words of a piece of natural or Zipf text: few rebuilds
        bits += 1
    slots = np.zeros(2 << bits, dtype=np.uint64)
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
        h = _FNV_OFFSET  # FNV-1a over the code points
        while i < n and not _is_space(text[i], low):
            h = (h ^ np.uint64(text[i])) * _FNV_PRIME
            i += 1
        h = _mix(h)
        tag = h & _HIGH32
        size = i - start
        mask = (1 << bits) - 1
        slot = np.int64(h & np.uint64(mask))
        while True:
            entry = slots[2 * slot]
            if entry == 0:  # new word: first sight
                if n_words == len(hashes):
                    hashes = np.concatenate((hashes, np.empty(len(hashes), dtype=np.uint64)))
                    span = np.concatenate((span, np.empty(len(span), dtype=np.int64)))
                word = n_words
                span[2 * word] = start
                span[2 * word + 1] = size
                hashes[word] = h
                slots[2 * slot] = tag | np.uint64(word + 1)
                slots[2 * slot + 1] = start
                n_words += 1
                if 3 * n_words > 2 << bits:  # keep the table at most 2/3 full
                    bits += 1
                    slots = np.zeros(2 << bits, dtype=np.uint64)
                    for w in range(n_words):
                        _place(slots, hashes[w], (hashes[w] & _HIGH32) | np.uint64(w + 1), span[2 * w])
                break
            if entry & _HIGH32 == tag:
                # The first occurrence is a whole token: equal when its first `size` characters are and the
                # next one is whitespace (or the end), no length to look up.
                other = np.int64(slots[2 * slot + 1])
                if other + size <= n:
                    same = other + size == n or _is_space(text[other + size], low)
                    k = 0
                    while same and k < size:
                        same = text[other + k] == text[start + k]
                        k += 1
                    if same:
                        word = np.int64(entry & _LOW32) - 1
                        break
            slot = (slot + 1) & mask
        ids[n_tokens] = word
        n_tokens += 1
        line_tokens += 1
    if n_lines == len(lines):
        lines = np.concatenate((lines, np.empty(1, dtype=np.int64)))
    lines[n_lines] = line_tokens  # the last segment (continues into the next piece)
    return ids[:n_tokens], lines[: n_lines + 1], span[: 2 * n_words], n_words


def code_points(text: str) -> np.ndarray:
    """The text as uint8 (ASCII) or uint32 code points, as the scanner reads it."""
    if text.isascii():
        return np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def scan(text: str) -> Tuple[list, np.ndarray, np.ndarray]:
    """(distinct words in first-seen order, int32 id of every token, int64 tokens per "\\n"-separated segment)."""
    ids, lines, span, _ = _scan(code_points(text), _SPACES_BELOW_256)
    starts = span[0::2].tolist()
    words = [text[s : s + n] for s, n in zip(starts, span[1::2].tolist(), strict=True)]
    return words, ids, lines


def scan_utf8(points: np.ndarray, spaces: np.ndarray = _SPACES_BELOW_256) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`scan` over code points (uint8 or uint32), the distinct words as ONE UTF-8 buffer, each word followed by
    "\\n" (no Python string per word: a piece sends the parent a few arrays). `spaces`: the whitespace flags
    of code points below 256 (NUL_IS_SPACE makes NUL whitespace too)."""
    ids, lines, span, _ = _scan(points, spaces)
    return _utf8_lines(points, span), ids, lines


NUL_IS_SPACE = _SPACES_BELOW_256.copy()
NUL_IS_SPACE[0] = True


@numba.njit(cache=True, nogil=True)
def _utf8_lines(text: np.ndarray, span: np.ndarray) -> np.ndarray:
    """The words text[span[2w]:span[2w] + span[2w + 1]], UTF-8 encoded, each followed by "\\n"."""
    size = 0
    for w in range(len(span) // 2):
        size += 1
        for k in range(span[2 * w], span[2 * w] + span[2 * w + 1]):
            c = text[k]
            size += 1 if c < 0x80 else (2 if c < 0x800 else (3 if c < 0x10000 else 4))
    out = np.empty(size, dtype=np.uint8)
    p = 0
    for w in range(len(span) // 2):
        for k in range(span[2 * w], span[2 * w] + span[2 * w + 1]):
            c = np.uint32(text[k])
            if c < 0x80:
                out[p] = c
                p += 1
            elif c < 0x800:
                out[p] = 0xC0 | (c >> 6)
                out[p + 1] = 0x80 | (c & 0x3F)
                p += 2
            elif c < 0x10000:
                out[p] = 0xE0 | (c >> 12)
                out[p + 1] = 0x80 | ((c >> 6) & 0x3F)
                out[p + 2] = 0x80 | (c & 0x3F)
                p += 3
            else:
                out[p] = 0xF0 | (c >> 18)
                out[p + 1] = 0x80 | ((c >> 12) & 0x3F)
                out[p + 2] = 0x80 | ((c >> 6) & 0x3F)
                out[p + 3] = 0x80 | (c & 0x3F)
                p += 4
        out[p] = 10
        p += 1
    return out


# ------------------------------------------------------------------------------ the corpus-wide word table
# The parent numbers every piece's distinct words with one compiled call per piece: an open-addressing table of
# 64-bit hashes of the words' UTF-8 bytes whose hits are confirmed by comparing the bytes with the stored word,
# so two words never share an id. The words themselves stay in one growing UTF-8 buffer ("\n" after each,
# i.e. the cache's words.txt); Python strings are made only when the word list is read back.


_AHEAD = 16  # words looked ahead: their slot, then their stored span and bytes, are loaded early


@numba.njit(cache=True, nogil=True)
def _number_words(utf8: np.ndarray, local: np.ndarray, slots: np.ndarray, hashes: np.ndarray, ends: np.ndarray,
                  store: np.ndarray, n_ids: int, used: int) -> Tuple[int, int, int]:
    """Corpus ids of the words in `utf8` (each ended by "\\n") into `local`; new words get the next ids, in
    order, and are appended to `store`. The caller made room for every word being new. Returns (ids, used, x).

    A piece's words are mostly rare ones, each lookup a cache miss on the table, then on the word's span, then
    on its bytes; touching those of the words `_AHEAD` places on (plain loads whose values go nowhere but `x`)
    lets the misses of many words overlap instead of queueing one after the other."""
    k = len(local)
    mask = len(slots) // 2 - 1
    piece_hashes = np.empty(k, dtype=np.uint64)
    piece_ends = np.empty(k + 1, dtype=np.int64)
    piece_ends[0] = 0
    _hash_lines(utf8, piece_hashes, piece_ends)
    touched = np.uint64(0)
    for w in range(k):
        if w + _AHEAD < k:
            touched += slots[2 * np.int64(piece_hashes[w + _AHEAD] & np.uint64(mask))]
        if w + _AHEAD // 2 < k:
            h = piece_hashes[w + _AHEAD // 2]
            ahead = 2 * np.int64(h & np.uint64(mask))
            if slots[ahead] & _HIGH32 == h & _HIGH32:
                touched += np.uint64(store[slots[ahead + 1]])
        h = piece_hashes[w]
        tag = h & _HIGH32
        start = piece_ends[w]
        size = piece_ends[w + 1] - start  # with its "\n"
        slot = np.int64(h & np.uint64(mask))
        while True:
            entry = slots[2 * slot]
            if entry == 0:  # first sight in the corpus
                word = n_ids
                slots[2 * slot] = tag | np.uint64(word + 1)
                slots[2 * slot + 1] = used
                hashes[word] = h
                store[used : used + size] = utf8[start : start + size]
                used += size
                ends[word + 1] = used
                n_ids += 1
                break
            if entry & _HIGH32 == tag:
                # Both words end with "\n", which no word holds: equal bytes up to it are equal words (a stored
                # word of another length differs at its own "\n" or at ours, before its end).
                other = np.int64(slots[2 * slot + 1])
                same = True
                for i in range(size):
                    if store[other + i] != utf8[start + i]:
                        same = False
                        break
                if same:
                    word = np.int64(entry & _LOW32) - 1
                    break
            slot = (slot + 1) & mask
        local[w] = word
    return n_ids, used, touched


@numba.njit(cache=True, nogil=True)
def _hash_lines(utf8: np.ndarray, hashes: np.ndarray, ends: np.ndarray) -> None:
    """Hash and end of every word of `utf8` (each ended by "\\n"), as `_number_words` computes them."""
    w = 0
    h = _FNV_OFFSET
    for p in range(len(utf8)):
        if utf8[p] == 10:
            hashes[w] = _mix(h)
            ends[w + 1] = p + 1
            w += 1
            h = _FNV_OFFSET
        else:
            h = (h ^ np.uint64(utf8[p])) * _FNV_PRIME


@numba.njit(cache=True, nogil=True)
def _fill_table(slots: np.ndarray, hashes: np.ndarray, ends: np.ndarray, alive: np.ndarray, n_ids: int) -> None:
    """Insert every live id 0..n_ids-1 (by its stored hash) into an empty table."""
    for word in range(n_ids):
        if alive[word]:
            _place(slots, hashes[word], (hashes[word] & _HIGH32) | np.uint64(word + 1), ends[word])


@numba.njit(cache=True, nogil=True)
def corpus_ids(local_ids: np.ndarray, table: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """table[local_ids] (a piece's tokens as corpus ids), counting each token into `counts` on the way."""
    out = np.empty(len(local_ids), dtype=np.int32)
    for t in range(len(local_ids)):
        word = table[local_ids[t]]
        out[t] = word
        counts[word] += 1
    return out


def _grown(a: np.ndarray, need: int) -> np.ndarray:
    if need <= len(a):
        return a
    out = np.empty(max(need, 2 * len(a)), dtype=a.dtype)
    out[: len(a)] = a
    return out


class WordTable:
    """word (UTF-8 bytes) -> corpus id in first-seen order; ids of forgotten words are never reused."""

    def __init__(self) -> None:
        self.ids = 0  # ids handed out
        self.live = 0  # ids in the table (ids minus forgotten ones)
        self.slots = np.zeros(2 << 16, dtype=np.uint64)  # 2 words a slot
        self.hashes = np.empty(1 << 12, dtype=np.uint64)  # of each id
        self.ends = np.zeros((1 << 12) + 1, dtype=np.int64)  # id i's bytes (with its "\n"): ends[i]:ends[i + 1]
        self.store = np.empty(1 << 20, dtype=np.uint8)
        self.used = 0
        self.alive: np.ndarray | None = None  # set once a word was forgotten

    def add(self, utf8: np.ndarray) -> np.ndarray:
        """int32 corpus ids of the words in `utf8` (each followed by "\\n"), numbering the new ones."""
        k = int(np.count_nonzero(utf8 == 10))
        local = np.empty(k, dtype=np.int32)
        if not k:
            return local
        self.hashes = _grown(self.hashes, self.ids + k)
        self.ends = _grown(self.ends, self.ids + k + 1)
        self.store = _grown(self.store, self.used + len(utf8))
        if self.alive is not None:
            self.alive = _grown(self.alive, self.ids + k)
            self.alive[self.ids : self.ids + k] = True
        if 3 * (self.live + k) > len(self.slots):  # at most 2/3 full
            self._rebuild(1 << (3 * (self.live + k) // 2).bit_length())
        before = self.ids
        self.ids, self.used, _ = _number_words(utf8, local, self.slots, self.hashes, self.ends, self.store,
                                               self.ids, self.used)
        self.live += self.ids - before
        return local

    def preload(self, words: List[str]) -> None:
        """Start from a word list by id ("" for a forgotten id) numbered elsewhere (`cache._Merger`'s dict)."""
        utf8 = np.frombuffer("".join(w + "\n" for w in words).encode("utf-8"), dtype=np.uint8)
        n = len(words)
        self.hashes, self.ends, self.store = (np.empty(max(n, 1 << 12), dtype=np.uint64),
                                              np.zeros(max(n, 1 << 12) + 1, dtype=np.int64), utf8.copy())
        _hash_lines(utf8, self.hashes, self.ends)
        self.ids, self.used = n, len(utf8)
        alive = np.fromiter(map(bool, words), dtype=np.bool_, count=n)
        self.live = int(np.count_nonzero(alive))
        self.alive = None if self.live == n else _grown(alive, len(self.hashes))
        self._rebuild(max(1 << 16, 1 << (3 * self.live // 2).bit_length()))

    def _rebuild(self, size: int) -> None:
        self.slots = np.zeros(2 * size, dtype=np.uint64)
        alive = self.alive if self.alive is not None else np.ones(self.ids, dtype=np.bool_)
        _fill_table(self.slots, self.hashes, self.ends, alive, self.ids)

    def forget(self, dead: np.ndarray) -> None:
        """Drop the ids flagged in `dead` (bool over the ids handed out) from the table."""
        if self.alive is None:
            self.alive = np.ones(len(self.hashes), dtype=np.bool_)
        self.alive[: self.ids] &= ~dead
        self.live = int(np.count_nonzero(self.alive[: self.ids]))
        self._rebuild(len(self.slots) // 2)

    def words_utf8(self) -> bytes:
        """Every id's word followed by "\\n", an empty line for a forgotten id: the cache's words.txt."""
        store = self.store[: self.used]
        if self.alive is None or self.alive[: self.ids].all():
            return store.tobytes()
        lengths = np.diff(self.ends[: self.ids + 1])
        keep = np.repeat(self.alive[: self.ids], lengths)
        keep[self.ends[1 : self.ids + 1] - 1] = True  # every id's "\n"
        return store[keep].tobytes()


_COMPILED = (_scan, _utf8_lines, _number_words, _hash_lines, _fill_table, corpus_ids)  # what a read may call
_ready = [False]  # this process has them compiled or loaded


def is_cached() -> bool:
    """Whether the scanner needs no compile: in this process already, or every part of it in numba's cache."""
    if not _ready[0]:
        from sgns.compiling import has_cached_code

        _ready[0] = all(has_cached_code(f) for f in _COMPILED)
    return _ready[0]


def prepare(say: Optional[Callable[[str], None]] = None) -> None:
    """Compile (announced by `say`, default the "sgns" log) or load every part of the scanner now, with the
    argument types a read gives them: forked reading workers then inherit it instead of compiling each their own."""
    if not is_cached():
        from sgns.compiling import announce_compile

        announce_compile("the tokeniser", _COMPILED, "5-10 s", say)
    scan("warm up")
    points = code_points("warm up\n")
    scan_utf8(points)
    scan_utf8(code_points("w\u00e4rm\n"))
    table = WordTable()
    local = table.add(_utf8_lines(points, _scan(points, _SPACES_BELOW_256)[2]))
    table.forget(np.zeros(table.ids, dtype=np.bool_))
    table.preload(["warm"])
    corpus_ids(local, local.copy(), np.zeros(len(local), dtype=np.int64))
    _ready[0] = True
