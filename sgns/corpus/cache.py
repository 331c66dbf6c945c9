"""The token cache: a source's pieces merged in order into an `EncodedCorpus` on disk (every token as an int32 id
in first-seen order, sentence start offsets, the distinct words and their counts), keyed by the source's content
and tokenisation settings, so a sweep re-reads nothing and a changed file never reuses stale ids."""

from __future__ import annotations

import array
import hashlib
import itertools
import json
import os
import shutil
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, List, Optional

import numpy as np

from sgns.corpus.reading import Piece, resolve_workers
from sgns.corpus.sources import CorpusSource
from sgns.errors import SGNSError

CACHE_FORMAT = 2  # bump when the reader or the cache layout changes: old caches are then ignored


@dataclass
class EncodedCorpus:
    """A corpus as token ids in first-seen order (not vocabulary order): see `Vocabulary.remap`."""

    ids: np.ndarray  # int32 memmap, every token
    offsets: np.ndarray  # int64 sentence start positions, plus the total at the end
    words: List[str]  # distinct words, indexed by id
    counts: np.ndarray  # int64 count of each word
    replaced_bytes: int  # undecodable bytes replaced while reading
    path: Path

    @property
    def total_tokens(self) -> int:
        return int(self.offsets[-1])


def _load_encoded(folder: Path) -> EncodedCorpus:
    meta = json.loads((folder / "meta.json").read_text())
    tokens = meta["tokens"]
    ids = (np.memmap(folder / "ids.bin", dtype=np.int32, mode="r", shape=(tokens,)) if tokens
           else np.zeros(0, dtype=np.int32))
    words = (folder / "words.txt").read_text(encoding="utf-8").split("\n")[:-1]
    return EncodedCorpus(ids, np.load(folder / "offsets.npy"), words, np.load(folder / "counts.npy"),
                         meta["replaced_bytes"], folder)


def load_cached(folder: Path) -> Optional[EncodedCorpus]:
    """The encoded corpus cached in `folder`, or None when there is none; a damaged entry is removed (rebuilt)."""
    if not (folder / "meta.json").exists():
        return None
    try:
        return _load_encoded(folder)
    except (OSError, ValueError, KeyError):
        shutil.rmtree(folder, ignore_errors=True)
        return None


def publish_cache_entry(tmp: Path, folder: Path, offsets: np.ndarray, counts: np.ndarray,
                        words: Iterable[str] | bytes, meta: dict) -> None:
    """Write the rest of a cache entry beside `tmp`/ids.bin (sentence offsets, word counts, words (or their
    words.txt bytes: UTF-8, "\n" after each), meta.json), then rename `tmp` to `folder`: atomic, so an entry is
    complete or absent."""
    np.save(tmp / "offsets.npy", offsets)
    np.save(tmp / "counts.npy", counts)
    if isinstance(words, bytes):
        (tmp / "words.txt").write_bytes(words)
    else:
        (tmp / "words.txt").write_text("".join(w + "\n" for w in words), encoding="utf-8")
    (tmp / "meta.json").write_text(json.dumps(meta))
    try:
        os.rename(tmp, folder)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # another process finished it first


