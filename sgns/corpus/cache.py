"""The token cache: a source's pieces merged in order into an `EncodedCorpus` on disk (every token as an int32 id
in first-seen order, sentence start offsets, the distinct words and their counts), keyed by the source's content
and tokenisation settings, so a sweep re-reads nothing and a changed file never reuses stale ids."""

from __future__ import annotations

import array
import errno
import fcntl
import hashlib
import itertools
import json
import mmap
import os
import shutil
import tempfile
import time
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


def _load_encoded(folder: Path, verify: bool = False) -> EncodedCorpus:
    meta = json.loads((folder / "meta.json").read_text())
    tokens = meta["tokens"]
    ids = (np.memmap(folder / "ids.bin", dtype=np.int32, mode="r", shape=(tokens,)) if tokens
           else np.zeros(0, dtype=np.int32))
    words = (folder / "words.txt").read_text(encoding="utf-8").split("\n")[:-1]
    # The sentence offsets memory-mapped like the ids: a run reads them in pieces and drops their pages again
    # (release_pages), so they do not stay resident through training (8 bytes a sentence: 80 MB at 200M words
    # of 20-word lines, docs/memory.md). An empty corpus's one offset is read.
    offsets = np.load(folder / "offsets.npy", mmap_mode="r" if tokens else None)
    corpus = EncodedCorpus(ids, offsets, words, np.load(folder / "counts.npy"), meta["replaced_bytes"], folder)
    if verify:
        _verify(corpus, meta)
        release_pages(corpus.offsets)
    return corpus


def map_counts(corpus: EncodedCorpus) -> None:
    """Once the vocabulary is built, a run reads only the number of distinct words from `corpus.counts`: the same
    counts, memory-mapped from the cache entry instead, so they no longer stay resident (8 bytes a distinct word:
    30 MB at 3.8M). Left as they are when the entry's file no longer matches them."""
    try:
        mapped = np.load(corpus.path / "counts.npy", mmap_mode="r")
    except (OSError, ValueError):
        return
    if mapped.shape == corpus.counts.shape and mapped.dtype == corpus.counts.dtype:
        corpus.counts = mapped


