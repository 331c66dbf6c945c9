"""fastText's own files: the `.bin` model (read by `fasttext.load_model` and gensim's `load_facebook_model`) and
the `.vec` text vectors.

A `.bin` file (fastText 0.9's format version 12, every number in the machine's byte order, little-endian here):
- magic 793712314 and version 12 (int32 each);
- the arguments: dim, ws, epoch, minCount, neg, wordNgrams, loss (1 hs, 2 ns, 3 softmax, 4 ova), model (1 cbow,
  2 skipgram, 3 supervised), bucket, minn, maxn, lrUpdateRate (int32 each), t (float64);
- the dictionary: size, nwords, nlabels (int32), ntokens, pruneidx_size (int64; -1: not pruned), then each
  entry as its UTF-8 bytes ending in a zero byte, its count (int64) and its type (int8: 0 word, 1 label),
  then pruneidx_size pairs of int32 (none here);
- the input matrix: a quantisation flag (one byte, 0), rows and columns (int64), rows x columns float32: the
  words' own rows (nwords) then the n-gram buckets (bucket);
- the output matrix: its quantisation flag (0), rows and columns (int64), then its float32 rows (one per word
  for negative sampling).
fastText composes a vocabulary word's vector as the mean of its own row and its n-grams' rows, an unknown word's
from its n-grams alone, and gives the end-of-line word `</s>` its own row only (src/dictionary.cc, initNgrams).
Its `minn=0` with `maxn>0` means n-grams from one character; sgns's `minn=0` turns n-grams off, which is
fastText's `maxn=0`: `FastTextArgs.ngram_range` reconciles the two.

A `.vec` file is word2vec text (`<words> <dim>`, then `word v1 ... vD`) of each vocabulary word's composed vector.
"""

from __future__ import annotations

import os
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, List, Sequence, Tuple

import numpy as np

from sgns.errors import SGNSError

MAGIC = 793712314  # FASTTEXT_FILEFORMAT_MAGIC_INT32
VERSION = 12  # FASTTEXT_VERSION, written; 11 is read too (the same layout)
READ_VERSIONS = (11, 12)
EOS = "</s>"  # fastText's end-of-line word: its vector is its own row, without n-grams
LOSS_NAMES = {1: "hs", 2: "ns", 3: "softmax", 4: "ova"}
MODEL_NAMES = {1: "cbow", 2: "skipgram", 3: "supervised"}
LOSS_NS, MODEL_SKIPGRAM = 2, 2
ENTRY_WORD, ENTRY_LABEL = 0, 1
ARGS_FORMAT = "<12id"  # dim ws epoch minCount neg wordNgrams loss model bucket minn maxn lrUpdateRate, t
DICT_HEADER_FORMAT = "<3i2q"  # size nwords nlabels, ntokens pruneidx_size
ENTRY_FORMAT = "<qb"  # count, type
MATRIX_HEADER_FORMAT = "<?2q"  # quantised, rows, columns
READ_BLOCK_BYTES = 1 << 20  # dictionary bytes read at once
WRITE_BLOCK_ROWS = 65536  # matrix rows written at once (never a copy of a whole 2M-bucket table)


@dataclass
class FastTextArgs:
    """The arguments a `.bin` file records (fastText's `Args::save` fields, in its order)."""

    dim: int
    ws: int = 5
    epoch: int = 5
    min_count: int = 5
    neg: int = 5
    word_ngrams: int = 1
    loss: int = LOSS_NS
    model: int = MODEL_SKIPGRAM
    bucket: int = 2_000_000
    minn: int = 3
    maxn: int = 6
    lr_update_rate: int = 100
    t: float = 1e-4

    def pack(self) -> bytes:
        return struct.pack(ARGS_FORMAT, self.dim, self.ws, self.epoch, self.min_count, self.neg, self.word_ngrams,
                           self.loss, self.model, self.bucket, self.minn, self.maxn, self.lr_update_rate, self.t)

    @property
    def ngram_range(self) -> Tuple[int, int]:
        """(minn, maxn) as sgns.subwords counts them: (0, 0) when fastText computes no n-grams (maxn < 1 or
        bucket 0), else minn of at least 1 (fastText's minn=0 starts at one character too)."""
        if self.maxn < 1 or self.bucket < 1 or self.maxn < self.minn:
            return 0, 0
        return max(self.minn, 1), self.maxn


