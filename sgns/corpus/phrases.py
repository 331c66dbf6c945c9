"""Phrase stage (word2phrase): cached token ids -> token ids where frequent collocations are one token.

A pass scores every adjacent pair (a, b) inside a sentence with the word2vec C tool's formula

    score(a, b) = (count(ab) - min_count) / (count(a) * count(b)) * total_words

and, reading each sentence left to right, joins a pair whose score exceeds the threshold into the token
`a_b`; a word just joined to its left neighbour cannot also start a phrase with its right one (the C tool's
greedy rule). Words or pairs seen fewer than `min_count` times never join. Each further pass recounts the
joined stream, so two passes can build `new_york_times`.

Everything works on the int32 id stream of an `EncodedCorpus` in two compiled loops: one counts the pairs
of frequent words in a hash table (memory grows with distinct pairs, not with the corpus), one applies the
greedy left-to-right rule; the new stream is assembled with numpy and cached next to the token ids, keyed
by the source cache entry and the phrase settings.

Differences from the C tool, on purpose: pairs never span a sentence (the C tool counts the pair across a
line end, though it never joins it), pairs are counted by id rather than by their joined string, and
scores are computed in float64 (the C tool uses float32).
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List

import numba
import numpy as np

from sgns.config import check_value
from sgns.corpus.cache import (
    EncodedCorpus,
    _load_encoded,
    load_cached,
    make_temporary,
    publish_cache_entry,
    remove_dead_temporaries,
)
from sgns.errors import SGNSError

PHRASES_FORMAT = 2  # bump when the algorithm or the cache layout changes: old phrase caches are ignored
DELIMITER = "_"


@dataclass
class PhraseStream:
    """One pass's input or output: the id stream and its word table (ids index `words` and `counts`)."""

    ids: np.ndarray  # int32, every token
    offsets: np.ndarray  # int64 sentence starts, plus the total at the end
    words: List[str]
    counts: np.ndarray  # int64 occurrences of each id in `ids`


@dataclass
class PassReport:
    phrase_types: int  # distinct phrases joined at least once
    joins: int  # phrase tokens written (each replaced two tokens)


def check_settings(passes: int, threshold: float, min_count: int) -> None:
    """Raise SGNSError naming the key when a phrase setting is out of range (the ranges of sgns/config.py)."""
    for key, value in (("corpus.phrases", passes), ("corpus.phrase_threshold", threshold),
                       ("corpus.phrase_min_count", min_count)):
        check_value(key, value)


_EMPTY = -1  # an unused hash-table slot (pair keys are >= 0)


