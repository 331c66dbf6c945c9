"""Reading a corpus: a file (plain or compressed) cut into pieces at whitespace, each piece tokenised (in this
process or in forked workers, results in order) -> `Piece`s of local ids, or token lists per line.

Reading is streamed in blocks, so memory stays flat whatever the corpus size or line length.
"""

from __future__ import annotations

import bz2
import codecs
import errno
import gzip
import hashlib
import itertools
import lzma
import os
import stat
import zlib
from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator, List, Optional, Tuple

import numpy as np

from sgns.errors import SGNSError

CHUNK_BYTES = 8 << 20  # text tokenised as one piece by one worker, at most (a longer token is cut)
BLOCK_BYTES = 1 << 20  # `iter_sentences`'s pieces (one process: small, so memory stays flat)
COMPILED_MIN_CHARS = 1 << 20  # pieces this long are tokenised by the compiled scanner (sgns.corpus.scan)
# ...once it is compiled; a piece this long compiles it first (5-10 s, once: numba caches it). A shorter one, a
# corpus read as one piece, is tokenised in Python until then (~0.05 s/MB slower: docs/startup.md).
SCANNER_COMPILE_MIN_CHARS = 6 << 20


def _use_scanner(chars: int) -> bool:
    """Whether a piece of `chars` characters goes to the compiled scanner (compiled now if it must be)."""
    if chars < COMPILED_MIN_CHARS:
        return False
    from sgns.corpus import scan  # numba: loaded only when a corpus is big enough to gain from it

    if scan.is_cached():
        return True
    if chars < SCANNER_COMPILE_MIN_CHARS:
        return False
    scan.prepare()
    return True
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


def check_corpus_file(path: str | Path, missing_ok: bool = False) -> Path:
    """`path` as a regular file that exists (symlinks followed), or SGNSError saying what it is instead: a FIFO,
    a device (/dev/zero), a directory or a socket would block in open() or be read forever. With `missing_ok`
    only a path that is there and not a file is refused (a config check: a missing file fails its own job of a
    sweep when it is read, not the whole sweep)."""
    p = Path(path).expanduser()
    try:
        mode = os.stat(p).st_mode
    except OSError as e:
        if missing_ok:
            return p
        if e.errno == errno.ELOOP:
            raise SGNSError(f"corpus path {p} is a symlink loop (too many levels of symbolic links)") from None
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            raise SGNSError(f"corpus file not found: {p} (set corpus.path=FILE)") from None
        raise SGNSError(f"corpus file {p} cannot be read: {e.strerror or e}") from None
    if stat.S_ISDIR(mode):
        raise SGNSError(f"corpus path is a directory, not a file: {p}")
    if not stat.S_ISREG(mode):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a character device" if stat.S_ISCHR(mode)
                else "a block device" if stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "not a regular file")
        raise SGNSError(f"corpus path {p} is {kind}, not a regular file: give a file (plain, .gz, .bz2 or .xz)")
    return p


def open_binary(path: str | Path) -> BinaryIO:
    """Open a file for reading, decompressing gzip, bzip2 or xz by its magic bytes."""
    p = check_corpus_file(path)
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
    if compiled or (compiled is None and _use_scanner(len(text))):
        from sgns.corpus import scan

        if utf8:
            words_utf8, ids, lines = scan.scan_utf8(scan.code_points(text))
            return Piece([], ids, lines, 0, words_utf8)
        words, ids, lines = scan.scan(text)
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
    if _use_scanner(len(data)) and data.isascii():  # nothing to decode: the bytes are the code points
        from sgns.corpus import scan

        if lowercase:
            data = data.lower()  # ASCII: the same as str.lower
        words_utf8, ids, lines = scan.scan_utf8(np.frombuffer(data, dtype=np.uint8), scan.NUL_IS_SPACE)
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