@dataclass
class FastTextModel:
    """The contents of a `.bin` file: arguments, vocabulary with counts, input and output matrices."""

    args: FastTextArgs
    words: List[str]
    counts: np.ndarray  # (n_words,) int64
    input: np.ndarray  # (n_words + bucket, dim) float32: the words' own rows, then the n-gram buckets
    output: np.ndarray  # (rows, dim) float32: one row per word for negative sampling (loss ns)
    ntokens: int = 0  # corpus tokens the dictionary counted (fastText's lr schedule)
    source: str = ""
    index: dict = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.index = {}
        for i, w in enumerate(self.words):
            self.index.setdefault(w, i)

    @property
    def n_words(self) -> int:
        return len(self.words)

    @property
    def dim(self) -> int:
        return int(self.input.shape[1])

    @property
    def buckets(self) -> np.ndarray:
        """The n-gram rows of the input matrix (bucket x dim)."""
        return self.input[self.n_words :]

    def word_vectors(self) -> np.ndarray:
        """Every vocabulary word's vector as fastText composes it (`getWordVector`): the mean of its rows."""
        from sgns.model import mean_of_rows
        from sgns.subwords import subword_table

        minn, maxn = self.args.ngram_range
        table = subword_table(self.words, minn, maxn, self.args.bucket)
        vectors = mean_of_rows(self.input, table.offsets, table.rows).numpy()
        if EOS in self.index:  # fastText gives its end-of-line word no n-grams
            vectors[self.index[EOS]] = self.input[self.index[EOS]]
        return vectors

    def word_vector(self, word: str) -> np.ndarray:
        """One word's vector as fastText's `get_word_vector` gives it (zeros for an unknown word without n-grams)."""
        from sgns.model import mean_of_rows
        from sgns.subwords import subword_table

        minn, maxn = self.args.ngram_range
        i = self.index.get(word)
        if i is not None:
            if word == EOS:
                return np.array(self.input[i], dtype=np.float32)
            table = subword_table([word], minn, maxn, self.args.bucket)
            rows = table.rows.astype(np.int64)
            rows[0] = i
            rows[1:] += self.n_words - 1  # the one-word table counted its n-grams from row 1
            return mean_of_rows(self.input, [0, len(rows)], rows)[0].numpy()
        if word == EOS:
            return np.zeros(self.dim, np.float32)
        table = subword_table([], minn, maxn, self.args.bucket)
        rows = table.unknown_word_rows(word).astype(np.int64) + self.n_words
        if len(rows) == 0:
            return np.zeros(self.dim, np.float32)
        return mean_of_rows(self.input, [0, len(rows)], rows)[0].numpy()


def write_fasttext_bin(path: str | Path, model: FastTextModel) -> None:
    """Write `model` as fastText's `.bin` (format version 12, not quantised), atomically."""
    path = Path(path)
    args, n = model.args, model.n_words
    if model.input.ndim != 2 or model.input.shape != (n + args.bucket, args.dim):
        raise SGNSError(f"cannot write {path}: the input matrix has shape {tuple(model.input.shape)}, fastText's "
                        f"needs {n} words + {args.bucket} buckets = {n + args.bucket} rows of {args.dim}")
    if model.output.ndim != 2 or model.output.shape[1] != args.dim:
        raise SGNSError(f"cannot write {path}: the output matrix has shape {tuple(model.output.shape)}, not "
                        f"(rows, {args.dim})")
    if len(model.counts) != n:
        raise SGNSError(f"cannot write {path}: {n} words but {len(model.counts)} counts")
    entries = bytearray()
    for word, count in zip(model.words, np.asarray(model.counts, dtype=np.int64).tolist(), strict=True):
        encoded = word.encode("utf-8")
        if not encoded or b"\0" in encoded:
            raise SGNSError(f"cannot write {path}: word {word!r} is empty or holds a zero byte, which fastText's "
                            f"dictionary cannot hold")
        entries += encoded + b"\0" + struct.pack(ENTRY_FORMAT, count, ENTRY_WORD)
    ntokens = model.ntokens or int(np.asarray(model.counts, dtype=np.int64).sum())

    def write(f: BinaryIO) -> None:
        f.write(struct.pack("<2i", MAGIC, VERSION))
        f.write(args.pack())
        f.write(struct.pack(DICT_HEADER_FORMAT, n, n, 0, ntokens, -1))
        f.write(entries)
        _write_matrix(f, model.input)
        _write_matrix(f, model.output)

    _write_atomically(path, write)