@numba.njit(cache=True, nogil=True)
def _slot(key: int, bits: int) -> int:
    # Fibonacci hashing: the top `bits` bits of key * 2**64/phi spread consecutive ids over the table.
    return np.int64((np.uint64(key) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(64 - bits))


@numba.njit(cache=True, nogil=True)
def _find(keys: np.ndarray, key: int, bits: int) -> int:
    """The slot holding `key`, or the empty slot where it would go (linear probing)."""
    mask = (1 << bits) - 1
    h = _slot(key, bits)
    while keys[h] != _EMPTY and keys[h] != key:
        h = (h + 1) & mask
    return h


@numba.njit(cache=True, nogil=True)
def _count_pairs(ids: np.ndarray, offsets: np.ndarray, frequent: np.ndarray,
                 n_words: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Hash table (keys, counts, log2 size) of every in-sentence pair of frequent words, key a*n_words+b."""
    bits = 16
    keys = np.full(1 << bits, _EMPTY, dtype=np.int64)
    counts = np.zeros(1 << bits, dtype=np.int64)
    used = 0
    for s in range(offsets.shape[0] - 1):
        for p in range(offsets[s], offsets[s + 1] - 1):
            a, b = ids[p], ids[p + 1]
            if not (frequent[a] and frequent[b]):
                continue
            key = np.int64(a) * n_words + b
            h = _find(keys, key, bits)
            if keys[h] == _EMPTY:
                keys[h] = key
                used += 1
                if 2 * used > keys.shape[0]:  # keep the table at most half full: double it
                    old_keys, old_counts = keys, counts
                    bits += 1
                    keys = np.full(1 << bits, _EMPTY, dtype=np.int64)
                    counts = np.zeros(1 << bits, dtype=np.int64)
                    for i in range(old_keys.shape[0]):
                        if old_keys[i] != _EMPTY:
                            g = _find(keys, old_keys[i], bits)
                            keys[g], counts[g] = old_keys[i], old_counts[i]
                    h = _find(keys, key, bits)
            counts[h] += 1
    return keys, counts, bits


@numba.njit(cache=True, nogil=True)
def _greedy_joins(ids: np.ndarray, offsets: np.ndarray, frequent: np.ndarray, n_words: int,
                  keys: np.ndarray, chosen: np.ndarray, bits: int) -> np.ndarray:
    """Positions p where (ids[p], ids[p+1]) becomes one token, left to right: a word just joined to its
    left neighbour does not start another phrase."""
    joined = np.empty(ids.shape[0] // 2 + 1, dtype=np.int64)
    n_joined = 0
    for s in range(offsets.shape[0] - 1):
        p = offsets[s]
        while p < offsets[s + 1] - 1:
            a, b = ids[p], ids[p + 1]
            if frequent[a] and frequent[b] and chosen[_find(keys, np.int64(a) * n_words + b, bits)]:
                joined[n_joined] = p
                n_joined += 1
                p += 2
            else:
                p += 1
    return joined[:n_joined].copy()


def phrase_pass(stream: PhraseStream, threshold: float, min_count: int) -> tuple[PhraseStream, PassReport]:
    """One word2phrase pass over `stream` (see the module docstring for the rule)."""
    ids, offsets, counts = np.asarray(stream.ids), np.asarray(stream.offsets, dtype=np.int64), stream.counts
    n, n_words = int(offsets[-1]), len(stream.words)
    if n < 2:
        return stream, PassReport(0, 0)
    frequent = counts >= min_count
    keys, pair_counts, bits = _count_pairs(ids, offsets, frequent, n_words)
    occupied = keys != _EMPTY
    a, b = keys // n_words, keys % n_words
    with np.errstate(divide="ignore", invalid="ignore"):  # empty slots: a, b = -1 (ignored below)
        score = (pair_counts - min_count) / (counts[a].astype(np.float64) * counts[b]) * n
    chosen = occupied & (pair_counts >= min_count) & (score > threshold)
    del a, b, score, occupied
    if not chosen.any():
        return stream, PassReport(0, 0)
    joined_at = _greedy_joins(ids, offsets, frequent, n_words, keys, chosen, bits)
    del keys, pair_counts, chosen

    # New ids: a phrase string already in the table (an earlier pass, or the text itself) keeps its id.
    joined_keys = ids[joined_at].astype(np.int64) * n_words + ids[joined_at + 1]
    used, which = np.unique(joined_keys, return_inverse=True)
    words = list(stream.words)
    index: Dict[str, int] = {w: i for i, w in enumerate(words)}
    used_ids = np.empty(len(used), dtype=np.int64)
    for k, (left, right) in enumerate(zip((used // n_words).tolist(), (used % n_words).tolist(), strict=True)):
        phrase = words[left] + DELIMITER + words[right]
        if phrase not in index:
            index[phrase] = len(words)
            words.append(phrase)
        used_ids[k] = index[phrase]
    keep = np.ones(n, dtype=np.bool_)
    keep[joined_at + 1] = False
    new_ids = np.array(ids, dtype=np.int32)
    new_ids[joined_at] = used_ids[which.ravel()]
    new_ids = new_ids[keep]
    removed_before = np.concatenate(([0], np.cumsum(~keep, dtype=np.int64)))
    new_offsets = offsets - removed_before[offsets]
    new_counts = np.bincount(new_ids, minlength=len(words)).astype(np.int64)
    return PhraseStream(new_ids, new_offsets, words, new_counts), PassReport(int(len(used)), int(len(joined_at)))


@numba.njit(cache=True, nogil=True)
def _first_seen_ids(ids: np.ndarray, n_words: int) -> np.ndarray:
    """New id of every old id: first-seen order in `ids`, then the ids that never occur, in their old order."""
    new = np.full(n_words, -1, dtype=np.int64)
    seen = 0
    for p in range(ids.shape[0]):
        if new[ids[p]] < 0:
            new[ids[p]] = seen
            seen += 1
    for w in range(n_words):
        if new[w] < 0:
            new[w] = seen
            seen += 1
    return new


def in_first_seen_order(stream: PhraseStream) -> PhraseStream:
    """The stream with its ids renumbered in first-seen order, as the corpus reader numbers words: a phrase then
    ranks where it is first joined, and a word first seen inside one where it first stands alone, as in the text
    that gensim would read (the vocabulary breaks ties by this order)."""
    new = _first_seen_ids(np.asarray(stream.ids), len(stream.words))
    order = np.argsort(new)
    ids = new.astype(np.int32)[stream.ids]
    return PhraseStream(ids, stream.offsets, [stream.words[i] for i in order.tolist()], stream.counts[order])


def phrase_stream(stream: PhraseStream, passes: int, threshold: float, min_count: int,
                  log: Callable[[str], None] = print) -> PhraseStream:
    """`passes` word2phrase passes, each on the output of the one before; ids in first-seen order."""
    check_settings(passes, threshold, min_count)
    joined = False
    for k in range(passes):
        stream, report = phrase_pass(stream, threshold, min_count)
        log(f"phrases: pass {k + 1}/{passes} joined {report.joins:,} pairs into {report.phrase_types:,} "
            f"distinct phrases ({int(stream.offsets[-1]):,} tokens now)")
        joined = joined or report.joins > 0
        if report.joins == 0:
            break
    return in_first_seen_order(stream) if joined else stream


def apply_phrases(corpus: EncodedCorpus, passes: int, threshold: float, min_count: int,
                  cache_dir: str | Path, log: Callable[[str], None] = print) -> EncodedCorpus:
    """The corpus with phrases joined (cached beside its token ids), or `corpus` itself when passes == 0."""
    check_settings(passes, threshold, min_count)
    if passes == 0:
        return corpus
    settings = f"{PHRASES_FORMAT}:{corpus.path.name}:{passes}:{float(threshold)!r}:{min_count}"
    key = hashlib.blake2b(settings.encode(), digest_size=12).hexdigest()
    cache_dir = Path(cache_dir).expanduser()
    folder = cache_dir / f"phrases-{key}"
    cached = load_cached(folder, log)
    if cached is not None:
        log(f"phrases: reusing the joined stream cached in {folder}")
        return cached
    stream = PhraseStream(np.asarray(corpus.ids), np.asarray(corpus.offsets, dtype=np.int64),
                          list(corpus.words), np.asarray(corpus.counts, dtype=np.int64))
    from sgns.compiling import announce_compile, has_cached_code

    compiled = (_count_pairs, _greedy_joins, _first_seen_ids)
    if not all(has_cached_code(f) for f in compiled):
        announce_compile("word2phrase (corpus.phrases)", compiled, "5-10 s", log)
    stream = phrase_stream(stream, passes, threshold, min_count, log)
    try:
        remove_dead_temporaries(cache_dir, log)
        tmp, owner = make_temporary(cache_dir, f".phrases-{key}-")
    except OSError as e:
        raise SGNSError(f"cannot write the phrase cache in {cache_dir}: {e.strerror} "
                        f"(set data.cache_dir=DIR)") from None
    with owner:
        try:
            stream.ids.astype(np.int32, copy=False).tofile(tmp / "ids.bin")
            publish_cache_entry(tmp, folder, stream.offsets, stream.counts, stream.words,
                                {"tokens": int(stream.offsets[-1]), "sentences": len(stream.offsets) - 1,
                                 "distinct": len(stream.words), "replaced_bytes": corpus.replaced_bytes,
                                 "source": f"{corpus.path.name} + {passes} phrase passes", "settings": settings})
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return _load_encoded(folder)
