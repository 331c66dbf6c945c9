"""Word vectors in the word2vec text and binary formats (read by gensim, the C tool and fastText).

Both formats start with a `<words> <dim>` line. Text rows are `word v1 ... vD`; binary rows are the word's
UTF-8 bytes, a space and D little-endian float32s (the C tool ends each row with a newline, gensim does
not; both are read). `WordVectors` is the in-memory form: words most frequent first, one row per word; with
`NgramVectors` (a subword run's n-gram rows) it also gives a vector for a word outside the vocabulary.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from numbers import Integral
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from sgns.errors import SGNSError
from sgns.vocab import WordList

log = logging.getLogger("sgns")

TEXT_BLOCK_ROWS = 4096  # rows turned into text at once when writing the text format
BINARY_BLOCK_ROWS = 65536  # rows of a compact word list (WordList) written from one slice of its bytes


KEY_TYPES = (str, int, np.integer)  # a word, or a row number (gensim's keys)
COSMUL_EPSILON = 1e-6  # keeps 3CosMul's division finite (Levy & Goldberg's, and gensim's, value)

# gensim 4.4 KeyedVectors' public attributes that WordVectors does not have: asking for one says where it is
# (a static list: importing gensim here would cost every user its import; tests/test_vectors.py checks it)
GENSIM_ONLY = frozenset({
    "add_lifecycle_event", "add_vector", "add_vectors", "allocate_vecattrs", "evaluate_word_analogies",
    "evaluate_word_pairs", "expandos", "fill_norms", "get_vecattr", "index2entity", "index2word", "init_sims",
    "intersect_word2vec_format", "lifecycle_events", "load", "load_word2vec_format", "log_accuracy",
    "log_evaluate_word_pairs", "mapfile_path", "next_index", "norms", "resize_vectors", "set_vecattr",
    "similarity_unseen_docs", "sort_by_descending_frequency", "unit_normalize_all", "vectors_for_all",
    "vectors_norm", "vocab", "wmdistance", "word_vec",
})
GENSIM_HINTS = {  # what sgns has instead, where it has something
    "evaluate_word_analogies": "wv.evaluate(analogies=FILE) scores them here, with gensim's method",
    "evaluate_word_pairs": "wv.evaluate(similarities=FILE) scores them here",
    "word_vec": "gensim 4 renamed it get_vector, which is here",
    "init_sims": "get_normed_vectors() gives unit vectors here",
    "norms": "get_normed_vectors() gives unit vectors here",
    "fill_norms": "get_normed_vectors() gives unit vectors here",
    "unit_normalize_all": "get_normed_vectors() gives unit vectors here",
    "load": "sgns.load.load_vectors(path) reads a run, a checkpoint or a word2vec file",
    "load_word2vec_format": "sgns.load.load_vectors(path) reads a word2vec file (text or binary, detected)",
}
GENSIM_3_NAMES = {  # gensim 4's KeyedVectors refuses these too: only the replacement helps
    "vocab": "key_to_index and index_to_key",
    "index2word": "index_to_key",
    "index2entity": "index_to_key",
    "vectors_norm": "get_normed_vectors()",
}


@dataclass(repr=False)
class NgramVectors:
    """The n-gram half of a subword input table: an unseen word's vector is the mean of its n-grams' rows, cut and
    hashed as fastText does (sgns.subwords). A word with no n-gram (shorter than minn) has none: None here."""

    table: np.ndarray  # (bucket, dim) float32: the input table's rows after the vocabulary's
    minn: int  # shortest n-gram, in characters (>= 1)
    maxn: int  # longest n-gram, in characters

    def __repr__(self) -> str:
        return f"NgramVectors<n-grams {self.minn}-{self.maxn}, {self.bucket:,} buckets>"

    @property
    def bucket(self) -> int:
        return int(self.table.shape[0])

    def rows(self, word: str) -> np.ndarray:
        """The bucket rows of `word`'s n-grams, in fastText's order (repeats kept)."""
        from sgns.subwords import fasttext_hash, ngrams

        return np.asarray([fasttext_hash(g) % self.bucket for g in ngrams(word, self.minn, self.maxn)],
                          dtype=np.int64)

    def vector(self, word: str) -> Optional[np.ndarray]:
        """The mean of `word`'s n-gram rows (float32), or None when it has no n-gram."""
        from sgns.model import mean_of_rows

        rows = self.rows(word)
        if not len(rows):
            return None
        return mean_of_rows(self.table, [0, len(rows)], rows)[0].numpy()


