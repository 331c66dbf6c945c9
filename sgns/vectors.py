"""Word vectors in the word2vec text and binary formats (read by gensim, the C tool and fastText)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np

from sgns.errors import SGNSError


def save_word2vec(path: str | Path, words: Sequence[str], vectors: np.ndarray, binary: bool = True) -> None:
    """Write `V D` then one word per row; binary rows are `word<space><D float32 LE>\\n` (the C tool's)."""
    path = Path(path)
    vectors = np.ascontiguousarray(vectors, dtype="<f4")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(f"{len(words)} {vectors.shape[1]}\n".encode())
            if binary:
                for word, row in zip(words, vectors, strict=False):
                    f.write(word.encode("utf-8") + b" " + row.tobytes() + b"\n")
            else:
                for word, row in zip(words, vectors, strict=False):
                    f.write((word + " " + " ".join(repr(float(x)) for x in row) + "\n").encode("utf-8"))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp, path)  # never leave a half-written vectors file under the final name
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_word2vec(path: str | Path) -> Tuple[List[str], np.ndarray]:
    """Read a word2vec text or binary file (format detected); raise SGNSError if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise SGNSError(f"vectors file not found: {path}")
    data = path.read_bytes()
    newline = data.find(b"\n")
    try:
        count, dim = (int(x) for x in data[:newline].split())
    except ValueError:
        raise SGNSError(f"{path} is not a word2vec file: its first line must be `<words> <dim>`") from None
    if count < 0 or dim <= 0:
        raise SGNSError(f"{path} is not a word2vec file: bad header {data[:newline]!r}")
    body = data[newline + 1 :]
    if _looks_binary(body, dim):
        return _read_binary(path, body, count, dim)
    return _read_text(path, body, count, dim)


def _looks_binary(body: bytes, dim: int) -> bool:
    space = body.find(b" ")
    if space < 0:
        return False
    row = body[space + 1 : space + 1 + 4 * dim]
    try:
        row.decode("ascii")
    except UnicodeDecodeError:
        return True
    return b"\n" not in row and len(row.split()) < dim  # a text row holds `dim` numbers


def _read_binary(path: Path, body: bytes, count: int, dim: int) -> Tuple[List[str], np.ndarray]:
    words: List[str] = []
    vectors = np.empty((count, dim), dtype=np.float32)
    pos = 0
    for i in range(count):
        while pos < len(body) and body[pos : pos + 1] in (b"\n", b" "):
            pos += 1  # gensim writes no newline after a row, the C tool does
        space = body.find(b" ", pos)
        end = space + 1 + 4 * dim
        if space < 0 or end > len(body):
            raise SGNSError(f"{path} is truncated: header promises {count} vectors, found {i}")
        words.append(body[pos:space].decode("utf-8", errors="replace"))
        vectors[i] = np.frombuffer(body, dtype="<f4", count=dim, offset=space + 1)
        pos = end
    return words, vectors


def _read_text(path: Path, body: bytes, count: int, dim: int) -> Tuple[List[str], np.ndarray]:
    lines = body.decode("utf-8", errors="replace").splitlines()
    if len(lines) < count:
        raise SGNSError(f"{path} is truncated: header promises {count} vectors, found {len(lines)}")
    words: List[str] = []
    vectors = np.empty((count, dim), dtype=np.float32)
    for i, line in enumerate(lines[:count]):
        parts = line.rstrip().split(" ")
        if len(parts) != dim + 1:
            raise SGNSError(f"{path} line {i + 2}: expected a word and {dim} numbers")
        words.append(parts[0])
        try:
            vectors[i] = np.asarray(parts[1:], dtype=np.float32)
        except ValueError:
            raise SGNSError(f"{path} line {i + 2}: not a number in the vector") from None
    return words, vectors