def release_pages(array: np.ndarray, lo: int = 0, hi: Optional[int] = None) -> None:
    """Drop the pages holding elements [lo, hi) (default: all) of a memory-mapped array from this process
    (madvise DONTNEED): they stay in the page cache, so reading them again is a minor fault, but they no longer
    count in its resident memory. A no-op for an array in memory; `array` is the whole np.memmap, not a view."""
    base = getattr(array, "_mmap", None)
    if base is None or not hasattr(mmap, "MADV_DONTNEED"):
        return
    hi = len(array) if hi is None else hi
    start_byte = array.offset % mmap.ALLOCATIONGRANULARITY  # where the data starts in the mapping (after a header)
    page = mmap.PAGESIZE
    start = (start_byte + lo * array.itemsize) // page * page
    stop = min(-(-(start_byte + hi * array.itemsize) // page) * page, len(base))
    if stop > start:
        try:
            base.madvise(mmap.MADV_DONTNEED, start, stop - start)
        except (OSError, ValueError):  # advisory only
            pass


def _verify(corpus: EncodedCorpus, meta: dict) -> None:
    """ValueError unless the entry's parts agree: every id indexes the word list (the kernels index tables with
    them unchecked: an id out of range is a segfault) and the sentence offsets are ordered within the ids. One
    pass over the ids (a checksum would cost more and catch only what no table lookup notices)."""
    distinct, tokens = len(corpus.counts), meta["tokens"]
    if len(corpus.words) != distinct or meta.get("distinct", distinct) != distinct:
        raise ValueError(f"{len(corpus.words):,} words, {distinct:,} counts")
    if (corpus.path / "ids.bin").stat().st_size != 4 * tokens:
        raise ValueError(f"ids.bin is not {tokens:,} ids long")
    offsets = corpus.offsets
    if offsets.ndim != 1 or len(offsets) < 1 or offsets[0] != 0 or offsets[-1] != tokens or np.any(
            np.diff(offsets) < 0):
        raise ValueError("sentence offsets out of order")
    if tokens and int(corpus.ids.view(np.uint32).max()) >= distinct:  # a negative id is a huge uint32
        raise ValueError(f"ids out of range (>= {distinct:,} distinct words)")


def load_cached(folder: Path, log: Callable[[str], None] = print) -> Optional[EncodedCorpus]:
    """The encoded corpus cached in `folder`, or None when there is none; a damaged entry (unreadable, or parts
    that disagree: bit rot, a bad copy) is removed with one line to `log`, so the caller rebuilds it."""
    if not (folder / "meta.json").exists():
        return None
    try:
        return _load_encoded(folder, verify=True)
    except (OSError, ValueError, KeyError, TypeError) as e:
        log(f"corpus: the cache entry {folder} is damaged ({e}): removed, it is rebuilt")
        shutil.rmtree(folder, ignore_errors=True)
        return None


class _Owner:
    """The lock a run holds on its temporary cache folder `<name>` (as a flock on `<name>.lock` beside it) while it
    writes there: a folder whose lock anyone can take belongs to a dead run (`remove_dead_temporaries`). The
    kernel drops a flock when its holder dies, SIGKILL included; Linux's NFS client maps it to a POSIX lock, so
    runs on several machines sharing a cache see one another's."""

    def __init__(self, lock: Path, fd: int):
        self.lock, self.fd = lock, fd

    def __enter__(self) -> _Owner:
        return self

    def __exit__(self, *_: Any) -> None:
        self.lock.unlink(missing_ok=True)  # first: a lock file without its holder is a dead run's
        os.close(self.fd)


def make_temporary(cache_dir: Path, prefix: str) -> tuple[Path, _Owner]:
    """A new folder `cache_dir`/`prefix`XXXX, locked by this process (`_Owner`, to be closed once the folder is
    published or removed)."""
    while True:
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=".lock", dir=cache_dir)
        lock = Path(name)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # at once, unless a cleaner holds it this instant
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                folder = lock.with_suffix("")
                folder.mkdir()
                return folder, _Owner(lock, fd)
            # A cleaner took the new lock for a dead run's and removed it: make another.
        except OSError:
            lock.unlink(missing_ok=True)
            os.close(fd)
            raise
        os.close(fd)


LEGACY_TEMPORARY_SECONDS = 86400  # an unlocked temporary folder (sgns before locks) untouched this long is litter


def remove_dead_temporaries(cache_dir: Path, log: Callable[[str], None] = print) -> None:
    """Remove the temporary folders (`.tokens-*`, `.phrases-*`) of runs that died while writing them: those whose
    lock (`make_temporary`) is free. A live run's folder stays: its lock is held. A folder without a lock file
    (written by sgns before locks) is removed once nothing in it changed for a day."""
    for lock in sorted(cache_dir.glob(".*-*.lock")):
        if not lock.name.startswith((".tokens-", ".phrases-")):
            continue
        try:
            fd = os.open(lock, os.O_RDWR)
        except OSError:  # removed meanwhile by its run or by another cleaner
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held: a live run writes there
            os.close(fd)
            continue
        try:
            _remove_temporary(lock.with_suffix(""), log)
            lock.unlink(missing_ok=True)
        finally:
            os.close(fd)
    now = time.time()
    for folder in cache_dir.glob(".*-*"):
        if (folder.name.startswith((".tokens-", ".phrases-")) and folder.is_dir()
                and not folder.with_name(folder.name + ".lock").exists()):
            try:
                changed = max([folder.stat().st_mtime] + [f.stat().st_mtime for f in folder.iterdir()])
            except OSError:
                continue
            if now - changed > LEGACY_TEMPORARY_SECONDS:
                _remove_temporary(folder, log)


def _remove_temporary(folder: Path, log: Callable[[str], None]) -> None:
    if folder.exists():
        shutil.rmtree(folder, ignore_errors=True)
        log(f"corpus: removed {folder}, left by a run that died while writing it")


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

            self.out.write(corpus_ids(piece.ids, table, self.counts))  # not tofile: its short write has no errno
        else:
            self.counts[table] += np.bincount(piece.ids, minlength=len(table))  # table holds distinct ids
            self.out.write(table[piece.ids])
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


# writing the cache failed, not reading the corpus: a full disk or quota, a file size limit, a read-only mount
CACHE_WRITE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)


def encode(source: CorpusSource, cache_dir: str | Path, log: Callable[[str], None] = print,
           workers: Optional[int] = None) -> EncodedCorpus:
    """Tokenise the corpus once into `cache_dir` (in `workers` processes, default the source's), or reuse the
    cached ids for the same content. The result is the same for any number of workers."""
    key = hashlib.blake2b(f"{CACHE_FORMAT}:{source.cache_key()}".encode(), digest_size=12).hexdigest()
    cache_dir = Path(cache_dir).expanduser()
    folder = cache_dir / f"tokens-{key}"
    encoded = load_cached(folder, log)
    if encoded is not None:
        log(f"corpus: reusing token ids cached in {folder}")
        return encoded
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        remove_dead_temporaries(cache_dir, log)
        tmp, owner = make_temporary(cache_dir, f".tokens-{key}-")
    except OSError as e:
        raise SGNSError(f"cannot write the token cache in {cache_dir}: {e.strerror} "
                        f"(set data.cache_dir=DIR)") from None
    with owner:
        try:
            return _encode_into(source, tmp, folder, log, workers)
        except OSError as e:
            if e.errno not in CACHE_WRITE_ERRORS:
                raise
            raise SGNSError(f"cannot write the token cache in {cache_dir}: {e.strerror} "
                            f"(set data.cache_dir=DIR)") from None


def _encode_into(source: CorpusSource, tmp: Path, folder: Path, log: Callable[[str], None],
                 workers: Optional[int]) -> EncodedCorpus:
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

    try:
        # The process's own symbols (libc's among them), as reading.py and model.py find prctl and madvise:
        # ctypes.util.find_library ran `ldconfig -p` in a subprocess at every call (three a run).
        libc = ctypes.CDLL(None)
        if hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)
    except OSError:
        pass