class NotInVocabulary(SGNSError, KeyError):
    """A word (or row number) the vectors do not hold: a KeyError, as gensim raises, and an SGNSError whose
    message is one plain line (KeyError alone would print it quoted)."""

    def __str__(self) -> str:
        return Exception.__str__(self)


@dataclass(repr=False)
class WordVectors:
    """Words (most frequent first) and their vectors, with lookup and nearest-neighbour queries.

    Also gensim's KeyedVectors surface, with gensim's arithmetic (docs/coming_from_gensim.md): `wv[0]`,
    `get_vector`, `most_similar` of words and vectors, `most_similar_cosmul`, `doesnt_match`, `distances`, ...;
    any other KeyedVectors attribute answers with a pointer to `to_gensim()`.

    With `ngrams` (a subword run's), a word outside the vocabulary gets the mean of its n-grams' rows wherever a
    word's vector is asked for (`wv["unseen"]`, similarity, most_similar's query), zeros with a warning when it
    has no n-gram (gensim's FastTextKeyedVectors and fastText do the same); `in`, `key_to_index` and the
    neighbours searched stay the vocabulary (gensim's FastTextKeyedVectors says `in` for every word).
    """

    words: List[str]
    vectors: np.ndarray  # (len(words), dim) float32
    source: str = ""  # where they were read from, for messages
    ngrams: Optional[NgramVectors] = None  # a subword run's n-gram rows: vectors for words outside the vocabulary
    index: Dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.index = {}
        for i, w in enumerate(self.words):
            self.index.setdefault(w, i)  # a duplicated word keeps its first (most frequent) row

    def __repr__(self) -> str:  # never the whole vocabulary (a notebook prints a run's wv)
        source = f" from {self.source}" if self.source else ""
        grams = f", n-grams {self.ngrams.minn}-{self.ngrams.maxn} in {self.ngrams.bucket:,} buckets" \
            if self.ngrams is not None else ""
        return f"WordVectors<{len(self)} words, dim {self.dim}{grams}{source}>"

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, key: object) -> bool:
        """A word of the vocabulary, or a row number in range (gensim's `in`)."""
        return self.has_index_for(key)

    def __iter__(self) -> Iterator[np.ndarray]:
        """The vectors, row by row, as gensim's `for v in wv` gives them (there via wv[0], wv[1], ..., which
        ends in a KeyError); `index_to_key` holds the words."""
        return iter(self.vectors)

    def __getitem__(self, key: str | int | Iterable[str | int]) -> np.ndarray:
        """A word's (or row number's) vector; a list of them gives their vectors as rows (gensim's indexing)."""
        if isinstance(key, KEY_TYPES):
            return self._vector(key)
        try:
            keys = list(key)  # type: ignore[arg-type]
        except TypeError:
            raise NotInVocabulary(f"{key!r} is not a word or a row number (give a str, an int or a list of them)") \
                from None
        if not keys:
            return np.zeros((0, self.dim), np.float32)
        if self.ngrams is None:
            return self.vectors[[self.get_index(k) for k in keys]]
        return np.stack([self._vector(k) for k in keys])

    def _vector(self, key: str | int) -> np.ndarray:
        """The vector of one key: its row, or (n-grams) an unseen word's composed vector."""
        if self.ngrams is None or not isinstance(key, str) or key in self.index:
            return self.vectors[self.get_index(key)]
        composed = self.ngrams.vector(key)
        if composed is None:
            log.warning("%r is not in the vocabulary and has no n-gram of %d-%d characters: its vector is zeros "
                        "(as gensim and fastText give)", key, self.ngrams.minn, self.ngrams.maxn)
            return np.zeros(self.dim, np.float32)
        return composed

    def has_vector(self, key: object) -> bool:
        """Whether a vector is given for `key`: a vocabulary word, a row number in range, or (n-grams) any word."""
        return self.has_index_for(key) or (self.ngrams is not None and isinstance(key, str))

    def from_ngrams(self, key: object) -> bool:
        """Whether `key`'s vector is composed from n-grams: a word outside the vocabulary with at least one n-gram."""
        return (self.ngrams is not None and isinstance(key, str) and key not in self.index
                and len(self.ngrams.rows(key)) > 0)

    def __getattr__(self, name: str) -> Any:  # only reached for a name the object lacks
        if name in GENSIM_3_NAMES:
            raise AttributeError(f"WordVectors has no {name} (gensim 4 has none either): use {GENSIM_3_NAMES[name]}",
                                 name=name, obj=self)
        if name in GENSIM_ONLY:
            hint = f"; {GENSIM_HINTS[name]}" if name in GENSIM_HINTS else ""
            raise AttributeError(f"WordVectors has no {name}, gensim's KeyedVectors has: wv.to_gensim().{name} on a "
                                 f"gensim copy of these vectors{hint}", name=name, obj=self)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}", name=name, obj=self)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def nearest(self, positive: Sequence[str] | str, negative: Sequence[str] | str = (),
                topn: int = 10) -> List[Tuple[str, float]]:
        """Neighbours of sum(positive) - sum(negative): `nearest("king")`, `nearest(["king", "woman"], "man")`"""
        return self.most_similar(positive, negative, topn)

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

    def get_index(self, key: str | int, default: Optional[int] = None) -> int:
        """The row of a word, or a row number itself when in range; else `default` or NotInVocabulary."""
        if isinstance(key, str):
            row = self.index.get(key, -1)
        elif isinstance(key, (int, np.integer)):
            row = int(key) if 0 <= key < len(self) else -1
        else:
            row = -1
        if row >= 0:
            return row
        if default is not None:
            return default
        if isinstance(key, str):
            raise NotInVocabulary(f"word not in vocabulary: {str(key)!r}")
        if isinstance(key, (int, np.integer)):
            raise NotInVocabulary(f"row {key} is out of range: the vocabulary has {len(self)} words, rows 0 to "
                                  f"{len(self) - 1}")
        raise NotInVocabulary(f"{key!r} is not a word or a row number (give a str or an int)")

    def has_index_for(self, key: object) -> bool:
        """Whether `key` is a word of the vocabulary or a row number in range."""
        return isinstance(key, KEY_TYPES) and self.get_index(key, -1) >= 0

    def get_vector(self, key: str | int, norm: bool = False) -> np.ndarray:
        """A word's (or row number's) vector; `norm=True`: scaled to unit length."""
        vector = self._vector(key)
        return vector / max(float(np.linalg.norm(vector)), 1e-30) if norm else vector

    def get_normed_vectors(self) -> np.ndarray:
        """Every vector scaled to unit length, row for row."""
        return self.vectors / self._norms()[:, None]

    def _norms(self) -> np.ndarray:
        # Computed on each call: a norm per row costs about what one query does, and never goes stale when the
        # vectors are changed in place (gensim's cached norms do). A zero row scores 0, not NaN
        return np.maximum(np.linalg.norm(self.vectors, axis=1), np.float32(1e-30))

    @staticmethod
    def cosine_similarities(vector_1: np.ndarray, vectors_all: np.ndarray) -> np.ndarray:
        """The cosine of `vector_1` with each row of `vectors_all`."""
        return vectors_all @ vector_1 / (np.linalg.norm(vector_1) * np.linalg.norm(vectors_all, axis=1))

    def get_mean_vector(self, keys: Sequence[Any], weights: Optional[Sequence[float]] = None,
                        pre_normalize: bool = True, post_normalize: bool = False,
                        ignore_missing: bool = True) -> np.ndarray:
        """gensim's weighted mean of words (unit length first when `pre_normalize`) and vectors (as given),
        divided by the sum of |weights|; a missing word is skipped unless `ignore_missing=False`."""
        if len(keys) == 0:
            raise SGNSError("get_mean_vector: give at least one word or vector")
        weights = np.ones(len(keys)) if weights is None else np.asarray(weights, dtype=np.float64)
        if weights.shape != (len(keys),):
            raise SGNSError(f"get_mean_vector: {len(keys)} words or vectors but weights of shape {weights.shape}")
        total = np.zeros(self.dim, np.float32)
        total_weight = 0.0
        for key, weight in zip(keys, weights, strict=True):
            if isinstance(key, np.ndarray):
                if key.shape != (self.dim,):
                    raise SGNSError(f"a query vector must have shape ({self.dim},), not {key.shape}")
                total += weight * key
            elif self.has_vector(key) or not ignore_missing:
                total += weight * self.get_vector(key, norm=pre_normalize)
            else:
                continue
            total_weight += abs(float(weight))
        mean = total / np.float32(total_weight) if total_weight > 0 else total
        return mean / np.float32(max(float(np.linalg.norm(mean)), 1e-30)) if post_normalize else mean

    def most_similar(self, positive: Any = None, negative: Any = None, topn: Optional[int] = 10,
                     clip_start: int = 0, clip_end: Optional[int] = None, restrict_vocab: Optional[int] = None,
                     indexer: Any = None) -> List[Tuple[str, float]] | np.ndarray:
        """gensim's `most_similar`: the words closest (cosine) to the sum of positive minus negative unit
        vectors. Each of `positive` and `negative` is a word, a row number, a vector or a list of them, an item
        may be a `(key, weight)` pair; query words (not vectors) are left out of the answer. `restrict_vocab=N`
        searches the N most frequent words; `topn=None` gives every searched word's cosine as an array."""
        if indexer is not None:
            raise SGNSError("most_similar(indexer=...) (approximate search) is gensim's: use "
                            "wv.to_gensim().most_similar(..., indexer=...)")
        if isinstance(topn, Integral) and topn < 1:
            return []
        keys: List[Any] = []
        weights: List[float] = []
        for sign, items in ((1.0, _as_list(positive)), (-1.0, _as_list(negative))):
            for item in items:
                if isinstance(item, (tuple, list)) and len(item) == 2:  # gensim's (key, weight): the weight
                    keys.append(item[0])  # replaces the sign
                    weights.append(float(item[1]))
                else:
                    keys.append(item)
                    weights.append(sign)
        if not keys:
            raise SGNSError("most_similar: give at least one word or vector")
        query = self.get_mean_vector(keys, weights, pre_normalize=True, post_normalize=True, ignore_missing=False)
        if restrict_vocab:
            clip_start, clip_end = 0, restrict_vocab
        clip_end = clip_end or len(self)
        scores = self.vectors[clip_start:clip_end] @ query / self._norms()[clip_start:clip_end]
        if not topn:
            return scores
        inputs = {self.get_index(k, -1) - clip_start for k in keys if self.has_index_for(k)}
        return self._best(scores, topn, inputs, clip_start)

    def _best(self, scores: np.ndarray, topn: int, leave_out: set, offset: int = 0) -> List[Tuple[str, float]]:
        """The `topn` highest scores but those at `leave_out`, highest first (a tie: the more frequent word)."""
        wanted = min(len(scores), topn + len(leave_out))
        if wanted <= 0:
            return []
        candidates = np.argpartition(-scores, wanted - 1)[:wanted] if wanted < len(scores) else np.arange(len(scores))
        ranked = candidates[np.lexsort((candidates, -scores[candidates]))]
        best = [(self.words[i + offset], float(scores[i])) for i in ranked.tolist() if i not in leave_out]
        return best[:topn]

    def similar_by_key(self, key: str | int, topn: Optional[int] = 10,
                       restrict_vocab: Optional[int] = None) -> List[Tuple[str, float]] | np.ndarray:
        """`most_similar(positive=[key])`."""
        return self.most_similar(positive=[key], topn=topn, restrict_vocab=restrict_vocab)

    similar_by_word = similar_by_key

    def similar_by_vector(self, vector: np.ndarray, topn: Optional[int] = 10,
                          restrict_vocab: Optional[int] = None) -> List[Tuple[str, float]] | np.ndarray:
        """The words closest to a vector (a word's own vector finds that word first, as in gensim)."""
        return self.most_similar(positive=[vector], topn=topn, restrict_vocab=restrict_vocab)

    def most_similar_cosmul(self, positive: Any = None, negative: Any = None, topn: Optional[int] = 10,
                            restrict_vocab: Optional[int] = None) -> List[Tuple[str, float]] | np.ndarray:
        """3CosMul (Levy & Goldberg 2014), as gensim computes it: the product of (1 + cos) / 2 with each positive
        over that with each negative (+1e-6); query words are left out of the answer. A vector is scaled to
        unit length first (gensim uses it as given); `restrict_vocab=N` searches the N most frequent words
        (gensim 4.4 ignores it here)."""
        if isinstance(topn, Integral) and topn < 1:
            return []
        positive, negative = _as_list(positive), _as_list(negative)
        if not positive:
            raise SGNSError("most_similar_cosmul: give at least one positive word or vector")
        end = restrict_vocab or len(self)
        rows, norms = self.vectors[:end], self._norms()[:end]

        def shifted_cosines(term: Any) -> np.ndarray:
            unit = self.get_mean_vector([term], post_normalize=True, ignore_missing=False)
            return (1 + rows @ unit / norms) / 2

        scores = np.prod([shifted_cosines(t) for t in positive], axis=0) / \
            (np.prod([shifted_cosines(t) for t in negative], axis=0) + COSMUL_EPSILON)
        if not topn:
            return scores
        inputs = {self.get_index(k, -1) for k in positive + negative if self.has_index_for(k)}
        return self._best(scores, topn, inputs)

    def similarity(self, word1: str | int, word2: str | int) -> float:
        """Cosine similarity of two words."""
        a, b = self[word1].astype(np.float64), self[word2].astype(np.float64)
        return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))

    def distance(self, word1: str | int, word2: str | int) -> float:
        """Cosine distance of two words: 1 - similarity."""
        return 1 - self.similarity(word1, word2)

    def distances(self, word_or_vector: str | int | np.ndarray, other_words: Iterable[str | int] = ()) -> np.ndarray:
        """Cosine distances (1 - cosine) from a word or vector to `other_words`, or to every word in order."""
        vector = self.get_vector(word_or_vector) if isinstance(word_or_vector, KEY_TYPES) else word_or_vector
        others = list(other_words)
        rows = self[others] if others else self.vectors
        return 1 - self.cosine_similarities(np.asarray(vector), rows)

    def n_similarity(self, words1: Sequence[str | int], words2: Sequence[str | int]) -> float:
        """Cosine similarity of the means of two lists of words (raw vectors averaged, as gensim does)."""
        if not (len(words1) and len(words2)):
            raise SGNSError("n_similarity: both lists need at least one word")
        mean1 = self.get_mean_vector(words1, pre_normalize=False, ignore_missing=False)
        mean2 = self.get_mean_vector(words2, pre_normalize=False, ignore_missing=False)
        return float(self.cosine_similarities(mean1.astype(np.float64), mean2[None].astype(np.float64))[0])

    def closer_than(self, word1: str | int, word2: str | int) -> List[str]:
        """The words closer (cosine) to `word1` than `word2` is, in vocabulary order, `word1` left out."""
        distances = self.distances(word1)
        row1, row2 = self.get_index(word1), self.get_index(word2)
        return [self.words[i] for i in np.flatnonzero(distances < distances[row2]).tolist() if i != row1]

    words_closer_than = closer_than

    def rank(self, word1: str | int, word2: str | int) -> int:
        """`word2`'s place among `word1`'s neighbours: 1 + how many words are closer to `word1`."""
        return len(self.closer_than(word1, word2)) + 1

    def most_similar_to_given(self, word: str | int, candidates: Sequence[str | int]) -> str | int:
        """The one of `candidates` most similar to `word`."""
        return candidates[int(np.argmax([self.similarity(word, c) for c in candidates]))]

    def rank_by_centrality(self, words: Sequence[str], use_norm: bool = True) -> List[Tuple[float, str]]:
        """`(cosine, word)` to the mean of the words' (unit) vectors, closest first; a word not in the
        vocabulary is skipped with a warning, as gensim does."""
        used = [w for w in words if self.has_vector(w)]
        if len(used) != len(words):
            log.warning("not in the vocabulary, left out: %s", ", ".join(sorted({str(w) for w in words} -
                                                                                {str(w) for w in used})))
        if not used:
            raise SGNSError(f"none of the words is in the vocabulary: {', '.join(map(str, words)) or '(no words)'}")
        rows = np.stack([self.get_vector(w, norm=use_norm) for w in used])
        mean = rows.mean(0)
        cosines = rows @ (mean / max(float(np.linalg.norm(mean)), 1e-30))
        return sorted(zip(cosines.tolist(), used, strict=True), reverse=True)

    def doesnt_match(self, words: Sequence[str]) -> str:
        """The word furthest from the mean of the others' unit vectors (words not in the vocabulary skipped)."""
        return self.rank_by_centrality(words)[-1][1]

    def relative_cosine_similarity(self, word1: str, word2: str, topn: int = 10) -> float:
        """similarity(word1, word2) over the sum of `word1`'s `topn` nearest similarities (Leeuwenberg et al.)."""
        nearest = self.similar_by_word(word1, topn)
        if not nearest:
            raise SGNSError("relative_cosine_similarity: topn must be >= 1 and the vocabulary hold other words")
        return self.similarity(word1, word2) / sum(score for _, score in nearest)

    def evaluate(self, analogies: Sequence[str | Path] | str | Path = (),
                 similarities: Sequence[str | Path] | str | Path = (), restrict_vocab: int = 30000,
                 method: str = "3cosadd", device: str | None = None,
                 benchmarks: Optional[Sequence[str | Path] | str | Path] = None) -> Dict[str, dict]:
        """Score benchmarks as `sgns-eval` does (the same numbers), each result with its coverage: with no
        argument the English suite (Google analogies, WordSim-353, SimLex-999), keyed by benchmark name;
        `benchmarks` takes names, suites or paths; analogy and similarity files are keyed by file stem:
        `{"google": {"accuracy": ..., "coverage": ..., "sections": ...}, "ws353": {"spearman": ...}}`."""
        from sgns.evaluate import evaluate_all, standalone_config

        def as_list(files: Sequence[str | Path] | str | Path) -> List[str]:
            return [str(files)] if isinstance(files, (str, Path)) else [str(f) for f in files]

        named = as_list(benchmarks) if benchmarks is not None else None
        if named is None and not as_list(analogies) and not as_list(similarities):
            named = ["english"]
        settings = standalone_config(as_list(analogies), as_list(similarities), named or [], restrict_vocab, method)
        return evaluate_all(settings, self.words, self.vectors, device, ngrams=self.ngrams)

    def save(self, path: str | Path, binary: bool = True) -> None:
        """Write a word2vec file (binary by default), readable by gensim's `load_word2vec_format`."""
        save_word2vec(path, self.words, self.vectors, binary=binary)

    def save_word2vec_format(self, fname: str | Path, binary: bool = False) -> None:
        """gensim's name for `save`, with gensim's default (text); its other options are gensim's only."""
        self.save(fname, binary=binary)

    def to_gensim(self) -> Any:
        """A gensim KeyedVectors holding the same words, in the same order, and bit-identical vectors; a subword
        run's is gensim's FastTextKeyedVectors, which answers unseen words from the same n-gram rows."""
        try:
            from gensim.models import KeyedVectors
            from gensim.models.fasttext import FastTextKeyedVectors
        except ImportError:
            raise SGNSError("to_gensim needs gensim: pip install gensim") from None
        vectors = np.array(self.vectors, dtype=np.float32, copy=True)
        if self.ngrams is None:
            kv = KeyedVectors(vector_size=self.dim, count=0, dtype=np.float32)
            kv.add_vectors(list(self.words), vectors)
            return kv
        grams = self.ngrams
        kv = FastTextKeyedVectors(self.dim, grams.minn, grams.maxn, grams.bucket, count=0, dtype=np.float32)
        kv.vectors_ngrams = np.array(grams.table, dtype=np.float32, copy=True)
        kv.add_vectors(list(self.words), vectors)
        kv.recalc_char_ngram_buckets()  # each word's n-gram rows, hashed by gensim (the same as sgns's, tested)
        kv.vectors_vocab = self._own_rows(kv.buckets_word)
        return kv

    def _own_rows(self, buckets_word: Sequence[np.ndarray]) -> np.ndarray:
        """Each word's own input row, which gensim keeps beside the composed vector (for adjust_vectors and more
        training): the composed vector is (own row + its n-grams' rows) / (1 + n), so own = (1 + n) * vector -
        the n-grams' sum, in float64."""
        table = self.ngrams.table  # type: ignore[union-attr]
        own = np.empty_like(self.vectors, dtype=np.float32)
        block = 8192  # words at a time: their n-gram rows gathered in float64 stay a few hundred MB at most
        for lo in range(0, len(buckets_word), block):
            parts = buckets_word[lo : lo + block]
            counts = np.array([len(b) for b in parts], dtype=np.int64)
            sums = np.zeros((len(parts), own.shape[1]), dtype=np.float64)
            if counts.sum():
                rows = table[np.concatenate([np.asarray(b, dtype=np.int64) for b in parts])].astype(np.float64)
                starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
                has = counts > 0  # reduceat sums [start, next start) and needs non-empty runs
                sums[has] = np.add.reduceat(rows, starts[has], axis=0)
            composed = self.vectors[lo : lo + len(parts)].astype(np.float64)
            own[lo : lo + len(parts)] = (counts[:, None] + 1) * composed - sums
        return own

    @classmethod
    def from_gensim(cls, kv: Any) -> WordVectors:
        """WordVectors from gensim KeyedVectors (or a Word2Vec model's `.wv`), vectors copied as float32."""
        return cls(list(kv.index_to_key), np.array(kv.vectors, dtype=np.float32, copy=True), "gensim KeyedVectors")


