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
import itertools
import json
import lzma
import os
import re
import shutil
import tempfile
import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator, List, Optional

import numpy as np

from sgns.errors import SGNSError

CACHE_FORMAT = 1  # bump when the reader or the cache layout changes: old caches are then ignored
BLOCK_BYTES = 1 << 20
MAX_TOKEN_CHARS = 1 << 20  # a "word" longer than this (binary junk) is cut, so memory stays bounded
_LAST_SPACE = re.compile(r"\s(?=\S*\Z)")  # the last whitespace character (same set as str.split)
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


def iter_sentences(stream: BinaryIO, max_len: int = 10000, lowercase: bool = False,
                   stats: Optional[ReadStats] = None, block_bytes: int = BLOCK_BYTES,
                   max_token_chars: int = MAX_TOKEN_CHARS) -> Iterator[List[str]]:
    """Yield whitespace-token lists, one per line, lines longer than `max_len` tokens cut into pieces.

    Reads `block_bytes` at a time, so a 100 MB single-line file never sits in memory as one string: the
    whole tokens of an unfinished line are kept as a list (and emitted every `max_len`), only its last,
    maybe partial, token as text. Invalid UTF-8 becomes U+FFFD (counted in `stats.replaced_bytes`), NUL
    bytes are whitespace, a token longer than `max_token_chars` is cut. A read error (truncated or corrupt
    compressed file, I/O error) raises SGNSError.
    """
    stats = stats if stats is not None else ReadStats()
    decoder = codecs.getincrementaldecoder("utf-8")(errors="sgns-count")
    start_replaced = _replaced[0]
    pending: List[str] = []  # whole tokens of the current (unfinished) line
    tail = ""  # text after the last newline seen

    def split(text: str) -> List[str]:
        # Lowercasing per line piece, not per block: str.lower is context-sensitive (Greek final sigma).
        return text.lower().split() if lowercase else text.split()

    try:
        while True:
            try:
                raw = stream.read(block_bytes)
            except _READ_ERRORS as e:
                raise SGNSError(f"corpus could not be read (truncated or corrupt file?): {e}") from None
            final = not raw
            text = tail + decoder.decode(raw, final=final)
            if "\x00" in text:
                text = text.replace("\x00", " ")
            lines = text.split("\n")
            tail = "" if final else lines.pop()
            for line in lines:
                tokens = split(line)
                if pending:
                    tokens, pending = pending + tokens, []
                for piece in _pieces(tokens, max_len):
                    stats.lines += 1
                    stats.tokens += len(piece)
                    yield piece
            if len(tail) > block_bytes:
                # A very long line: keep its whole tokens as a list, only the last (maybe partial) one as text.
                m = _LAST_SPACE.search(tail)
                if m is not None and m.start() > 0:
                    pending.extend(split(tail[: m.start()]))
                    tail = tail[m.start() :]
                elif len(tail) > max_token_chars:
                    pending.extend(split(tail))  # one giant "word": cut it here
                    tail = ""
                while len(pending) >= max_len:
                    piece, pending = pending[:max_len], pending[max_len:]
                    stats.lines += 1
                    stats.tokens += len(piece)
                    yield piece
            if final:
                break
    finally:
        stats.replaced_bytes += _replaced[0] - start_replaced


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
    """A re-iterable corpus: `sentences(stats)` yields token lists; `key` identifies its content."""

    description: str
    key: str
    sentences: Callable[[ReadStats], Iterator[List[str]]]


def text_source(path: str | Path, max_len: int, lowercase: bool) -> CorpusSource:
    path = Path(path).expanduser()
    open_binary(path).close()  # fail early with a clear error if missing or unreadable
    try:
        before = os.stat(path)
        fingerprint = file_fingerprint(path)
    except OSError as e:
        raise SGNSError(f"corpus file {path} cannot be read: {e.strerror or e}") from None

    def sentences(stats: ReadStats) -> Iterator[List[str]]:
        with open_binary(path) as stream:
            yield from iter_sentences(stream, max_len, lowercase, stats)
            # The cache is keyed by the content hashed above: make sure that is the content we just read.
            after = os.fstat(stream.fileno())
            if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
                raise SGNSError(f"corpus file {path} changed while being read (size {before.st_size:,} -> "
                                f"{after.st_size:,} bytes): run again once it is complete")

    key = f"text:{fingerprint}:{max_len}:{lowercase}"
    return CorpusSource(str(path), key, sentences)


_LOADERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text"}


def hf_source(cfg: Any) -> CorpusSource:
    """A Hugging Face dataset read through `datasets.load_dataset` (hub name or local json/csv/parquet)."""
    import datasets

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

    def sentences(stats: ReadStats) -> Iterator[List[str]]:
        for batch in ds.iter(batch_size=1000):
            for text in batch[column]:
                if not text:
                    continue
                if lowercase:
                    text = text.lower()
                for line in str(text).split("\n"):
                    for piece in _pieces(line.split(), max_len):
                        stats.lines += 1
                        stats.tokens += len(piece)
                        yield piece

    key = f"hf:{ds._fingerprint}:{column}:{max_len}:{lowercase}"
    return CorpusSource(f"{name} ({cfg.split})", key, sentences)


def make_source(cfg: Any, cache_dir: str | Path) -> CorpusSource:
    """The corpus named by the `corpus` config group."""
    if cfg.kind == "text":
        if not cfg.path:
            raise SGNSError("corpus=text needs a file: set corpus.path=FILE")
        return text_source(cfg.path, cfg.max_sentence_len, cfg.lowercase)
    if cfg.kind == "hf":
        return hf_source(cfg)
    from sgns.synthetic import ensure_synthetic

    corpus_path, _ = ensure_synthetic(cfg.synthetic, cache_dir)
    return text_source(corpus_path, cfg.max_sentence_len, cfg.lowercase)


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


def publish_cache_entry(tmp: Path, folder: Path, offsets: np.ndarray, counts: np.ndarray, words: Iterable[str],
                        meta: dict) -> None:
    """Write the rest of a cache entry beside `tmp`/ids.bin (sentence offsets, word counts, words, meta.json),
    then rename `tmp` to `folder`: atomic, so an entry is complete or absent."""
    np.save(tmp / "offsets.npy", offsets)
    np.save(tmp / "counts.npy", counts)
    (tmp / "words.txt").write_text("".join(w + "\n" for w in words), encoding="utf-8")
    (tmp / "meta.json").write_text(json.dumps(meta))
    try:
        os.rename(tmp, folder)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # another process finished it first


def encode(source: CorpusSource, cache_dir: str | Path, log: Callable[[str], None] = print) -> EncodedCorpus:
    """Tokenise the corpus once into `cache_dir`, or reuse the cached ids for the same content."""
    key = hashlib.blake2b(f"{CACHE_FORMAT}:{source.key}".encode(), digest_size=12).hexdigest()
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
    log(f"corpus: reading {source.description}")
    stats = ReadStats()
    index: defaultdict[str, int] = defaultdict(itertools.count().__next__)  # word -> id on first sight
    lookup = index.__getitem__
    offsets = array.array("q", [0])  # 8 bytes a sentence, not a Python int
    total = 0
    buffer = array.array("i")  # ids waiting to be written, as C ints (4 bytes)
    counts = np.zeros(0, dtype=np.int64)

    def flush(out: BinaryIO) -> None:
        # Count while writing, so nothing at the end reads the whole id file back: memory stays flat.
        nonlocal counts
        found = np.bincount(np.frombuffer(buffer, dtype=np.int32), minlength=len(counts))
        found[: len(counts)] += counts
        counts = found
        buffer.tofile(out)
        del buffer[:]

    try:
        with open(tmp / "ids.bin", "wb") as out:
            for sentence in source.sentences(stats):
                if not sentence:
                    continue
                buffer.extend(map(lookup, sentence))
                total += len(sentence)
                offsets.append(total)
                if len(buffer) >= 1 << 20:
                    flush(out)
            flush(out)
        counts = np.pad(counts, (0, len(index) - len(counts))).astype(np.int64)
        publish_cache_entry(tmp, folder, np.frombuffer(offsets, dtype=np.int64), counts, index,
                            {"tokens": total, "sentences": len(offsets) - 1, "distinct": len(index),
                             "replaced_bytes": stats.replaced_bytes, "source": source.description})
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if stats.replaced_bytes:
        log(f"corpus: {stats.replaced_bytes} undecodable bytes replaced by U+FFFD")
    del index, lookup  # every distinct word as a dict: freed before the word list is read back (peak memory)
    return _load_encoded(folder)

