"""Corpus stage: text (file, Hugging Face dataset or the generated default) -> a cached stream of token ids.

Reading is streamed in blocks, so memory stays flat whatever the corpus size or line length. The result
of one pass is an `EncodedCorpus` on disk: every token as an int32 id in first-seen order, sentence start
offsets, the distinct words and their counts. It is keyed by the file's content hash and the tokenisation
settings, so a sweep re-reads nothing and a changed file never reuses stale ids.
"""

from __future__ import annotations

import array
import bz2
import codecs
import gzip
import hashlib
import io
import itertools
import json
import lzma
import os
import shutil
import tempfile
import zlib
from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator, List, Optional, Tuple

import numpy as np

from sgns.errors import SGNSError

CACHE_FORMAT = 2  # bump when the reader or the cache layout changes: old caches are then ignored
CHUNK_BYTES = 8 << 20  # text tokenised as one piece by one worker, at most (a longer token is cut)
BLOCK_BYTES = 1 << 20  # `iter_sentences`'s pieces (one process: small, so memory stays flat)
COMPILED_MIN_CHARS = 1 << 20  # pieces this long are tokenised by the compiled scanner (sgns.token_scan)
MAX_TOKEN_BYTES = 1 << 20  # a "word" longer than this (binary junk, no whitespace) is cut: memory stays bounded
_READ_ERRORS = (OSError, EOFError, lzma.LZMAError, zlib.error)  # truncated or corrupt files, I/O errors

# Undecodable bytes become U+FFFD; this handler counts them for the run's report.
_replaced = [0]


def _count_and_replace(exc: UnicodeDecodeError) -> tuple[str, int]:
    _replaced[0] += exc.end - exc.start
    return "\ufffd", exc.end


codecs.register_error("sgns-count", _count_and_replace)


@dataclass
class ReadStats:
    lines: int = 0  # sentences emitted (long lines count once per piece)
    tokens: int = 0
    replaced_bytes: int = 0  # undecodable bytes replaced by U+FFFD


def open_binary(path: str | Path) -> BinaryIO:
    """Open a file for reading, decompressing gzip, bzip2 or xz by its magic bytes."""
    p = Path(path)
    if not p.exists():
        raise SGNSError(f"corpus file not found: {p} (set corpus.path=FILE)")
    if p.is_dir():
        raise SGNSError(f"corpus path is a directory, not a file: {p}")
    try:
        with open(p, "rb") as f:
            magic = f.read(6)
        if magic.startswith(b"\x1f\x8b"):
            return gzip.open(p, "rb")  # type: ignore[return-value]
        if magic.startswith(b"BZh"):
            return bz2.open(p, "rb")  # type: ignore[return-value]
        if magic.startswith(b"\xfd7zXZ\x00"):
            return lzma.open(p, "rb")  # type: ignore[return-value]
        return open(p, "rb")
    except OSError as e:  # unreadable, or vanished since the check above
        raise SGNSError(f"corpus file {p} cannot be read: {e.strerror or e}") from None


def _pieces(tokens: List[str], max_len: int) -> Iterator[List[str]]:
    for i in range(0, len(tokens), max_len):
        yield tokens[i : i + max_len]


# ------------------------------------------------------------------------------------------ tokenising
# The text is cut into pieces of at most CHUNK_BYTES at line ends (inside a longer line: after a whitespace
# byte; in a piece with no whitespace at all: at a character start, which cuts that token). The cuts depend on
# the bytes alone, never on the number of workers, and each piece is tokenised on its own (in any process), so
# the ids, counts and cache are the same for any worker count. Cutting after "\n" or ASCII whitespace never
# splits a UTF-8 character, a token, or str.lower's context (final sigma), so every token equals what a
# one-shot read (decode all, lines on "\n", str.split) gives.


@dataclass
class Piece:
    """One piece of text tokenised: local ids in first-seen order within the piece."""

    words: List[str]  # distinct words of the piece, by first sight ([] when they come as `utf8`)
    ids: np.ndarray  # int32 index into the distinct words for every token
    lines: np.ndarray  # int64 tokens per "\n"-separated segment; the last one continues into the next piece
    replaced: int = 0  # undecodable bytes replaced by U+FFFD
    utf8: Optional[np.ndarray] = None  # or the distinct words as one uint8 UTF-8 buffer, "\n" after each

    def word_list(self) -> List[str]:
        """The distinct words as Python strings."""
        if self.utf8 is None:
            return self.words
        return self.utf8.tobytes().decode("utf-8").split("\n")[:-1]


