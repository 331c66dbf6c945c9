"""Word vectors in the word2vec text and binary formats (read by gensim, the C tool and fastText).

Both formats start with a `<words> <dim>` line. Text rows are `word v1 ... vD`; binary rows are the word's
UTF-8 bytes, a space and D little-endian float32s (the C tool ends each row with a newline, gensim does
not; both are read). `WordVectors` is the in-memory form: words most frequent first, one row per word.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from sgns.errors import SGNSError

TEXT_BLOCK_ROWS = 4096  # rows turned into text at once when writing the text format


@dataclass
class WordVectors:
    """Words (most frequent first) and their vectors, with lookup and nearest-neighbour queries."""

    words: List[str]
    vectors: np.ndarray  # (len(words), dim) float32
    source: str = ""  # where they were read from, for messages
    index: Dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.index = {}
        for i, w in enumerate(self.words):
            self.index.setdefault(w, i)  # a duplicated word keeps its first (most frequent) row

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self.index

    def __getitem__(self, word: str | Sequence[str]) -> np.ndarray:
        """A word's vector; a list of words gives their vectors as rows (as gensim's KeyedVectors does)."""
        if not isinstance(word, str):
            return np.stack([self[w] for w in word]) if len(word) else np.zeros((0, self.dim), np.float32)
        if word not in self.index:
            raise SGNSError(f"word not in vocabulary: {word!r}")
        return self.vectors[self.index[word]]

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def nearest(self, positive: Sequence[str] | str, negative: Sequence[str] | str = (),
                topn: int = 10) -> List[Tuple[str, float]]:
        """Neighbours of sum(positive) - sum(negative): `nearest("king")`, `nearest(["king", "woman"], "man")`"""
        from sgns.evaluate import nearest

        return nearest(self.words, self.vectors, positive, negative, topn)

    # gensim's KeyedVectors names, so notebook code written for gensim reads the same (docs/coming_from_gensim.md)

    @property
    def index_to_key(self) -> List[str]:
        return self.words

    @property
    def key_to_index(self) -> Dict[str, int]:
        return self.index

    @property
    def vector_size(self) -> int:
        return self.dim

    def most_similar(self, positive: Sequence[str] | str = (), negative: Sequence[str] | str = (),
                     topn: int = 10) -> List[Tuple[str, float]]:
        """gensim's `most_similar`: `most_similar("king")`, `most_similar(positive=["king", "woman"],
        negative=["man"])` (unit vectors summed, the query words left out)."""
        return self.nearest(positive, negative, topn)

    def similarity(self, word1: str, word2: str) -> float:
        """Cosine similarity of two words."""
        a, b = self[word1].astype(np.float64), self[word2].astype(np.float64)
        return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))

    def evaluate(self, analogies: Sequence[str | Path] | str | Path = (),
                 similarities: Sequence[str | Path] | str | Path = (), restrict_vocab: int = 30000,
                 method: str = "3cosadd", device: str | None = None,
                 benchmarks: Optional[Sequence[str | Path] | str | Path] = None) -> Dict[str, dict]:
        """Score benchmarks as `sgns-eval` does (the same numbers), each result with its coverage: with no
        argument the English suite (Google analogies, WordSim-353, SimLex-999), keyed by benchmark name;
        `benchmarks` takes names, suites or paths; analogy and similarity files are keyed by file stem:
        `{"google": {"accuracy": ..., "coverage": ..., "sections": ...}, "ws353": {"spearman": ...}}`."""
        from sgns.evaluate import evaluate_all

        def as_list(files: Sequence[str | Path] | str | Path) -> List[str]:
            return [str(files)] if isinstance(files, (str, Path)) else [str(f) for f in files]

        named = as_list(benchmarks) if benchmarks is not None else None
        if named is None and not as_list(analogies) and not as_list(similarities):
            named = ["english"]
        settings = SimpleNamespace(analogies=as_list(analogies), similarities=as_list(similarities),
                                   benchmarks=named or [], restrict_vocab=restrict_vocab, method=method)
        return evaluate_all(settings, self.words, self.vectors, device)

    def save(self, path: str | Path, binary: bool = True) -> None:
        """Write a word2vec file (binary by default), readable by gensim's `load_word2vec_format`."""
        save_word2vec(path, self.words, self.vectors, binary=binary)

    def to_gensim(self) -> Any:
        """A gensim KeyedVectors holding the same words, in the same order, and bit-identical vectors."""
        try:
            from gensim.models import KeyedVectors
        except ImportError:
            raise SGNSError("to_gensim needs gensim: pip install gensim") from None
        kv = KeyedVectors(vector_size=self.dim, count=0, dtype=np.float32)
        kv.add_vectors(list(self.words), np.array(self.vectors, dtype=np.float32, copy=True))
        return kv

    @classmethod
    def from_gensim(cls, kv: Any) -> WordVectors:
        """WordVectors from gensim KeyedVectors (or a Word2Vec model's `.wv`), vectors copied as float32."""
        return cls(list(kv.index_to_key), np.array(kv.vectors, dtype=np.float32, copy=True), "gensim KeyedVectors")


def save_word2vec(path: str | Path, words: Sequence[str], vectors: np.ndarray, binary: bool = True) -> None:
    """Write `V D` then one word per row; binary rows are `word<space><D float32 LE>\\n` (the C tool's)."""
    path = Path(path)
    vectors = np.ascontiguousarray(vectors, dtype="<f4")
    if vectors.ndim != 2 or len(vectors) != len(words):
        raise SGNSError(f"cannot write {path}: {len(words)} words but vectors of shape {vectors.shape}")
    for w in words:
        if not w or " " in w or "\n" in w:
            raise SGNSError(f"cannot write {path}: word {w!r} is empty or holds a space or newline, which the "
                            f"word2vec format cannot represent")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(f"{len(words)} {vectors.shape[1]}\n".encode())
            if binary:
                for word, row in zip(words, vectors, strict=True):
                    f.write(word.encode("utf-8") + b" " + row.tobytes() + b"\n")
            else:
                row_format = " ".join(["%.9g"] * vectors.shape[1])  # 9 significant digits round-trip float32
                for start in range(0, len(words), TEXT_BLOCK_ROWS):  # as Python floats a block at a time:
                    rows = vectors[start : start + TEXT_BLOCK_ROWS].tolist()  # never the whole table (~6x)
                    f.write("".join(word + " " + row_format % tuple(row) + "\n" for word, row in
                                    zip(words[start : start + TEXT_BLOCK_ROWS], rows, strict=True)).encode("utf-8"))
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
    header = data[:newline] if newline >= 0 else data[:80]
    try:
        count, dim = (int(x) for x in header.split())
    except ValueError:
        raise SGNSError(f"{path} is not a word2vec file: its first line must be `<words> <dim>`, "
                        f"found {header[:60]!r}") from None
    if count < 0 or dim <= 0:
        raise SGNSError(f"{path} is not a word2vec file: bad header {header!r}")
    body = data[newline + 1 :] if newline >= 0 else b""
    if count and _is_text(body, dim):
        return _read_text(path, body, count, dim)
    return _read_binary(path, body, count, dim)


def load_word_vectors(path: str | Path) -> WordVectors:
    """A word2vec file (text or binary) as WordVectors."""
    words, vectors = load_word2vec(path)
    return WordVectors(words, vectors, str(path))


def _is_text(body: bytes, dim: int) -> bool:
    """Text iff the first row is valid UTF-8 holding a word and exactly `dim` numbers (float bytes never are)."""
    end = body.find(b"\n")
    first = body[: end if end >= 0 else len(body)]
    try:
        parts = first.decode("utf-8").rstrip(" \r\t").split(" ")
        if len(parts) != dim + 1:
            return False
        [float(x) for x in parts[1:]]
    except (UnicodeDecodeError, ValueError):
        return False
    return True


def _read_binary(path: Path, body: bytes, count: int, dim: int) -> Tuple[List[str], np.ndarray]:
    words: List[str] = []
    vectors = np.empty((count, dim), dtype=np.float32)
    pos = 0
    row_bytes = 4 * dim
    for i in range(count):
        while pos < len(body) and body[pos] in (10, 32):
            pos += 1  # gensim writes no newline after a row, the C tool does
        space = body.find(b" ", pos)
        end = space + 1 + row_bytes
        if space < 0 or end > len(body):
            raise SGNSError(f"{path} is truncated: its header promises {count} vectors, found {i}")
        if space - pos > 1000 or b"\n" in body[pos:space]:
            raise SGNSError(f"{path} is not a valid word2vec file: row {i + 1} has no `word <{dim} floats>` form")
        try:
            words.append(body[pos:space].decode("utf-8"))
        except UnicodeDecodeError:
            raise SGNSError(f"{path}: word {i + 1} is not UTF-8 text ({body[pos:space][:40]!r})") from None
        vectors[i] = np.frombuffer(body, dtype="<f4", count=dim, offset=space + 1)
        pos = end
    return words, vectors


def _read_text(path: Path, body: bytes, count: int, dim: int) -> Tuple[List[str], np.ndarray]:
    lines = body.split(b"\n")  # only \n ends a row: a word may hold other Unicode line breaks
    complete = len(lines) - 1  # rows that end with a newline
    if complete < count:
        found = complete + (1 if lines[-1].strip() else 0)
        hint = " (the last row has no final newline: cut short?)" if found == count else ""
        raise SGNSError(f"{path} is truncated: its header promises {count} vectors, found {found}{hint}")
    words: List[str] = []
    vectors = np.empty((count, dim), dtype=np.float32)
    for i, raw in enumerate(lines[:count]):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise SGNSError(f"{path} line {i + 2}: not UTF-8 text") from None
        parts = line.rstrip(" \r\t").split(" ")
        if len(parts) != dim + 1:
            raise SGNSError(f"{path} line {i + 2}: expected a word and {dim} numbers, found {len(parts) - 1} "
                            f"(truncated or not a word2vec file)")
        words.append(parts[0])
        try:
            vectors[i] = np.asarray(parts[1:], dtype=np.float32)
        except ValueError:
            raise SGNSError(f"{path} line {i + 2}: not a number in the vector") from None
    return words, vectors