class _Merger:
    """Joins pieces in order: local ids -> corpus ids (first-seen order over the whole corpus), ids appended to
    the cache file, counts summed, line lengths joined across piece boundaries.

    Words are numbered by a dict while every piece comes as strings (small corpora: numba is not loaded), and by
    the compiled `scan.WordTable` from the first piece that comes as UTF-8 (the compiled scanner's): no
    Python work per word, which is what bounded the parent at millions of distinct words."""

    def __init__(self, out: BinaryIO, max_distinct: Optional[int] = None):
        self.out = out
        self.index: defaultdict[str, int] = defaultdict(itertools.count().__next__)  # word -> id on first sight
        self.table: Any = None  # scan.WordTable, in place of `index` once a piece came as UTF-8
        self.ids = 0  # ids handed out (more than len(index) once words were pruned)
        self.counts = np.zeros(1 << 16, dtype=np.int64)
        self.max_distinct, self.min_reduce, self.pruned = max_distinct, 1, 0
        self.lines = array.array("q")  # tokens of every finished line, 8 bytes a line
        self.open_line = 0  # tokens of the line the last piece ended inside
        self.tokens = self.replaced = 0

    def add(self, piece: Piece) -> None:
        # New words get ids in the piece's first-seen order, after every earlier piece's: first-seen order.
        if piece.utf8 is not None and self.table is None:
            from sgns.corpus.scan import WordTable

            table = WordTable()
            table.preload(list(self.words()))  # the words numbered so far by the dict
            self.table = table
            self.index.clear()
        if self.table is not None:
            utf8 = piece.utf8
            if utf8 is None:
                utf8 = np.frombuffer("".join(w + "\n" for w in piece.words).encode("utf-8"), dtype=np.uint8)
            table = self.table.add(utf8)
            self.ids = self.table.ids
        else:
            table = np.fromiter(map(self.index.__getitem__, piece.words), dtype=np.int32, count=len(piece.words))
            self.ids = max(self.ids, int(table.max()) + 1) if len(table) else self.ids
        if self.ids > len(self.counts):
            self.counts = np.pad(self.counts, (0, max(self.ids, 2 * len(self.counts)) - len(self.counts)))
        if self.table is not None:  # numba is loaded: one pass
            from sgns.corpus.scan import corpus_ids

            corpus_ids(piece.ids, table, self.counts).tofile(self.out)
        else:
            self.counts[table] += np.bincount(piece.ids, minlength=len(table))  # table holds distinct ids
            table[piece.ids].tofile(self.out)
        lines = piece.lines.copy()
        lines[0] += self.open_line
        self.lines.frombytes(lines[:-1].tobytes())
        self.open_line = int(lines[-1])
        self.tokens += len(piece.ids)
        self.replaced += piece.replaced
        if self.max_distinct is not None and self.held() > self.max_distinct:
            self.prune()

    def held(self) -> int:
        """Words numbered and not forgotten."""
        return self.table.live if self.table is not None else len(self.index)

    def prune(self) -> None:
        """word2vec's and gensim's rule (max_vocab_size): forget every word counted at most `min_reduce` times so
        far, then raise `min_reduce`, until at most `max_distinct` words are held. A forgotten word keeps its id
        with count 0 (its tokens stay in the id file, and no vocabulary keeps them); seen again, it starts over
        with a new id, so a word can end up under-counted, as in gensim."""
        counts = self.counts
        if self.table is not None:
            while self.table.live > self.max_distinct:
                alive = self.table.alive[: self.ids] if self.table.alive is not None else True
                dead = (counts[: self.ids] <= self.min_reduce) & alive
                counts[: self.ids][dead] = 0
                self.pruned += int(np.count_nonzero(dead))
                self.table.forget(dead)
                self.min_reduce += 1
            return
        while len(self.index) > self.max_distinct:
            rare = [w for w, i in self.index.items() if counts[i] <= self.min_reduce]
            for w in rare:
                counts[self.index.pop(w)] = 0
            self.pruned += len(rare)
            self.min_reduce += 1

    def words(self) -> Iterable[str] | bytes:
        """Words by id ("" for a pruned id); once numbered by the compiled table, as words.txt's bytes."""
        if self.table is not None:
            return self.table.words_utf8()
        if len(self.index) == self.ids:
            return self.index
        words = [""] * self.ids
        for w, i in self.index.items():
            words[i] = w
        return words

    def offsets(self, max_len: int) -> np.ndarray:
        """Sentence start offsets (non-empty lines cut into `max_len` pieces), plus the total at the end."""
        lines = np.frombuffer(self.lines, dtype=np.int64)
        lines = np.append(lines, self.open_line)
        starts = np.cumsum(lines) - lines
        starts, lines = starts[lines > 0], lines[lines > 0]
        parts = -(-lines // max_len)
        first_part = np.cumsum(parts) - parts
        within = np.arange(int(parts.sum()), dtype=np.int64) - np.repeat(first_part, parts)
        return np.append(np.repeat(starts, parts) + within * max_len, self.tokens).astype(np.int64)


def encode(source: CorpusSource, cache_dir: str | Path, log: Callable[[str], None] = print,
           workers: Optional[int] = None) -> EncodedCorpus:
    """Tokenise the corpus once into `cache_dir` (in `workers` processes, default the source's), or reuse the
    cached ids for the same content. The result is the same for any number of workers."""
    key = hashlib.blake2b(f"{CACHE_FORMAT}:{source.cache_key()}".encode(), digest_size=12).hexdigest()
    cache_dir = Path(cache_dir).expanduser()
    folder = cache_dir / f"tokens-{key}"
    encoded = load_cached(folder)
    if encoded is not None:
        log(f"corpus: reusing token ids cached in {folder}")
        return encoded
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tokens-{key}-", dir=cache_dir))
    except OSError as e:
        raise SGNSError(f"cannot write the token cache in {cache_dir}: {e.strerror} "
                        f"(set data.cache_dir=DIR)") from None
    workers = resolve_workers(source.workers if workers is None else workers)
    log(f"corpus: reading {source.description} ({workers} process{'es' if workers > 1 else ''})")
    try:
        with open(tmp / "ids.bin", "wb") as out:
            merger = _Merger(out, source.max_distinct)
            for piece in source.pieces(workers):
                merger.add(piece)
        counts = merger.counts[: merger.ids]
        offsets = merger.offsets(source.max_len)
        publish_cache_entry(tmp, folder, offsets, counts, merger.words(),
                            {"tokens": merger.tokens, "sentences": len(offsets) - 1, "distinct": merger.ids,
                             "pruned": merger.pruned, "replaced_bytes": merger.replaced,
                             "source": source.description})
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if merger.replaced:
        log(f"corpus: {merger.replaced} undecodable bytes replaced by U+FFFD")
    if merger.pruned:
        log(f"corpus: {merger.pruned:,} rare words forgotten while counting (corpus.max_distinct_words="
            f"{source.max_distinct:,}; words counted at most {merger.min_reduce - 1} times when pruned)")
    del merger  # every distinct word as a dict: freed before the word list is read back (peak memory)
    return_freed_memory()
    return _load_encoded(folder)


def return_freed_memory() -> None:
    """Give the heap freed after counting back to the system (glibc keeps it otherwise: measured on 5M words,
    RSS after reading 422 -> 378 MiB), so the tables allocated next do not stack on top of it."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        if libc is not None and hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)
    except OSError:
        pass

