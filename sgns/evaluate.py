"""Evaluation: word analogies (3CosAdd / 3CosMul), word-pair similarity and nearest neighbours, as gensim does.

Analogies follow `KeyedVectors.evaluate_word_analogies` step by step: words are uppercased; the first
(most frequent) spelling among the `restrict_vocab` most frequent words stands for each uppercased key; a
question with any word outside that set is skipped and counted as out-of-vocabulary; the answer is searched
among those words only, a, b and c themselves are removed, and of the 5 best remaining candidates the
first whose uppercased form is not A, B or C is the prediction (so "Paris" is not an answer to a question
about "PARIS" either). Similarity follows `evaluate_word_pairs`: Spearman and Pearson of cosine against
the human score over the pairs with both words known. Everything is batched matrix work on the device
the vectors live on (or the one given), so a 30k-word evaluation costs a few matrix products.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import torch

from sgns.config import ANALOGY_METHODS, RESTRICT_VOCAB
from sgns.errors import SGNSError

Question = Tuple[str, str, str, str]
ANALOGY_CANDIDATES = 5  # gensim asks most_similar for 5 answers and takes the first not a variant of a, b, c
SIMILARITY_RESTRICT_VOCAB = 300000  # evaluate_word_pairs' default
SCORE_BLOCK_ELEMENTS = 1 << 25  # questions x vocabulary scores held at once (128 MiB of float32)
METHODS = ANALOGY_METHODS  # eval.method values


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


def upper_index(words: Sequence[str], limit: int) -> Dict[str, int]:
    """Uppercased word -> index among the first `limit` words; the first (most frequent) spelling wins."""
    index: Dict[str, int] = {}
    for i, w in enumerate(words[:limit]):
        index.setdefault(w.upper(), i)
    return index


def _solve(unit: torch.Tensor, canonical: torch.Tensor, ids: torch.Tensor, method: str) -> torch.Tensor:
    """Which of the questions `ids` (Q, 4 canonical indices) are answered right, as a (Q,) bool tensor."""
    if method == "3cosmul":  # Levy & Goldberg's eq. 4 with cosines shifted to [0, 1], epsilon 1e-6 (gensim's)
        q = len(ids)
        shifted = (unit[ids[:, :3].T.reshape(-1)] @ unit.T).add_(1).mul_(0.5)  # rows: all a, then b, then c
        scores = shifted[q : 2 * q].mul_(shifted[2 * q :]).div_(shifted[:q].add_(1e-6))
    else:  # 3CosAdd: cosine with b - a + c (its norm does not change the ranking)
        scores = (unit[ids[:, 1]] + unit[ids[:, 2]] - unit[ids[:, 0]]) @ unit.T
    scores.scatter_(1, ids[:, :3], float("-inf"))  # a, b, c themselves are never returned
    top_scores, top = scores.topk(min(ANALOGY_CANDIDATES, scores.shape[1]), dim=1)
    valid = top_scores > float("-inf")  # fewer real candidates than 5 only in a tiny vocabulary
    top_keys = canonical[top]
    variant = (top_keys[:, :, None] == ids[:, None, :3]).any(-1)  # uppercases to A, B or C
    usable = valid & ~variant
    # gensim keeps the first usable candidate; with none, the last one it looked at stays the prediction
    position = torch.where(usable.any(1), usable.int().argmax(1), (valid.sum(1) - 1).clamp_min(0))
    predicted = top_keys.gather(1, position[:, None]).squeeze(1)
    return (predicted == ids[:, 3]) & valid.any(1)


def evaluate_analogies(words: Sequence[str], vectors: np.ndarray | torch.Tensor, path: str | Path,
                       restrict_vocab: int = RESTRICT_VOCAB, method: str = "3cosadd",
                       device: str | torch.device | None = None) -> Dict[str, Any]:
    """Score a questions-words file; accuracy is over the questions with all four words known (gensim's)."""
    if method not in METHODS:
        raise SGNSError(f"unknown analogy method {method!r}: use {' or '.join(METHODS)}")
    if restrict_vocab < 1:
        raise SGNSError(f"restrict_vocab={restrict_vocab} is out of range: must be >= 1")
    sections, malformed = load_analogies(path)
    index = upper_index(words, restrict_vocab)
    n = min(restrict_vocab, len(words))
    per_section: Dict[str, Dict[str, Any]] = {}
    known_ids: List[List[int]] = []
    owners: List[str] = []
    for name, questions in sections:
        base_name, k = name, 2
        while name in per_section:  # a repeated section name: keep both apart
            name, k = f"{base_name} ({k})", k + 1
        known = [[index[w] for w in q] for q in questions if all(w in index for w in q)]
        per_section[name] = {"correct": 0, "seen": len(known), "total": len(questions)}
        known_ids.extend(known)
        owners.extend([name] * len(known))

    if known_ids:
        base = _as_tensor(vectors[:n], device)
        unit = _unit(base)
        canonical = torch.tensor([index[w.upper()] for w in words[:n]], device=unit.device)
        all_ids = torch.tensor(known_ids, device=unit.device)
        block = max(1, SCORE_BLOCK_ELEMENTS // max(n, 1) // (3 if method == "3cosmul" else 1))
        right = torch.cat([_solve(unit, canonical, all_ids[s : s + block], method)
                           for s in range(0, len(all_ids), block)]).cpu().numpy()
        for name, ok in zip(owners, right.tolist(), strict=True):
            per_section[name]["correct"] += int(ok)
    for s in per_section.values():
        s["accuracy"] = s["correct"] / s["seen"] if s["seen"] else 0.0

    def pooled(names: List[str]) -> Tuple[float, int, int]:
        seen = sum(per_section[x]["seen"] for x in names)
        correct = sum(per_section[x]["correct"] for x in names)
        return (correct / seen if seen else 0.0), correct, seen

    syntactic = [x for x in per_section if x.startswith("gram")]  # the Google set's naming: gramN-... sections
    semantic = [x for x in per_section if not x.startswith("gram")]
    total = sum(s["total"] for s in per_section.values())
    seen = sum(s["seen"] for s in per_section.values())
    correct = sum(s["correct"] for s in per_section.values())
    semantic_accuracy, semantic_correct, semantic_seen = pooled(semantic)
    syntactic_accuracy, syntactic_correct, syntactic_seen = pooled(syntactic)
    return {
        "accuracy": correct / seen if seen else 0.0,
        "correct": correct,
        "seen": seen,
        "total": total,
        "oov": total - seen,
        "coverage": seen / total if total else 0.0,
        "semantic_accuracy": semantic_accuracy,
        "semantic_correct": semantic_correct,
        "semantic_seen": semantic_seen,
        "syntactic_accuracy": syntactic_accuracy,
        "syntactic_correct": syntactic_correct,
        "syntactic_seen": syntactic_seen,
        "malformed_lines": malformed,
        "method": method,
        "sections": per_section,
    }


def evaluate_similarity(words: Sequence[str], vectors: np.ndarray | torch.Tensor, path: str | Path,
                        restrict_vocab: int = SIMILARITY_RESTRICT_VOCAB,
                        device: str | torch.device | None = None) -> Dict[str, Any]:
    """Spearman and Pearson of cosine vs the human score; `oov_ratio` is a fraction (gensim prints percent)."""
    from scipy import stats

    rows, malformed = load_pairs(path)
    index = upper_index(words, restrict_vocab)
    known = [(index[a], index[b], s) for a, b, s in rows if a in index and b in index]
    result: Dict[str, Any] = {"pairs": len(known), "total": len(rows),
                              "oov_ratio": (len(rows) - len(known)) / len(rows) if rows else 0.0,
                              "coverage": len(known) / len(rows) if rows else 0.0,
                              "malformed_lines": malformed, "spearman": None, "pearson": None}
    if len(known) >= 2:
        table = _as_tensor(vectors, device)
        ids = torch.tensor([(a, b) for a, b, _ in known], device=table.device)
        cosine = (_unit(table[ids[:, 0]]) * _unit(table[ids[:, 1]])).sum(1).cpu().numpy().astype(np.float64)
        gold = np.array([s for _, _, s in known])
        if np.ptp(gold) > 0 and np.ptp(cosine) > 0:  # a constant side has no correlation (scipy: nan + warning)
            result["spearman"] = float(stats.spearmanr(gold, cosine)[0])
            result["pearson"] = float(stats.pearsonr(gold, cosine)[0])
    return result


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


def evaluate_all(cfg: Any, words: Sequence[str], vectors: np.ndarray | torch.Tensor,
                 device: str | torch.device | None = None) -> Dict[str, dict]:
    """Every analogy and similarity file of the `eval` config group, keyed by file stem."""
    results: Dict[str, dict] = {}

    def key(path: str) -> str:
        stem, k = Path(path).stem, 2
        name = stem
        while name in results:  # two files with one stem: the second is `<stem>-2`
            name, k = f"{stem}-{k}", k + 1
        return name

    for path in cfg.analogies:
        results[key(path)] = evaluate_analogies(words, vectors, path, cfg.restrict_vocab, cfg.method, device)
    for path in cfg.similarities:
        results[key(path)] = evaluate_similarity(words, vectors, path, device=device)
    return results