def _write_matrix(f: BinaryIO, matrix: np.ndarray) -> None:
    f.write(struct.pack(MATRIX_HEADER_FORMAT, False, matrix.shape[0], matrix.shape[1]))
    for start in range(0, len(matrix), WRITE_BLOCK_ROWS):
        f.write(np.ascontiguousarray(matrix[start : start + WRITE_BLOCK_ROWS], dtype="<f4").tobytes())


def _write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    if path.is_dir():
        raise SGNSError(f"cannot write {path}: it is a directory; give a file name such as {path / 'model.bin'}")
    if not path.parent.is_dir():
        raise SGNSError(f"cannot write {path}: folder {path.parent} does not exist")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp, path)  # never a half-written model under the final name
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def is_fasttext_bin(path: str | Path) -> bool:
    """Whether `path` is a file starting with fastText's magic number."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return len(head) == 4 and struct.unpack("<i", head)[0] == MAGIC


class _Reader:
    """Reads the fixed-size fields of an open `.bin` file, each truncation one SGNSError line."""

    def __init__(self, f: BinaryIO, path: Path) -> None:
        self.f, self.path = f, path

    def unpack(self, fmt: str, what: str) -> tuple:
        size = struct.calcsize(fmt)
        data = self.f.read(size)
        if len(data) != size:
            raise SGNSError(f"{self.path} is truncated: it ends inside its {what}")
        return struct.unpack(fmt, data)


def read_fasttext_bin(path: str | Path, mmap: bool = True) -> FastTextModel:
    """Read a fastText `.bin` (format 11 or 12, unquantised word vectors: skipgram or cbow); one SGNSError line
    for anything else. `mmap`: the matrices are mapped from the file, not read into memory (a published model's
    input matrix is several GB)."""
    path = Path(path)
    if not path.is_file():
        raise SGNSError(f"fastText model not found: {path}")
    size = path.stat().st_size
    with open(path, "rb") as f:
        r = _Reader(f, path)
        magic, version = r.unpack("<2i", "header")
        if magic != MAGIC:
            raise SGNSError(f"{path} is not a fastText .bin model (its first 4 bytes are not fastText's magic "
                            f"number {MAGIC})")
        if version not in READ_VERSIONS:
            raise SGNSError(f"{path} is a fastText model of format version {version}; sgns reads versions "
                            f"{' and '.join(map(str, READ_VERSIONS))} (fastText 0.9)")
        args = FastTextArgs(*r.unpack(ARGS_FORMAT, "arguments"))
        if args.model not in MODEL_NAMES or args.loss not in LOSS_NAMES:
            raise SGNSError(f"{path}: unknown model type {args.model} or loss {args.loss}: not a fastText model")
        if args.model == 3:
            raise SGNSError(f"{path} is a supervised fastText model (a classifier), not word vectors: sgns reads "
                            f"skipgram and cbow models")
        if args.dim < 1:
            raise SGNSError(f"{path}: dimension {args.dim}: not a usable fastText model")
        n_entries, n_words, n_labels, ntokens, prune_size = r.unpack(DICT_HEADER_FORMAT, "dictionary")
        if n_labels or n_entries != n_words or n_words < 0:
            raise SGNSError(f"{path}: its dictionary holds {n_labels} labels ({n_entries} entries, {n_words} words): "
                            f"a supervised model, not word vectors")
        words, counts = _read_entries(f, path, n_entries)
        if prune_size >= 0:
            raise SGNSError(f"{path} is a pruned (quantised, .ftz) fastText model: sgns reads full .bin models")
        quantised, rows, cols = r.unpack(MATRIX_HEADER_FORMAT, "input matrix header")
        if quantised:
            raise SGNSError(f"{path} is a quantised (.ftz) fastText model: sgns reads full .bin models")
        if cols != args.dim or rows != n_words + args.bucket:
            raise SGNSError(f"{path}: its input matrix is {rows} x {cols}, but {n_words} words + {args.bucket} "
                            f"buckets of dimension {args.dim} need {n_words + args.bucket} x {args.dim}")
        input_offset = f.tell()
        output_header = input_offset + 4 * rows * cols
        if output_header + struct.calcsize(MATRIX_HEADER_FORMAT) > size:
            raise SGNSError(f"{path} is truncated: it ends inside its input matrix")
        f.seek(output_header)
        quantised_out, out_rows, out_cols = r.unpack(MATRIX_HEADER_FORMAT, "output matrix header")
        if quantised_out or out_cols != args.dim or out_rows < 0:
            raise SGNSError(f"{path}: its output matrix ({out_rows} x {out_cols}, quantised {quantised_out}) does "
                            f"not fit dimension {args.dim}")
        output_offset = f.tell()
        end = output_offset + 4 * out_rows * out_cols
    if end != size:
        problem = "is truncated: it ends inside its output matrix" if end > size else \
            f"has {size - end} bytes after its output matrix: not a fastText model, or damaged"
        raise SGNSError(f"{path} {problem}")
    input_matrix = _matrix(path, input_offset, rows, cols, mmap)
    output_matrix = _matrix(path, output_offset, out_rows, out_cols, mmap)
    return FastTextModel(args, words, counts, input_matrix, output_matrix, int(ntokens), str(path))


def _matrix(path: Path, offset: int, rows: int, cols: int, mmap: bool) -> np.ndarray:
    if rows * cols == 0:
        return np.zeros((rows, cols), np.float32)
    if mmap:
        # copy-on-write: writable in memory (torch takes it without a warning), the file never written
        return np.memmap(path, dtype="<f4", mode="c", offset=offset, shape=(rows, cols))
    with open(path, "rb") as f:
        f.seek(offset)
        return np.fromfile(f, dtype="<f4", count=rows * cols).reshape(rows, cols)


def _read_entries(f: BinaryIO, path: Path, count: int) -> Tuple[List[str], np.ndarray]:
    """The dictionary's entries: zero-ended UTF-8 words, each followed by its count and type; the file is left
    just after the last one."""
    words: List[str] = []
    counts = np.empty(count, dtype=np.int64)
    entry_size = struct.calcsize(ENTRY_FORMAT)
    block, pos = b"", 0
    for i in range(count):
        end = block.find(b"\0", pos)
        while end < 0 or end + 1 + entry_size > len(block):
            more = f.read(READ_BLOCK_BYTES)
            if not more:
                raise SGNSError(f"{path} is truncated: its dictionary promises {count} words, found {i}")
            block, pos = block[pos:] + more, 0
            end = block.find(b"\0")
        try:
            words.append(block[pos:end].decode("utf-8"))
        except UnicodeDecodeError:
            raise SGNSError(f"{path}: word {i + 1} of its dictionary is not UTF-8 text ({block[pos:end][:40]!r})") \
                from None
        counts[i], kind = struct.unpack_from(ENTRY_FORMAT, block, end + 1)
        if kind != ENTRY_WORD:
            raise SGNSError(f"{path}: entry {i + 1} ({words[-1]!r}) is a label: a supervised model, not word vectors")
        pos = end + 1 + entry_size
    f.seek(f.tell() - (len(block) - pos))
    return words, counts


def write_vec(path: str | Path, words: Sequence[str], vectors: np.ndarray) -> None:
    """fastText's `.vec`: word2vec text of each vocabulary word's composed vector."""
    from sgns.vectors import save_word2vec

    save_word2vec(path, words, vectors, binary=False)


def fasttext_model(words: Sequence[str], counts: Sequence[int], input_table: np.ndarray, output_table: np.ndarray,
                   minn: int, maxn: int, bucket: int, ws: int = 5, epoch: int = 5, min_count: int = 5, neg: int = 5,
                   subsample: float = 1e-4, source: str = "") -> FastTextModel:
    """A skip-gram, negative-sampling FastTextModel of sgns's tables; sgns's minn=0 or maxn=0 (no n-grams) is
    written as fastText's maxn=0, and a disabled subsampling (0) as t=1 (fastText would discard every word
    continuing from t=0)."""
    if minn <= 0 or maxn <= 0:
        minn, maxn = 0, 0
    args = FastTextArgs(dim=int(input_table.shape[1]), ws=ws, epoch=epoch, min_count=min_count, neg=neg,
                        bucket=bucket, minn=minn, maxn=maxn, t=float(subsample) if subsample > 0 else 1.0)
    return FastTextModel(args, list(words), np.asarray(counts, dtype=np.int64), input_table, output_table,
                         int(np.asarray(counts, dtype=np.int64).sum()), source)


def describe(model: FastTextModel) -> str:
    """One line about a model: words, dimension, n-grams, loss."""
    minn, maxn = model.args.ngram_range
    grams = f"n-grams {minn}-{maxn} in {model.args.bucket:,} buckets" if maxn else "no n-grams"
    return (f"fastText {MODEL_NAMES[model.args.model]} ({LOSS_NAMES[model.args.loss]}): {model.n_words:,} words, "
            f"dim {model.dim}, {grams}")


__all__ = ["EOS", "FastTextArgs", "FastTextModel", "describe", "fasttext_model", "is_fasttext_bin",
           "read_fasttext_bin", "write_fasttext_bin", "write_vec"]