def _changed(path: str | Path, size: int, now: int) -> SGNSError:
    return SGNSError(f"corpus file {path} changed while being read (size {size:,} -> {now:,} bytes): run again "
                     f"once it is complete")


def file_ranges(path: str | Path, size: int, chunk_bytes: int = CHUNK_BYTES,
                max_token_bytes: int = MAX_TOKEN_BYTES) -> Iterator[Tuple[int, int]]:
    """The byte ranges `iter_chunks` cuts a plain file of `size` bytes into, reading mostly each window's last
    64 KiB (the last newline is almost always there). A file that is no longer `size` bytes long (truncated or
    grown while read) raises SGNSError: the ranges are only right for the content that was hashed."""
    if chunk_bytes < 4:
        raise ValueError("chunk_bytes must be at least 4 (the longest UTF-8 character)")
    start = 0
    with open(path, "rb") as f:

        def read_at(position: int, n: int) -> bytes:
            # Every read lies inside the first `size` bytes: a short one means the file shrank (an endless loop
            # of empty reads otherwise).
            f.seek(position)
            data = f.read(n)
            if len(data) != n:
                raise _changed(path, size, os.fstat(f.fileno()).st_size)
            return data

        while start < size:
            end = start + chunk_bytes
            if end > size:
                yield start, size
                break
            tail = min(chunk_bytes, 1 << 16)
            newline = read_at(end - tail, tail).rfind(b"\n")
            if newline >= 0:
                cut = chunk_bytes - tail + newline + 1
            else:
                window = read_at(start, chunk_bytes)
                while not (cut := _piece_end(window, end <= size, max_token_bytes)):
                    window += read_at(end, min(chunk_bytes, size - end))
                    end += chunk_bytes
                if end > size:
                    yield start, size
                    break
            yield start, start + cut
            start += cut
        now = os.fstat(f.fileno()).st_size
        if now != size:  # grown (or shrunk at its end) while read
            raise _changed(path, size, now)


def usable_cores() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def resolve_workers(workers: int) -> int:
    """`corpus.read_workers`: 0 means one per core this process may use; more than that is capped at it (a
    process per core is what the tokenising can use; more only cost memory and start-up)."""
    cores = usable_cores()
    return min(workers, cores) if workers > 0 else cores


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent(parent: int) -> None:
    """Worker initializer: on Linux, the kernel sends this worker SIGKILL when its parent dies (SIGKILL of a
    training run would otherwise leave the workers alive, re-parented, blocked on a pipe nobody reads)."""
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux (no prctl): nothing to ask for
        return
    if os.getppid() != parent:  # the parent died before prctl: nobody would send the signal
        os._exit(1)


def run_in_order(tasks: Iterable[Tuple[Callable[..., Piece], tuple]], workers: int) -> Iterator[Piece]:
    """fn(*args) for every task, in order; with workers > 1 in that many processes (at most one per task), at most
    2 per worker queued (bounded memory), started only once a second task exists (a small corpus pays no process
    start-up). The processes die with this one (`_die_with_parent`)."""
    tasks = iter(tasks)
    first = next(tasks, None)
    if first is None:
        return
    second = next(tasks, None)
    if workers <= 1 or second is None:
        for fn, args in itertools.chain([first], [second] if second else [], tasks):
            yield fn(*args)
        return
    # The first `workers` tasks are known before the pool starts: a file of 3 pieces starts 3 processes.
    ahead = [first, second, *itertools.islice(tasks, workers - 2)]
    workers = min(workers, len(ahead))
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    from sgns.corpus.scan import prepare

    prepare()  # compile (announced) or load the scanner once here: the forked workers inherit it
    # fork, not spawn or forkserver: those re-import the main module (a whole sgns-train with torch) in every
    # worker. The workers run only the tokeniser (no torch, no logging), so the parent's threads do not matter.
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                               initializer=_die_with_parent, initargs=(os.getpid(),))
    try:
        queued: deque = deque()
        for fn, args in itertools.chain(ahead, tasks):
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