def tokenise(text: str, lowercase: bool = False, compiled: Optional[bool] = None, utf8: bool = False) -> Piece:
    """Split `text` into lines on "\n" and tokens on whitespace (str.split), as ids into its distinct words.
    `compiled`: use the numba scanner (default: for pieces of COMPILED_MIN_CHARS or more; same result).
    `utf8`: a compiled piece gives its words as one UTF-8 buffer (`Piece.utf8`), not as strings."""
    if lowercase:
        text = text.lower()  # the whole piece at once: it is cut only at whitespace, so the same as per line
    if compiled or (compiled is None and len(text) >= COMPILED_MIN_CHARS):
        from sgns import token_scan  # numba: loaded only when a corpus is big enough to gain from it

        if utf8:
            words_utf8, ids, lines = token_scan.scan_utf8(token_scan.code_points(text))
            return Piece([], ids, lines, 0, words_utf8)
        words, ids, lines = token_scan.scan(text)
        return Piece(words, ids, lines)
    index: defaultdict[str, int] = defaultdict(itertools.count().__next__)
    if "\x00" in text:  # NUL is a word character here (dataset text): no room for the line-end marker
        segments = [line.split() for line in text.split("\n")]
        lines = np.fromiter(map(len, segments), dtype=np.int64, count=len(segments))
        tokens = list(itertools.chain.from_iterable(segments))
        ids = np.fromiter(map(index.__getitem__, tokens), dtype=np.int32, count=len(tokens))
        return Piece(list(index), ids, lines)
    # One str.split over the whole piece, with NUL standing for each line end: a C loop, not one per line.
    tokens = text.replace("\n", " \x00 ").split()
    index["\x00"]  # id 0: the line-end marker
    marked = np.fromiter(map(index.__getitem__, tokens), dtype=np.int32, count=len(tokens))
    del tokens
    ends = np.flatnonzero(marked == 0)
    lines = np.diff(ends, prepend=-1, append=len(marked)) - 1
    ids = marked[marked != 0]
    ids -= 1
    return Piece(list(itertools.islice(index, 1, None)), ids, lines.astype(np.int64))


def tokenise_bytes(data: bytes, lowercase: bool = False) -> Piece:
    """Decode UTF-8 (invalid bytes -> U+FFFD, counted), NUL as whitespace, then `tokenise` (a compiled piece
    gives its words as UTF-8)."""
    if len(data) >= COMPILED_MIN_CHARS and data.isascii():  # nothing to decode: the bytes are the code points
        from sgns import token_scan

        if lowercase:
            data = data.lower()  # ASCII: the same as str.lower
        words_utf8, ids, lines = token_scan.scan_utf8(np.frombuffer(data, dtype=np.uint8), token_scan.NUL_IS_SPACE)
        return Piece([], ids, lines, 0, words_utf8)
    before = _replaced[0]
    text = data.decode("utf-8", errors="sgns-count")
    replaced = _replaced[0] - before
    if "\x00" in text:
        text = text.replace("\x00", " ")
    piece = tokenise(text, lowercase, utf8=True)
    piece.replaced = replaced
    return piece


def _tokenise_range(path: str, start: int, end: int, lowercase: bool) -> Piece:
    """Worker: tokenise bytes start..end of a plain file."""
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(end - start)
    if len(data) != end - start:
        raise SGNSError(f"corpus file {path} changed while being read (it ends at byte {start + len(data):,}, "
                        f"not {end:,}): run again once it is complete")
    return tokenise_bytes(data, lowercase)


_WHITESPACE_BYTES = (b" ", b"\t", b"\r", b"\x0b", b"\x0c", b"\x00", b"\x1c", b"\x1d", b"\x1e", b"\x1f")


def _piece_end(window: bytes, full: bool, max_token_bytes: int) -> int:
    """Length of the piece that starts `window` (0: no cut point yet, read another chunk into the window).

    Through the window's last newline, else its last whitespace byte; a window with no whitespace at all grows
    until it holds `max_token_bytes`, then is cut before its last character start (a "token" this long is binary
    junk), never inside a character.
    A window that is not `full` reached the end of the text: all of it."""
    if not full:
        return len(window)
    end = window.rfind(b"\n") + 1
    if end:
        return end
    end = max(window.rfind(b) for b in _WHITESPACE_BYTES) + 1
    if end:
        return end
    if len(window) < max_token_bytes:
        return 0
    for p in range(len(window) - 1, max(len(window) - 4, 0), -1):
        if window[p] & 0xC0 != 0x80:  # not a UTF-8 continuation byte: a character starts here
            return p
    # No character starts in the last 3 bytes: with 4 or more, the window ends a character (or stray bytes).
    return len(window) if len(window) >= 4 else 0


