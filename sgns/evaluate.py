"""Evaluation: word analogies (3CosAdd / 3CosMul), word-pair similarity and nearest neighbours, as gensim does.

Analogies follow `KeyedVectors.evaluate_word_analogies` step by step: words are uppercased; the first
(most frequent) spelling among the `restrict_vocab` most frequent words stands for each uppercased key; a
question with any word outside that set is skipped and counted as out-of-vocabulary; the answer is searched
among those words only, a, b and c themselves are removed, and of the 5 best remaining candidates the
first whose uppercased form is not A, B or C is the prediction (so "Paris" is not an answer to a question
about "PARIS" either). Similarity follows `evaluate_word_pairs`: Spearman and Pearson of cosine against
the human score over the pairs with both words known. Everything is batched matrix work on the device
the vectors live on (or the one given), so a 30k-word evaluation costs a few matrix products.

Subword vectors (an EvalSuite given `ngrams`): a benchmark word outside the vocabulary that has character n-grams
is answered from them (the mean of its n-grams' rows, as fastText gives an unseen word) instead of being skipped;
each result counts those words in `ngram_words`. For analogies, such a word (or a vocabulary word outside the
`restrict_vocab` candidates) may be one of a, b and c; the answer d is still searched among the candidates only.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from sgns.benchmarks import ANALOGY, SIMILARITY, Entry, default_names, expand
from sgns.config import ANALOGY_METHODS, RESTRICT_VOCAB, EvalConfig
from sgns.errors import SGNSError

Question = Tuple[str, str, str, str]
ANALOGY_CANDIDATES = 5  # gensim asks most_similar for 5 answers and takes the first not a variant of a, b, c
SIMILARITY_RESTRICT_VOCAB = 300000  # evaluate_word_pairs' default
SCORE_BLOCK_ELEMENTS = 1 << 25  # questions x vocabulary scores held at once (128 MiB of float32)
METHODS = ANALOGY_METHODS  # eval.method values
SAMPLE_SEED = 0  # the questions a point during training scores are the same at every point and in every run


def _read_lines(path: str | Path) -> List[str]:
    p = Path(path)
    if not p.is_file():
        raise SGNSError(f"evaluation file not found: {p}")
    # universal newlines, then only \n splits: a word may hold other Unicode line separators
    return p.read_text(encoding="utf-8", errors="replace").split("\n")


def _file_key(path: str | Path) -> Tuple[str, int, int]:
    p = Path(path)
    if not p.is_file():
        raise SGNSError(f"evaluation file not found: {p}")
    st = p.stat()
    return str(p.resolve()), st.st_mtime_ns, st.st_size


def load_analogies(path: str | Path) -> Tuple[List[Tuple[str, List[Question]]], int]:
    """Sections of uppercased (a, b, c, d) questions from a questions-words file, and the malformed-line count.

    `: name` starts a section; other non-blank lines must hold exactly four words (gensim skips the rest too).
    """
    sections, malformed = _load_analogies_cached(*_file_key(path))
    return [(name, list(qs)) for name, qs in sections], malformed


@lru_cache(maxsize=16)
def _load_analogies_cached(path: str, mtime_ns: int, size: int) -> Tuple[Tuple[Tuple[str, Tuple[Question, ...]],
                                                                               ...], int]:
    sections: List[Tuple[str, List[Question]]] = []
    malformed = 0
    for line in _read_lines(path):
        if line.startswith(":"):
            sections.append((line.lstrip(": ").strip(), []))
            continue
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 4:
            malformed += 1
            continue
        if not sections:
            sections.append(("(no section)", []))
        sections[-1][1].append(tuple(w.upper() for w in parts))  # type: ignore[arg-type]
    return tuple((name, tuple(qs)) for name, qs in sections), malformed


def load_pairs(path: str | Path) -> Tuple[List[Tuple[str, str, float]], int]:
    """Uppercased (word1, word2, score) rows of a tab-separated similarity file, and the malformed-line count.

    Lines starting with `#` are comments; a line that is not `word TAB word TAB number` is malformed.
    """
    rows, malformed = _load_pairs_cached(*_file_key(path))
    return list(rows), malformed


@lru_cache(maxsize=16)
def _load_pairs_cached(path: str, mtime_ns: int, size: int) -> Tuple[Tuple[Tuple[str, str, float], ...], int]:
    rows: List[Tuple[str, str, float]] = []
    malformed = 0
    for line in _read_lines(path):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        try:
            a, b, score = parts
            value = float(score)
        except ValueError:
            malformed += 1
            continue
        if not math.isfinite(value):
            malformed += 1
            continue
        rows.append((a.upper(), b.upper(), value))
    return tuple(rows), malformed


def _as_tensor(vectors: np.ndarray | torch.Tensor, device: str | torch.device | None) -> torch.Tensor:
    if isinstance(vectors, torch.Tensor):
        return vectors.detach().to(device=device or vectors.device, dtype=torch.float32)
    return torch.as_tensor(np.asarray(vectors), dtype=torch.float32, device=device or "cpu")


def _unit(vectors: torch.Tensor) -> torch.Tensor:
    return vectors / vectors.norm(dim=1, keepdim=True).clamp_min(1e-12)


@dataclass
class NgramWords:
    """Benchmark words outside the vocabulary answered from their n-grams, read once against a vocabulary: word
    j's vector is the mean of bucket rows rows[offsets[j]:offsets[j + 1]], and it stands at row n_words + j."""

    n_words: int  # vocabulary size: the composed words' rows come after the vocabulary's
    index: Dict[str, int]  # uppercased benchmark word -> its row (n_words + j)
    spellings: List[str]  # the spelling composed, per word j
    offsets: np.ndarray  # (E + 1,) int64
    rows: np.ndarray  # bucket rows (int64), flat

    def __len__(self) -> int:
        return len(self.spellings)

    def vectors(self, ngram_table: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
        """(E, dim) float32 on `device`: each word's mean of its n-grams' rows in `ngram_table` (bucket x dim)."""
        if isinstance(ngram_table, torch.Tensor):
            gathered = ngram_table.detach()[torch.from_numpy(self.rows).to(ngram_table.device)].to(device,
                                                                                               torch.float32)
        else:  # a numpy table may be a memory map of a whole checkpoint: only these rows are read
            gathered = torch.as_tensor(np.asarray(ngram_table[self.rows], dtype=np.float32), device=device)
        counts = torch.from_numpy(np.diff(self.offsets)).to(device)
        bag = torch.repeat_interleave(torch.arange(len(counts), device=device), counts)
        sums = torch.zeros((len(counts), gathered.shape[1]), device=device).index_add_(0, bag, gathered)
        return sums / counts.unsqueeze(1).to(torch.float32)


def ngram_words(words: Sequence[str], paths: Sequence[str | Path], minn: int, maxn: int, bucket: int,
                known: Dict[str, int]) -> NgramWords:
    """The words of the benchmark files `paths` that `known` (uppercased vocabulary) lacks and that have n-grams.

    Each is composed from its first spelling in the files, lowercased when the vocabulary is (a lowercased
    corpus never saw the capital letters' n-grams)."""
    from sgns.subwords import fasttext_hash, ngrams

    lowercase = all(w == w.lower() for w in words[:10000])
    index: Dict[str, int] = {}
    spellings: List[str] = []
    offsets = [0]
    rows: List[int] = []
    for path in paths:
        for upper, spelling in _spellings(*_file_key(path)).items():
            if upper in known or upper in index:
                continue
            spelling = spelling.lower() if lowercase else spelling
            hashed = [fasttext_hash(g) % bucket for g in ngrams(spelling, minn, maxn)]
            if not hashed:
                continue
            index[upper] = len(words) + len(spellings)
            spellings.append(spelling)
            rows.extend(hashed)
            offsets.append(len(rows))
    return NgramWords(len(words), index, spellings, np.asarray(offsets, dtype=np.int64),
                      np.asarray(rows, dtype=np.int64))


@lru_cache(maxsize=16)
def _spellings(path: str, mtime_ns: int, size: int) -> Dict[str, str]:
    """Uppercased word -> its first spelling in a benchmark file (analogy or tab-separated similarity)."""
    found: Dict[str, str] = {}
    for line in _read_lines(path):
        if line.startswith((":", "#")):
            continue
        parts = line.split("\t")[:2] if "\t" in line else line.split()
        for w in parts:
            w = w.strip()
            if w:
                found.setdefault(w.upper(), w)
    return found


def _take(vectors: torch.Tensor, composed: Optional[torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
    """Rows `ids` of the vocabulary's vectors followed by the composed words' (never the two concatenated)."""
    if composed is None or not len(composed):
        return vectors[ids]
    n = len(vectors)
    out = vectors.new_empty((*ids.shape, vectors.shape[1]))
    own = ids < n
    out[own] = vectors[ids[own]]
    out[~own] = composed[ids[~own] - n]
    return out


def upper_index(words: Sequence[str], limit: int) -> Dict[str, int]:
    """Uppercased word -> index among the first `limit` words; the first (most frequent) spelling wins."""
    index: Dict[str, int] = {}
    for i, w in enumerate(words[:limit]):
        index.setdefault(w.upper(), i)
    return index


def _solve(unit: torch.Tensor, canonical: torch.Tensor, ids: torch.Tensor, method: str) -> torch.Tensor:
    """Which of the questions `ids` (Q, 4 canonical indices) are answered right, as a (Q,) bool tensor."""
    n = len(canonical)  # candidates are unit's first n rows; rows after them are other words a, b or c may be
    candidates = unit[:n]
    if method == "3cosmul":  # Levy & Goldberg's eq. 4 with cosines shifted to [0, 1], epsilon 1e-6 (gensim's)
        q = len(ids)
        shifted = (unit[ids[:, :3].T.reshape(-1)] @ candidates.T).add_(1).mul_(0.5)  # rows: all a, then b, then c
        scores = shifted[q : 2 * q].mul_(shifted[2 * q :]).div_(shifted[:q].add_(1e-6))
    else:  # 3CosAdd: cosine with b - a + c (its norm does not change the ranking)
        scores = (unit[ids[:, 1]] + unit[ids[:, 2]] - unit[ids[:, 0]]) @ candidates.T
    # a, b, c themselves are never returned (one outside the candidates is never a candidate anyway)
    if len(unit) == n:
        scores.scatter_(1, ids[:, :3], float("-inf"))
    else:
        _exclude(scores, ids[:, :3], n)
    # The best candidate is the prediction unless it is a case variant of a, b or c (only a mixed-case
    # vocabulary has those): a max per row, and gensim's walk down the top 5 only for the rows that need it.
    best_scores, best = scores.max(dim=1)
    best_keys = canonical[best]
    walk = (best_keys[:, None] == ids[:, :3]).any(1) | (best_scores == float("-inf"))
    right = (best_keys == ids[:, 3]) & ~walk
    rows = walk.nonzero().squeeze(1)
    if len(rows):
        right[rows] = _walk_top(scores[rows], canonical, ids[rows])
    return right


def _exclude(scores: torch.Tensor, abc: torch.Tensor, n: int) -> None:
    """scores[q, w] = -inf for each question's a, b and c that are candidates (index below n)."""
    question, column = (abc < n).nonzero(as_tuple=True)
    scores[question, abc[question, column]] = float("-inf")


def _walk_top(scores: torch.Tensor, canonical: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """gensim's rule on the 5 best candidates: the first whose uppercased form is not A, B or C is the answer."""
    top_scores, top = scores.topk(min(ANALOGY_CANDIDATES, scores.shape[1]), dim=1)
    valid = top_scores > float("-inf")  # fewer real candidates than 5 only in a tiny vocabulary
    top_keys = canonical[top]
    variant = (top_keys[:, :, None] == ids[:, None, :3]).any(-1)  # uppercases to A, B or C
    usable = valid & ~variant
    # gensim keeps the first usable candidate; with none, the last one it looked at stays the prediction
    position = torch.where(usable.any(1), usable.int().argmax(1), (valid.sum(1) - 1).clamp_min(0))
    predicted = top_keys.gather(1, position[:, None]).squeeze(1)
    return (predicted == ids[:, 3]) & valid.any(1)


@dataclass
class PreparedAnalogies:
    """An analogy file read against one vocabulary, once: its known questions as canonical indices.

    A run's vocabulary does not change while it trains, so every evaluation point only does the matrix work.
    """

    restrict_vocab: int
    n: int  # candidate words: the first min(restrict_vocab, vocabulary) words
    canonical: torch.Tensor  # (n,) the index of each candidate's first (most frequent) uppercased spelling
    ids: torch.Tensor  # (Q, 4) canonical indices of the known questions, in file order
    owner: np.ndarray  # (Q,) the section index of each known question
    sections: List[str]  # section names, repeated names made unique
    totals: List[int]  # questions per section
    seen: List[int]  # known questions per section
    malformed: int
    sample: Optional[np.ndarray] = None  # question rows scored at points during training (None: all)
    outside: Optional[torch.Tensor] = None  # (ngrams) rows of the words a, b, c that are not candidates: ids n + k
    ngram_words: int = 0  # (ngrams) distinct words of the known questions answered from their n-grams

    @property
    def coverage(self) -> float:
        total = sum(self.totals)
        return len(self.ids) / total if total else 0.0


def prepare_analogies(words: Sequence[str], path: str | Path, restrict_vocab: int = RESTRICT_VOCAB,
                      sample: int = 0, ngrams: Optional[NgramWords] = None) -> PreparedAnalogies:
    """Read `path` against `words`; `sample` > 0 also picks that many questions (seeded, fixed) for cheap points.
    With `ngrams`, a, b and c may also be other vocabulary words and words answered from n-grams."""
    if restrict_vocab < 1:
        raise SGNSError(f"restrict_vocab={restrict_vocab} is out of range: must be >= 1")
    sections, malformed = load_analogies(path)
    index = upper_index(words, restrict_vocab)
    n = min(restrict_vocab, len(words))
    outside: Dict[str, int] = {}  # uppercased word -> its id n + k, with its row in `outside_rows`
    outside_rows: List[int] = []
    if ngrams is not None:
        vocabulary = upper_index(words, len(words))

        def row_of(word: str) -> Optional[int]:
            found = vocabulary.get(word, ngrams.index.get(word))
            if found is None:
                return None
            if word not in outside:
                outside[word] = n + len(outside_rows)
                outside_rows.append(found)
            return outside[word]

        def ids_of(q: Question) -> Optional[List[int]]:
            if q[3] not in index:
                return None
            found = [index[w] if w in index else row_of(w) for w in q[:3]]
            return None if None in found else [*found, index[q[3]]]  # type: ignore[list-item]
    else:
        def ids_of(q: Question) -> Optional[List[int]]:
            return [index[w] for w in q] if all(w in index for w in q) else None
    names: List[str] = []
    totals: List[int] = []
    seen: List[int] = []
    known_ids: List[List[int]] = []
    owner: List[int] = []
    for name, questions in sections:
        base_name, k = name, 2
        while name in names:  # a repeated section name: keep both apart
            name, k = f"{base_name} ({k})", k + 1
        known = [found for found in map(ids_of, questions) if found is not None]
        owner.extend([len(names)] * len(known))
        names.append(name)
        totals.append(len(questions))
        seen.append(len(known))
        known_ids.extend(known)
    canonical = torch.tensor([index[w.upper()] for w in words[:n]], dtype=torch.long)
    ids = torch.tensor(known_ids, dtype=torch.long).reshape(-1, 4)
    picked = None
    if 0 < sample < len(ids):
        picked = np.sort(np.random.default_rng(SAMPLE_SEED).choice(len(ids), sample, replace=False))
    composed = {int(k) for k in ids[:, :3].unique().tolist() if k >= n and outside_rows[k - n] >= len(words)}
    return PreparedAnalogies(restrict_vocab, n, canonical, ids, np.array(owner, dtype=np.int64), names, totals,
                             seen, malformed, picked,
                             torch.tensor(outside_rows, dtype=torch.long) if ngrams is not None else None,
                             len(composed))


def score_analogies(prepared: PreparedAnalogies, vectors: np.ndarray | torch.Tensor, method: str = "3cosadd",
                    device: str | torch.device | None = None, sampled: bool = False,
                    composed: Optional[torch.Tensor] = None) -> Dict[str, Any]:
    """Score prepared questions on `vectors`; `sampled`: only the prepared sample (accuracy over it); `composed`:
    the vectors of the words answered from n-grams (rows len(vectors) onwards)."""
    if method not in METHODS:
        raise SGNSError(f"unknown analogy method {method!r}: use {' or '.join(METHODS)}")
    p = prepared
    rows = p.sample if sampled and p.sample is not None else None
    ids = p.ids if rows is None else p.ids[torch.from_numpy(rows)]
    owner = p.owner if rows is None else p.owner[rows]
    correct = np.zeros(len(p.sections), dtype=np.int64)
    asked = np.bincount(owner, minlength=len(p.sections)) if len(owner) else np.zeros(len(p.sections), np.int64)
    if len(ids):
        base = _as_tensor(vectors[: p.n], device)
        if p.outside is not None and len(p.outside):
            table = _as_tensor(vectors, device)
            base = torch.cat([base, _take(table, composed, p.outside.to(table.device))])
        unit = _unit(base)
        canonical = p.canonical.to(unit.device)
        all_ids = ids.to(unit.device)
        block = max(1, SCORE_BLOCK_ELEMENTS // max(p.n, 1) // (3 if method == "3cosmul" else 1))
        right = torch.cat([_solve(unit, canonical, all_ids[s : s + block], method)
                           for s in range(0, len(all_ids), block)]).cpu().numpy()
        correct = np.bincount(owner, weights=right, minlength=len(p.sections)).astype(np.int64)
    per_section: Dict[str, Dict[str, Any]] = {}
    for i, name in enumerate(p.sections):
        s_seen = int(asked[i])
        per_section[name] = {"correct": int(correct[i]), "seen": s_seen, "total": p.totals[i],
                             "accuracy": int(correct[i]) / s_seen if s_seen else 0.0}

    def pooled(names: List[str]) -> Tuple[float, int, int]:
        seen = sum(per_section[x]["seen"] for x in names)
        right = sum(per_section[x]["correct"] for x in names)
        return (right / seen if seen else 0.0), right, seen

    syntactic = [x for x in per_section if x.startswith("gram")]  # the Google set's naming: gramN-... sections
    semantic = [x for x in per_section if not x.startswith("gram")]
    total = sum(p.totals)
    seen = int(asked.sum())
    right_total = int(correct.sum())
    semantic_accuracy, semantic_correct, semantic_seen = pooled(semantic)
    syntactic_accuracy, syntactic_correct, syntactic_seen = pooled(syntactic)
    result = {
        "accuracy": right_total / seen if seen else 0.0,
        "correct": right_total,
        "seen": seen,
        "total": total,
        "oov": total - len(p.ids),
        "coverage": p.coverage,
        "semantic_accuracy": semantic_accuracy,
        "semantic_correct": semantic_correct,
        "semantic_seen": semantic_seen,
        "syntactic_accuracy": syntactic_accuracy,
        "syntactic_correct": syntactic_correct,
        "syntactic_seen": syntactic_seen,
        "malformed_lines": p.malformed,
        "method": method,
        "sections": per_section,
    }
    if p.outside is not None:
        result["ngram_words"] = p.ngram_words  # words of the known questions answered from their n-grams
    if rows is not None:
        result["sampled"] = len(rows)  # a point during training: accuracy over this fixed sample of the known
    return result


def evaluate_analogies(words: Sequence[str], vectors: np.ndarray | torch.Tensor, path: str | Path,
                       restrict_vocab: int = RESTRICT_VOCAB, method: str = "3cosadd",
                       device: str | torch.device | None = None) -> Dict[str, Any]:
    """Score a questions-words file; accuracy is over the questions with all four words known (gensim's)."""
    if method not in METHODS:
        raise SGNSError(f"unknown analogy method {method!r}: use {' or '.join(METHODS)}")
    return score_analogies(prepare_analogies(words, path, restrict_vocab), vectors, method, device)


@dataclass
class PreparedPairs:
    """A similarity file read against one vocabulary: the known pairs' indices and human scores."""

    ids: torch.Tensor  # (P, 2)
    gold: np.ndarray  # (P,) float64
    total: int
    malformed: int
    ngram_words: Optional[int] = None  # (ngrams) distinct words of the known pairs answered from their n-grams

    @property
    def coverage(self) -> float:
        return len(self.ids) / self.total if self.total else 0.0


def prepare_pairs(words: Sequence[str], path: str | Path, restrict_vocab: int = SIMILARITY_RESTRICT_VOCAB,
                  ngrams: Optional[NgramWords] = None) -> PreparedPairs:
    rows, malformed = load_pairs(path)
    index = upper_index(words, restrict_vocab)
    if ngrams is not None:
        index = {**ngrams.index, **index}
    known = [(index[a], index[b], s) for a, b, s in rows if a in index and b in index]
    ids = torch.tensor([(a, b) for a, b, _ in known], dtype=torch.long).reshape(-1, 2)
    composed = None if ngrams is None else int((ids.unique() >= len(words)).sum())
    return PreparedPairs(ids, np.array([s for _, _, s in known], dtype=np.float64), len(rows), malformed, composed)


def score_pairs(prepared: PreparedPairs, vectors: np.ndarray | torch.Tensor,
                device: str | torch.device | None = None, composed: Optional[torch.Tensor] = None) -> Dict[str, Any]:
    """Spearman and Pearson of cosine vs the human score over the prepared pairs (`composed`: the vectors of the
    words answered from n-grams, rows len(vectors) onwards)."""
    p = prepared
    known = len(p.ids)
    result: Dict[str, Any] = {"pairs": known, "total": p.total,
                              "oov_ratio": (p.total - known) / p.total if p.total else 0.0,
                              "coverage": p.coverage, "malformed_lines": p.malformed, "spearman": None,
                              "pearson": None}
    if p.ngram_words is not None:
        result["ngram_words"] = p.ngram_words  # words of the known pairs answered from their n-grams
    if known >= 2:
        table = _as_tensor(vectors, device)
        ids = p.ids.to(table.device)
        pairs = _take(table, composed, ids)
        cosine = (_unit(pairs[:, 0]) * _unit(pairs[:, 1])).sum(1).cpu().numpy().astype(np.float64)
        if np.ptp(p.gold) > 0 and np.ptp(cosine) > 0:  # a constant side has no correlation (scipy: nan + warning)
            result["spearman"] = _pearson(_average_ranks(p.gold), _average_ranks(cosine))
            result["pearson"] = _pearson(p.gold, cosine)
    return result


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank (scipy's rankdata 'average', which Spearman's rho uses).
    Done here, not by scipy.stats: importing it took 2 s of the first evaluation point on a busy machine."""
    order = np.argsort(x, kind="mergesort")
    ordered = x[order]
    starts = np.r_[True, ordered[1:] != ordered[:-1]]  # the first of each run of equal values
    first = np.flatnonzero(starts)
    average = first + (np.diff(np.r_[first, len(x)]) - 1) / 2.0 + 1
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = average[np.cumsum(starts) - 1]
    return ranks


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float(np.clip(a @ b / math.sqrt((a @ a) * (b @ b)), -1.0, 1.0))


def evaluate_similarity(words: Sequence[str], vectors: np.ndarray | torch.Tensor, path: str | Path,
                        restrict_vocab: int = SIMILARITY_RESTRICT_VOCAB,
                        device: str | torch.device | None = None) -> Dict[str, Any]:
    """Spearman and Pearson of cosine vs the human score; `oov_ratio` is a fraction (gensim prints percent)."""
    return score_pairs(prepare_pairs(words, path, restrict_vocab), vectors, device)


def nearest(words: Sequence[str], vectors: np.ndarray | torch.Tensor, positive: Sequence[str] | str,
            negative: Sequence[str] | str = (), topn: int = 10) -> List[Tuple[str, float]]:
    """Words closest (cosine) to sum(positive) - sum(negative) of unit vectors, inputs excluded.

    `nearest(words, v, "king")` are king's neighbours; `nearest(words, v, ["king", "woman"], ["man"])` is
    the `king - man + woman` query (gensim's most_similar).
    """
    positive = [positive] if isinstance(positive, str) else list(positive)
    negative = [negative] if isinstance(negative, str) else list(negative)
    if not positive:
        raise SGNSError("nearest: give at least one positive word")
    index: Dict[str, int] = {}
    for i, w in enumerate(words):
        index.setdefault(w, i)
    for w in [*positive, *negative]:
        if w not in index:
            raise SGNSError(f"word not in vocabulary: {w!r}")
    unit = _unit(_as_tensor(vectors, None))
    query = unit[[index[w] for w in positive]].sum(0)
    if negative:
        query = query - unit[[index[w] for w in negative]].sum(0)
    scores = unit @ (query / query.norm().clamp_min(1e-12))
    inputs = {index[w] for w in [*positive, *negative]}
    scores[list(inputs)] = float("-inf")
    top = scores.topk(max(0, min(topn, len(words) - len(inputs))))
    return [(words[i], float(s)) for s, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)]


class EvalSuite:
    """The benchmarks of one evaluation config read against one vocabulary, once; `score` evaluates vectors.

    The entries are, in order: `analogies` files, `similarities` files, then `benchmarks` (names, suites or
    paths; null is auto: the English suite unless the corpus is the synthetic one). A file given twice (the same
    bytes under two names) is scored once, under its first name. A benchmark chosen by name whose coverage is
    below `min_coverage` is skipped (a non-English or differently normalised corpus): `skipped` holds its
    coverage, and `log` gets one line. `enabled=false` (eval=none) scores nothing.

    `ngrams` = (minn, maxn, bucket) of subword vectors: benchmark words outside the vocabulary are answered from
    their n-grams (`score` then needs the n-gram rows, `ngram_table`), and `log` gets how many.
    """

    def __init__(self, cfg: EvalConfig, words: Sequence[str], corpus_kind: Optional[str] = None,
                 log: Optional[Callable[[str], None]] = None,
                 ngrams: Optional[Tuple[int, int, int]] = None) -> None:
        self.restrict_vocab = int(cfg.restrict_vocab)
        self.method = str(cfg.method)
        if self.method not in METHODS:
            raise SGNSError(f"unknown analogy method {self.method!r}: use {' or '.join(METHODS)}")
        min_coverage = float(cfg.min_coverage)
        sample = int(cfg.sample_questions or 0)
        self.prepared: Dict[str, Tuple[str, Any]] = {}  # name -> (kind, prepared)
        self.skipped: Dict[str, float] = {}  # name -> coverage
        self.ngrams: Optional[NgramWords] = None  # the benchmark words answered from n-grams
        if not cfg.enabled:
            return
        named = cfg.benchmarks
        if named is None:
            named = default_names(corpus_kind) if corpus_kind is not None else []
        entries = ([Entry(Path(p).stem, ANALOGY, str(p), False) for p in cfg.analogies]
                   + [Entry(Path(p).stem, SIMILARITY, str(p), False) for p in cfg.similarities] + expand(named))
        digests: set = set()
        unique = []
        for entry in entries:
            digest = _file_digest(entry.path)
            if digest not in digests:
                digests.add(digest)
                unique.append(entry)
        if ngrams is not None and ngrams[1] >= ngrams[0] >= 1 and ngrams[2] >= 1 and unique:
            self.ngrams = ngram_words(words, [e.path for e in unique], *ngrams, upper_index(words, len(words)))
        for entry in unique:
            if entry.kind == ANALOGY:
                prepared: Any = prepare_analogies(words, entry.path, self.restrict_vocab, sample, self.ngrams)
            else:
                prepared = prepare_pairs(words, entry.path, ngrams=self.ngrams)
            name, k = entry.name, 2
            while name in self.prepared or name in self.skipped:  # two files with one stem: `<stem>-2`
                name, k = f"{entry.name}-{k}", k + 1
            if entry.by_name and prepared.coverage < min_coverage:
                self.skipped[name] = prepared.coverage
                if log is not None:
                    unit = "questions" if entry.kind == ANALOGY else "pairs"
                    log(f"eval: {name} skipped: {prepared.coverage:.1%} of its {unit} are in the vocabulary, under "
                        f"eval.min_coverage={min_coverage:g} (a non-English or differently normalised corpus?)")
                continue
            self.prepared[name] = (entry.kind, prepared)
        if self.ngrams is not None and log is not None and self.prepared:
            counts = ", ".join(f"{name} {prepared.ngram_words}" for name, (_, prepared) in self.prepared.items())
            log(f"eval: benchmark words outside the vocabulary answered from their n-grams: {counts}")

    def __bool__(self) -> bool:
        return bool(self.prepared)

    def score(self, vectors: np.ndarray | torch.Tensor, device: str | torch.device | None = None,
              sampled: bool = False, ngram_table: np.ndarray | torch.Tensor | None = None) -> Dict[str, dict]:
        """Every benchmark on `vectors` (rows in the vocabulary's order); `sampled`: analogy files on their
        fixed sample of questions (a point during training), the rest whole; `ngram_table` (bucket x dim): the
        n-gram rows, needed when the suite answers words from n-grams."""
        composed = None
        if self.ngrams is not None and len(self.ngrams):
            if ngram_table is None:
                raise SGNSError("this evaluation answers words from n-grams: give score() the n-gram rows "
                                "(ngram_table)")
            composed = self.ngrams.vectors(ngram_table, _as_tensor(vectors[:1], device).device)
        results: Dict[str, dict] = {}
        for name, (kind, prepared) in self.prepared.items():
            if kind == ANALOGY:
                results[name] = score_analogies(prepared, vectors, self.method, device, sampled, composed)
            else:
                results[name] = score_pairs(prepared, vectors, device, composed)
        return results


def _file_digest(path: str | Path) -> str:
    return _digest_cached(*_file_key(path))


@lru_cache(maxsize=64)
def _digest_cached(path: str, mtime_ns: int, size: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def standalone_config(analogies: Sequence[str] = (), similarities: Sequence[str] = (),
                      benchmarks: Sequence[str] = (), restrict_vocab: int = RESTRICT_VOCAB,
                      method: str = "3cosadd") -> EvalConfig:
    """The `eval` settings of an evaluation outside a run (`sgns-eval`, `WordVectors.evaluate`): every question
    scored (no sample), and no benchmark skipped for its coverage (the table shows it instead)."""
    return EvalConfig(analogies=[str(p) for p in analogies], similarities=[str(p) for p in similarities],
                      benchmarks=[str(b) for b in benchmarks], restrict_vocab=restrict_vocab, method=method,
                      min_coverage=0.0, sample_questions=0)


def evaluate_all(cfg: EvalConfig, words: Sequence[str], vectors: np.ndarray | torch.Tensor,
                 device: str | torch.device | None = None, corpus_kind: Optional[str] = None,
                 ngrams: Any = None) -> Dict[str, dict]:
    """Every benchmark of the `eval` config group (files keyed by stem, named benchmarks by name); `ngrams`
    (sgns.vectors.NgramVectors): words outside the vocabulary answered from their n-grams."""
    if ngrams is None:
        return EvalSuite(cfg, words, corpus_kind).score(vectors, device)
    suite = EvalSuite(cfg, words, corpus_kind, ngrams=(ngrams.minn, ngrams.maxn, ngrams.bucket))
    return suite.score(vectors, device, ngram_table=ngrams.table)
