"""Corpus sources: a text file, a Hugging Face dataset or the generated default corpus (`make_source`), each as
a `CorpusSource`: its tokenised pieces in order and the key its token cache is found by."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, List, Mapping, Optional

import numpy as np

from sgns.corpus.reading import (
    CHUNK_BYTES,
    Piece,
    ReadStats,
    _tokenise_range,
    check_corpus_file,
    file_fingerprint,
    file_ranges,
    iter_chunks,
    open_binary,
    resolve_workers,
    run_in_order,
    sentences_of,
    tokenise,
    tokenise_bytes,
)
from sgns.errors import SGNSError

if TYPE_CHECKING:
    from sgns.config import CorpusConfig


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


@contextlib.contextmanager
def _datasets_errors_kept(logged: List[str]) -> Iterator[None]:
    """datasets logs a file it fails to read as an ERROR line of its own (the file's name, the parser's reason)
    before it raises: kept in `logged` for the one error line instead of printed; its other messages still print."""
    logger = logging.getLogger("datasets")

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            logged.append(record.getMessage())

    def below_error(record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR

    keep = Keep(logging.ERROR)
    for handler in logger.handlers:
        handler.addFilter(below_error)
    logger.addHandler(keep)
    try:
        yield
    finally:
        logger.removeHandler(keep)
        for handler in logger.handlers:
            handler.removeFilter(below_error)


def _load_failure(error: BaseException, logged: List[str]) -> str:
    """Why load_dataset failed, in one line: a DatasetGenerationError ("An error occurred while generating the
    dataset") says it through its cause (the parser's error); the file comes from datasets' own log line."""
    if type(error).__name__ == "DatasetGenerationError" and error.__cause__ is not None:
        error = error.__cause__
    text = str(error).strip()
    reason = text.splitlines()[0] if text else type(error).__name__
    if isinstance(error, StopIteration):
        reason = "no rows to read"
    files = [m.group(1) for line in logged for m in [re.search(r"file '([^']+)'", line)] if m]
    return f"{reason} (in {files[-1]})" if files else reason


def hf_source(cfg: CorpusConfig) -> CorpusSource:
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
        if Path(f).is_file() and Path(f).stat().st_size == 0:
            raise SGNSError(f"corpus data file {f} is empty")
    datasets.disable_progress_bars()
    logged: List[str] = []
    try:
        with _datasets_errors_kept(logged):
            ds = datasets.load_dataset(name, cfg.config_name, data_files=data_files, split=cfg.split,
                                       revision=cfg.revision)
    except Exception as e:  # datasets raises many types (FileNotFoundError, ConnectionError, ValueError...)
        raise SGNSError(f"could not load dataset {name!r} split {cfg.split!r}: {_load_failure(e, logged)}") from None
    if cfg.column not in ds.column_names:
        raise SGNSError(f"dataset has no column {cfg.column!r}; columns are {ds.column_names} "
                        f"(set corpus.column=...)")
    feature = ds.features[cfg.column]
    if getattr(feature, "dtype", None) not in ("string", "large_string"):  # str() of ints, lists, bytes trained
        kind = getattr(feature, "dtype", None) or type(feature).__name__
        raise SGNSError(f"dataset column {cfg.column!r} holds {kind} values, not text: set corpus.column to a "
                        f"column of strings; columns are {ds.column_names}")
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
    return CorpusSource(f"{name} ({cfg.split})", key, pieces, max_len, cfg.read_workers)


def check_corpus_path(corpus: Mapping[str, Any]) -> None:
    """Refuse in one line, before a run writes anything, a text corpus path that is there but is no regular file
    (a FIFO would block in open(), /dev/zero be read forever); a missing file is left to the reading step, so in
    a sweep it fails its own job alone. `corpus`: the composed corpus group."""
    kind, path = corpus["kind"], corpus["path"]
    if kind == "text" and path:
        check_corpus_file(path, missing_ok=True)


def make_source(cfg: CorpusConfig, cache_dir: str | Path) -> CorpusSource:
    """The corpus named by the `corpus` config group."""
    workers = cfg.read_workers
    if cfg.kind == "text":
        if not cfg.path:
            raise SGNSError("corpus=text needs a file: set corpus.path=FILE")
        source = text_source(cfg.path, cfg.max_sentence_len, cfg.lowercase, workers)
    elif cfg.kind == "hf":
        source = hf_source(cfg)
    else:
        from sgns.corpus.synthetic import ensure_synthetic

        corpus_path, _ = ensure_synthetic(cfg.synthetic, cache_dir)
        source = text_source(corpus_path, cfg.max_sentence_len, cfg.lowercase, workers)
    source.max_distinct = cfg.max_distinct_words
    return source