def _as_list(keys: Any) -> List[Any]:
    """gensim's query forms as a list: None is none, a word, row number or vector is one, a matrix its rows."""
    if keys is None:
        return []
    if isinstance(keys, KEY_TYPES) or (isinstance(keys, np.ndarray) and keys.ndim == 1):
        return [keys]
    return list(keys)


def unwritable_word(words: WordList) -> Optional[str]:
    """The first word the word2vec format cannot hold (empty, or with a space or newline), None if none."""
    lengths = np.diff(words.bounds)
    separators = np.flatnonzero((words.utf8 == ord(" ")) | (words.utf8 == ord("\n")))
    empty = np.flatnonzero(lengths == 0)
    found = [int(empty[0])] if len(empty) else []
    if len(separators):
        found.append(int(np.searchsorted(words.bounds, separators[0], side="right")) - 1)
    return words[min(found)] if found else None


def save_word2vec(path: str | Path, words: Sequence[str], vectors: np.ndarray, binary: bool = True) -> None:
    """Write `V D` then one word per row; binary rows are `word<space><D float32 LE>\\n` (the C tool's)."""
    path = Path(path)
    if path.exists() and not path.is_file() and not path.is_dir():  # a folder: os.replace below says so
        raise SGNSError(f"cannot write {path}: it exists and is not a regular file (a device or a FIFO), which "
                        f"writing the vectors would replace")
    vectors = np.ascontiguousarray(vectors, dtype="<f4")
    if vectors.ndim != 2 or len(vectors) != len(words):
        raise SGNSError(f"cannot write {path}: {len(words)} words but vectors of shape {vectors.shape}")
    unwritable = (unwritable_word(words) if isinstance(words, WordList)
                  else next((w for w in words if not w or " " in w or "\n" in w), None))
    if unwritable is not None:
        raise SGNSError(f"cannot write {path}: word {unwritable!r} is empty or holds a space or newline, which the "
                        f"word2vec format cannot represent")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(f"{len(words)} {vectors.shape[1]}\n".encode())
            if binary and isinstance(words, WordList):  # a run's vocabulary: each word's bytes as they are held
                for block in range(0, len(words), BINARY_BLOCK_ROWS):  # a block at a time: no list of 2M ints
                    bounds = words.bounds[block : block + BINARY_BLOCK_ROWS + 1]
                    utf8, ends = words.utf8[bounds[0] : bounds[-1]].tobytes(), (bounds - bounds[0]).tolist()
                    for start, end, row in zip(ends[:-1], ends[1:], vectors[block : block + len(ends) - 1],
                                               strict=True):
                        f.write(utf8[start:end] + b" " + row.tobytes() + b"\n")
            elif binary:
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
                        f"found {header[:24]!r}") from None
    if count < 0 or dim <= 0:
        raise SGNSError(f"{path} is not a word2vec file: bad header {header[:40]!r}")
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