def _read_full(stream: BinaryIO, n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        try:
            part = stream.read(n - got)
        except _READ_ERRORS as e:
            raise SGNSError(f"corpus could not be read (truncated or corrupt file?): {e}") from None
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def iter_chunks(stream: BinaryIO, chunk_bytes: int = CHUNK_BYTES,
                max_token_bytes: int = MAX_TOKEN_BYTES) -> Iterator[bytes]:
    """The stream cut into pieces: windows of `chunk_bytes` cut by `_piece_end`."""
    rest = b""
    while True:
        want = max(chunk_bytes - len(rest), 0)  # a cut at a character start leaves at most 3 bytes
        more = _read_full(stream, want)
        window, full = rest + more, len(more) == want
        while full and not (cut := _piece_end(window, full, max_token_bytes)):
            more = _read_full(stream, chunk_bytes)
            window, full = window + more, len(more) == chunk_bytes
        if not full:
            if window:
                yield window
            return
        yield window[:cut]
        rest = window[cut:]


def file_ranges(path: str | Path, size: int, chunk_bytes: int = CHUNK_BYTES,
                max_token_bytes: int = MAX_TOKEN_BYTES) -> Iterator[Tuple[int, int]]:
    """The byte ranges `iter_chunks` cuts a plain file of `size` bytes into, reading mostly each window's last
    64 KiB (the last newline is almost always there)."""
    if chunk_bytes < 4:
        raise ValueError("chunk_bytes must be at least 4 (the longest UTF-8 character)")
    start = 0
    with open(path, "rb") as f:
        while start < size:
            end = start + chunk_bytes
            if end > size:
                yield start, size
                return
            tail = min(chunk_bytes, 1 << 16)
            f.seek(end - tail)
            newline = f.read(tail).rfind(b"\n")
            if newline >= 0:
                cut = chunk_bytes - tail + newline + 1
            else:
                f.seek(start)
                window = f.read(chunk_bytes)
                while not (cut := _piece_end(window, len(window) == end - start, max_token_bytes)):
                    end += chunk_bytes
                    window += f.read(chunk_bytes)
                if end > size:
                    yield start, size
                    return
            yield start, start + cut
            start += cut


def resolve_workers(workers: int) -> int:
    """`corpus.read_workers`: 0 means one per core this process may use."""
    if workers > 0:
        return workers
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def run_in_order(tasks: Iterable[Tuple[Callable[..., Piece], tuple]], workers: int) -> Iterator[Piece]:
    """fn(*args) for every task, in order; with workers > 1 in that many processes, at most 2 per worker queued
    (bounded memory), started only once a second task exists (a small corpus pays no process start-up)."""
    tasks = iter(tasks)
    first = next(tasks, None)
    if first is None:
        return
    second = next(tasks, None)
    if workers <= 1 or second is None:
        for fn, args in itertools.chain([first], [second] if second else [], tasks):
            yield fn(*args)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    from sgns.token_scan import scan

    scan("warm up")  # compile or load the scanner once here: the forked workers inherit it
    # fork, not spawn or forkserver: those re-import the main module (a whole sgns-train with torch) in every
    # worker. The workers run only the tokeniser (no torch, no logging), so the parent's threads do not matter.
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
    try:
        queued: deque = deque()
        for fn, args in itertools.chain([first, second], tasks):
            queued.append(pool.submit(fn, *args))
            if len(queued) >= 2 * workers:
                yield queued.popleft().result()
        while queued:
            yield queued.popleft().result()
    except BrokenProcessPool:
        raise SGNSError("a corpus reading process died (out of memory?): set corpus.read_workers to fewer "
                        "processes") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def sentences_of(pieces: Iterable[Piece], max_len: int, stats: Optional[ReadStats] = None) -> Iterator[List[str]]:
    """Pieces -> token lists, one per line (a line spans pieces), cut into `max_len` pieces; empty lines skipped.
    A long line is emitted every `max_len` tokens, so it never sits in memory whole."""
    stats = stats if stats is not None else ReadStats()
    open_line: List[str] = []  # tokens of the line the last piece ended inside
    for piece in pieces:
        stats.replaced_bytes += piece.replaced
        words = piece.word_list()
        tokens = [words[i] for i in piece.ids.tolist()]
        position, last = 0, len(piece.lines) - 1
        for k, n in enumerate(piece.lines.tolist()):
            segment = tokens[position : position + n]
            position += n
            if k == 0:
                segment, open_line = open_line + segment, []
            if k == last:
                open_line = segment
                break
            for part in _pieces(segment, max_len):
                stats.lines += 1
                stats.tokens += len(part)
                yield part
        while len(open_line) >= max_len:
            part, open_line = open_line[:max_len], open_line[max_len:]
            stats.lines += 1
            stats.tokens += len(part)
            yield part
    if open_line:
        stats.lines += 1
        stats.tokens += len(open_line)
        yield open_line


def iter_sentences(stream: BinaryIO, max_len: int = 10000, lowercase: bool = False,
                   stats: Optional[ReadStats] = None, block_bytes: int = BLOCK_BYTES,
                   max_token_bytes: int = MAX_TOKEN_BYTES) -> Iterator[List[str]]:
    """Yield whitespace-token lists, one per line, lines longer than `max_len` tokens cut into pieces, reading
    `block_bytes` at a time in this process (memory flat whatever the line length). Invalid UTF-8 becomes U+FFFD
    (counted in `stats.replaced_bytes`), NUL bytes are whitespace, a token over `max_token_bytes` is cut. A
    read error (truncated or corrupt compressed file, I/O error) raises SGNSError."""
    chunks = iter_chunks(stream, block_bytes, max_token_bytes)
    yield from sentences_of((tokenise_bytes(c, lowercase) for c in chunks), max_len, stats)


def file_fingerprint(path: str | Path) -> str:
    """Content hash of a file (blake2b over its bytes)."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------- sources


@dataclass
class CorpusSource:
    """A re-iterable corpus: `pieces(workers)` yields it tokenised, in order; `key` identifies its content."""

    description: str
    key: str
    pieces: Callable[[int], Iterator[Piece]]  # the text as tokenised pieces, using this many processes
    max_len: int  # lines are cut into pieces of at most this many tokens
    workers: int = 0  # processes `encode` uses (0: one per core)
    max_distinct: Optional[int] = None  # prune rare words while counting when more are held (None: never)

    def cache_key(self) -> str:
        return self.key if self.max_distinct is None else f"{self.key}:prune{self.max_distinct}"

    def sentences(self, stats: Optional[ReadStats] = None) -> Iterator[List[str]]:
        """Token lists, one per (piece of a) line, read in this process."""
        return sentences_of(self.pieces(1), self.max_len, stats)


def text_source(path: str | Path, max_len: int, lowercase: bool, workers: int = 0,
                chunk_bytes: int = CHUNK_BYTES) -> CorpusSource:
    path = Path(path).expanduser()
    with open_binary(path) as probe:  # fail early with a clear error if missing or unreadable
        compressed = not isinstance(probe, io.BufferedReader)
    try:
        before = os.stat(path)
        fingerprint = file_fingerprint(path)
    except OSError as e:
        raise SGNSError(f"corpus file {path} cannot be read: {e.strerror or e}") from None

    def changed(size: int) -> SGNSError:
        return SGNSError(f"corpus file {path} changed while being read (size {before.st_size:,} -> {size:,} "
                         f"bytes): run again once it is complete")

    def pieces(n_workers: int) -> Iterator[Piece]:
        n_workers = resolve_workers(n_workers)
        with open_binary(path) as stream:
            # The cache is keyed by the content hashed above: make sure that is the content we read.
            if compressed or n_workers <= 1:  # decompressing in this process while the workers tokenise
                tasks = ((tokenise_bytes, (chunk, lowercase)) for chunk in iter_chunks(stream, chunk_bytes))
            else:  # each worker reads its own byte range
                tasks = ((_tokenise_range, (str(path), a, b, lowercase))
                         for a, b in file_ranges(path, before.st_size, chunk_bytes))
            yield from run_in_order(tasks, n_workers)
            after = os.fstat(stream.fileno())
        if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
            raise changed(after.st_size)

    key = f"text:{fingerprint}:{max_len}:{lowercase}"
    return CorpusSource(str(path), key, pieces, max_len, workers)


_LOADERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text"}


def _tokenise_rows(batch: dict, column: str, lowercase: bool) -> dict:
    """datasets.map worker: a batch of rows -> one row holding their tokens as one Piece (each text's lines
    are lines; empty texts are skipped)."""
    texts = [str(t) for t in batch[column] if t]
    piece = tokenise("\n".join(texts) + "\n" if texts else "", lowercase)
    return {"words": [piece.words], "ids": [piece.ids], "lines": [piece.lines]}


def hf_source(cfg: Any) -> CorpusSource:
    """A Hugging Face dataset read through `datasets.load_dataset` (hub name or local json/csv/parquet)."""
    import datasets  # here, not at the top: it costs a second to import and most runs read text files

    name, data_files = cfg.name, list(cfg.data_files) if cfg.data_files else None
    if not name and not data_files:
        raise SGNSError("corpus=hf needs corpus.name=DATASET (or a loader such as json) or corpus.data_files")
    if name and Path(name).suffix in _LOADERS and Path(name).exists() and not data_files:
        name, data_files = _LOADERS[Path(name).suffix], [name]  # a local file given as the name
    if not name:
        name = _LOADERS.get(Path(data_files[0]).suffix)
        if name is None:
            raise SGNSError(f"cannot tell the format of {data_files[0]}: set corpus.name=json|csv|parquet|text")
    for f in data_files or []:
        if not Path(f).exists():
            raise SGNSError(f"corpus data file not found: {f}")
    datasets.disable_progress_bars()
    try:
        ds = datasets.load_dataset(name, cfg.config_name, data_files=data_files, split=cfg.split,
                                   revision=cfg.revision)
    except Exception as e:  # datasets raises many types (FileNotFoundError, ConnectionError, ValueError...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SGNSError(f"could not load dataset {name!r} split {cfg.split!r}: {first}") from None
    if cfg.column not in ds.column_names:
        raise SGNSError(f"dataset has no column {cfg.column!r}; columns are {ds.column_names} "
                        f"(set corpus.column=...)")
    column, max_len, lowercase = cfg.column, cfg.max_sentence_len, cfg.lowercase

    def pieces(n_workers: int) -> Iterator[Piece]:
        # datasets' own parallel map: contiguous shards, results in row order, so any worker count agrees.
        n_workers = min(resolve_workers(n_workers), max(1, len(ds) // 1000))
        with tempfile.TemporaryDirectory(prefix="sgns-hf-") as scratch:
            tokenised = ds.map(_tokenise_rows, batched=True, batch_size=1000, remove_columns=ds.column_names,
                               fn_kwargs={"column": column, "lowercase": lowercase},
                               num_proc=n_workers if n_workers > 1 else None, load_from_cache_file=False,
                               cache_file_name=str(Path(scratch) / "tokens.arrow"))
            for row in tokenised.with_format("numpy"):
                yield Piece(list(row["words"]), np.asarray(row["ids"], dtype=np.int32),
                            np.asarray(row["lines"], dtype=np.int64))
            del tokenised

    key = f"hf:{ds._fingerprint}:{column}:{max_len}:{lowercase}"
    return CorpusSource(f"{name} ({cfg.split})", key, pieces, max_len, getattr(cfg, "read_workers", 0))


def make_source(cfg: Any, cache_dir: str | Path) -> CorpusSource:
    """The corpus named by the `corpus` config group."""
    workers = getattr(cfg, "read_workers", 0)
    if cfg.kind == "text":
        if not cfg.path:
            raise SGNSError("corpus=text needs a file: set corpus.path=FILE")
        source = text_source(cfg.path, cfg.max_sentence_len, cfg.lowercase, workers)
    elif cfg.kind == "hf":
        source = hf_source(cfg)
    else:
        from sgns.synthetic import ensure_synthetic

        corpus_path, _ = ensure_synthetic(cfg.synthetic, cache_dir)
        source = text_source(corpus_path, cfg.max_sentence_len, cfg.lowercase, workers)
    source.max_distinct = getattr(cfg, "max_distinct_words", None)
    return source


# ------------------------------------------------------------------------------------------- encoding


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
    the compiled `token_scan.WordTable` from the first piece that comes as UTF-8 (the compiled scanner's): no
    Python work per word, which is what bounded the parent at millions of distinct words."""

    def __init__(self, out: BinaryIO, max_distinct: Optional[int] = None):
        self.out = out
        self.index: defaultdict[str, int] = defaultdict(itertools.count().__next__)  # word -> id on first sight
        self.table: Any = None  # token_scan.WordTable, in place of `index` once a piece came as UTF-8
        self.ids = 0  # ids handed out (more than len(index) once words were pruned)
        self.counts = np.zeros(1 << 16, dtype=np.int64)
        self.max_distinct, self.min_reduce, self.pruned = max_distinct, 1, 0
        self.lines = array.array("q")  # tokens of every finished line, 8 bytes a line
        self.open_line = 0  # tokens of the line the last piece ended inside
        self.tokens = self.replaced = 0

    def add(self, piece: Piece) -> None:
        # New words get ids in the piece's first-seen order, after every earlier piece's: first-seen order.
        if piece.utf8 is not None and self.table is None:
            from sgns.token_scan import WordTable

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
            from sgns.token_scan import corpus_ids

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
