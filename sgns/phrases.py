"""Phrase stage (word2phrase): cached token ids -> token ids where frequent collocations are one token.

A pass scores every adjacent pair (a, b) inside a sentence with the word2vec C tool's formula

    score(a, b) = (count(ab) - min_count) / (count(a) * count(b)) * total_words

and, reading each sentence left to right, joins a pair whose score exceeds the threshold into the token
`a_b`; a word just joined to its left neighbour cannot also start a phrase with its right one (the C tool's
greedy rule). Words or pairs seen fewer than `min_count` times never join. Each further pass recounts the
joined stream, so two passes can build `new_york_times`.

Everything works on the int32 id stream of an `EncodedCorpus`: pairs are counted by sorting int64 pair
keys, the greedy left-to-right rule is one compiled loop, and the new stream is cached next to the token
ids, keyed by the source cache entry and the phrase settings.

Differences from the C tool, on purpose: pairs never span a sentence (the C tool counts the pair across a
line end, though it never joins it), pairs are counted by id rather than by their joined string, and
scores are computed in float64 (the C tool uses float32).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List

import numba
import numpy as np

from sgns.corpus import EncodedCorpus, _load_encoded
from sgns.errors import SGNSError

PHRASES_FORMAT = 1  # bump when the algorithm or the cache layout changes: old phrase caches are ignored
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
    """Raise SGNSError naming the key when a phrase setting is out of range."""
    if not isinstance(passes, (int, np.integer)) or passes < 0:
        raise SGNSError(f"corpus.phrases={passes!r} is out of range: must be an integer >= 0 (0: off)")
    if not (isinstance(threshold, (int, float)) and 0 <= threshold < float("inf")):
        raise SGNSError(f"corpus.phrase_threshold={threshold!r} is out of range: must be >= 0 and finite "
                        f"(word2phrase's default: 100)")
    if not isinstance(min_count, (int, np.integer)) or min_count < 1:
        raise SGNSError(f"corpus.phrase_min_count={min_count!r} is out of range: must be an integer >= 1")


@numba.njit(cache=True, nogil=True)
def _greedy_joins(candidate: np.ndarray) -> np.ndarray:
    """joined[p]: pair (p, p+1) becomes one token; a pair right after a joined pair is skipped."""
    joined = np.zeros(candidate.shape[0], dtype=np.bool_)
    previous = False
    for p in range(candidate.shape[0]):
        previous = candidate[p] and not previous
        joined[p] = previous
    return joined


def phrase_pass(stream: PhraseStream, threshold: float, min_count: int) -> tuple[PhraseStream, PassReport]:
    """One word2phrase pass over `stream` (see the module docstring for the rule)."""
    ids, offsets, counts = stream.ids, np.asarray(stream.offsets, dtype=np.int64), stream.counts
    n, n_words = int(offsets[-1]), len(stream.words)
    if n < 2:
        return stream, PassReport(0, 0)
    frequent = counts >= min_count
    frequent_at = frequent[ids]
    pair_ok = frequent_at[:-1] & frequent_at[1:]  # pair p is (ids[p], ids[p+1])
    del frequent_at
    inner_starts = offsets[1:-1]
    pair_ok[inner_starts[inner_starts > 0] - 1] = False  # no pair across a sentence end
    positions = np.flatnonzero(pair_ok)
    del pair_ok
    keys = ids[positions].astype(np.int64) * n_words + ids[positions + 1]
    keys.sort()
    # Count each distinct pair from the sorted keys: run starts and lengths.
    starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1]))) if len(keys) else keys[:0]
    pair_keys = keys[starts]
    pair_counts = np.diff(np.append(starts, len(keys)))
    del keys
    a, b = pair_keys // n_words, pair_keys % n_words
    score = (pair_counts - min_count) / (counts[a].astype(np.float64) * counts[b]) * n
    chosen = np.sort(pair_keys[(pair_counts >= min_count) & (score > threshold)])
    if len(chosen) == 0:
        return stream, PassReport(0, 0)

    # Which positions start a chosen pair, then the greedy left-to-right rule.
    position_keys = ids[positions].astype(np.int64) * n_words + ids[positions + 1]
    slot = np.minimum(np.searchsorted(chosen, position_keys), len(chosen) - 1)
    candidate = np.zeros(n - 1, dtype=np.bool_)
    candidate[positions[chosen[slot] == position_keys]] = True
    del position_keys, slot, positions
    joined_at = np.flatnonzero(_greedy_joins(candidate))
    del candidate

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
    new_ids = np.array(ids, dtype=np.int32)
    new_ids[joined_at] = used_ids[which.ravel()]
    keep = np.ones(n, dtype=np.bool_)
    keep[joined_at + 1] = False
    new_ids = new_ids[keep]
    removed_before = np.concatenate(([0], np.cumsum(~keep, dtype=np.int64)))
    new_offsets = offsets - removed_before[offsets]
    new_counts = np.bincount(new_ids, minlength=len(words)).astype(np.int64)
    report = PassReport(int(len(used)), int(len(joined_at)))
    return PhraseStream(new_ids, new_offsets, words, new_counts), report


def phrase_stream(stream: PhraseStream, passes: int, threshold: float, min_count: int,
                  log: Callable[[str], None] = print) -> PhraseStream:
    """`passes` word2phrase passes, each on the output of the one before."""
    check_settings(passes, threshold, min_count)
    for k in range(passes):
        stream, report = phrase_pass(stream, threshold, min_count)
        log(f"phrases: pass {k + 1}/{passes} joined {report.joins:,} pairs into {report.phrase_types:,} "
            f"distinct phrases ({int(stream.offsets[-1]):,} tokens now)")
        if report.joins == 0:
            break
    return stream


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
    if (folder / "meta.json").exists():
        try:
            cached = _load_encoded(folder)
            log(f"phrases: reusing the joined stream cached in {folder}")
            return cached
        except (OSError, ValueError, KeyError):
            shutil.rmtree(folder, ignore_errors=True)  # a damaged cache entry is rebuilt
    stream = PhraseStream(np.asarray(corpus.ids), np.asarray(corpus.offsets, dtype=np.int64),
                          list(corpus.words), np.asarray(corpus.counts, dtype=np.int64))
    stream = phrase_stream(stream, passes, threshold, min_count, log)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".phrases-{key}-", dir=cache_dir))
    except OSError as e:
        raise SGNSError(f"cannot write the phrase cache in {cache_dir}: {e.strerror} "
                        f"(set data.cache_dir=DIR)") from None
    try:
        stream.ids.astype(np.int32, copy=False).tofile(tmp / "ids.bin")
        np.save(tmp / "offsets.npy", stream.offsets)
        np.save(tmp / "counts.npy", stream.counts)
        (tmp / "words.txt").write_text("".join(w + "\n" for w in stream.words), encoding="utf-8")
        meta = {"tokens": int(stream.offsets[-1]), "sentences": len(stream.offsets) - 1,
                "distinct": len(stream.words), "replaced_bytes": corpus.replaced_bytes,
                "source": f"{corpus.path.name} + {passes} phrase passes", "settings": settings}
        (tmp / "meta.json").write_text(json.dumps(meta))
        try:
            os.rename(tmp, folder)  # atomic: a cache entry is complete or absent
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)  # another process finished it first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _load_encoded(folder)
