"""Evaluation: word analogies (3CosAdd / 3CosMul) and word-pair similarity, computed as gensim does.

Analogies follow `KeyedVectors.evaluate_word_analogies`: unit vectors, answers searched among the
`restrict_vocab` most frequent words, case-insensitive, a question with any word outside that set counted
as out-of-vocabulary, and a, b, c never the answer. Similarity follows `evaluate_word_pairs`: Spearman
and Pearson of cosine against the human score over pairs with both words known. Everything is batched
matrix work on the training device.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from sgns.errors import SGNSError

Question = Tuple[str, str, str, str]


def _read_lines(path: str | Path) -> List[str]:
    p = Path(path)
    if not p.is_file():
        raise SGNSError(f"evaluation file not found: {p}")
    return p.read_text(encoding="utf-8", errors="replace").splitlines()


def load_analogies(path: str | Path) -> Tuple[List[Tuple[str, List[Question]]], int]:
    """Sections of (a, b, c, d) questions from a questions-words file, and the count of malformed lines."""
    sections: List[Tuple[str, List[Question]]] = []
    malformed = 0
    for line in _read_lines(path):
        if line.startswith(":"):
            sections.append((line[1:].strip(), []))
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
    return sections, malformed


def _unit(vectors: np.ndarray | torch.Tensor, device: str | torch.device) -> torch.Tensor:
    v = torch.as_tensor(vectors, dtype=torch.float32, device=device)
    return v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _upper_index(words: Sequence[str], limit: int) -> Dict[str, int]:
    """Uppercased word -> index among the first `limit` words; the most frequent spelling wins."""
    index: Dict[str, int] = {}
    for i, w in enumerate(words[:limit]):
        index.setdefault(w.upper(), i)
    return index


def evaluate_analogies(words: Sequence[str], vectors: np.ndarray | torch.Tensor, path: str | Path,
                       restrict_vocab: int = 30000, method: str = "3cosadd",
                       device: str | torch.device = "cpu", batch: int = 2048) -> dict:
    sections, malformed = load_analogies(path)
    index = _upper_index(words, restrict_vocab)
    unit = _unit(vectors[: min(restrict_vocab, len(words))], device)
    per_section: Dict[str, dict] = {}
    total = oov = 0
    for name, questions in sections:
        total += len(questions)
        known = [q for q in questions if all(w in index for w in q)]
        oov += len(questions) - len(known)
        correct = 0
        for s in range(0, len(known), batch):
            ids = torch.tensor([[index[w] for w in q] for q in known[s : s + batch]], device=device)
            a, b, c = unit[ids[:, 0]], unit[ids[:, 1]], unit[ids[:, 2]]
            if method == "3cosmul":  # Levy & Goldberg, cosines shifted to [0, 1] as gensim does
                sim = lambda x: (1 + x @ unit.T) / 2  # noqa: E731
                scores = sim(b) * sim(c) / (sim(a) + 1e-6)
            else:
                scores = (b + c - a) @ unit.T
            scores.scatter_(1, ids[:, :3], float("-inf"))
            correct += int((scores.argmax(1) == ids[:, 3]).sum())
        per_section[name] = {"correct": correct, "seen": len(known), "total": len(questions),
                             "accuracy": correct / len(known) if known else 0.0}

    def pooled(names: List[str]) -> Optional[float]:
        seen = sum(per_section[n]["seen"] for n in names)
        return sum(per_section[n]["correct"] for n in names) / seen if seen else None

    syntactic = [n for n in per_section if n.startswith("gram")]
    semantic = [n for n in per_section if not n.startswith("gram")]
    seen = total - oov
    correct = sum(s["correct"] for s in per_section.values())
    return {
        "accuracy": correct / seen if seen else 0.0,
        "correct": correct,
        "seen": seen,
        "total": total,
        "coverage": seen / total if total else 0.0,
        "semantic_accuracy": pooled(semantic),
        "syntactic_accuracy": pooled(syntactic),
        "malformed_lines": malformed,
        "sections": {n: s["accuracy"] for n, s in per_section.items()},
    }


def load_pairs(path: str | Path) -> Tuple[List[Tuple[str, str, float]], int]:
    """(word1, word2, score) rows of a tab-separated similarity file, and the count of malformed lines."""
    rows: List[Tuple[str, str, float]] = []
    malformed = 0
    for line in _read_lines(path):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        try:
            a, b, score = parts
            rows.append((a.upper(), b.upper(), float(score)))
        except ValueError:
            malformed += 1
    return rows, malformed


def evaluate_similarity(words: Sequence[str], vectors: np.ndarray | torch.Tensor, path: str | Path,
                        restrict_vocab: int = 300000, device: str | torch.device = "cpu") -> dict:
    from scipy import stats

    rows, malformed = load_pairs(path)
    index = _upper_index(words, restrict_vocab)
    known = [(index[a], index[b], s) for a, b, s in rows if a in index and b in index]
    result = {"pairs": len(known), "oov_ratio": (len(rows) - len(known)) / len(rows) if rows else 0.0,
              "malformed_lines": malformed, "spearman": None, "pearson": None}
    if len(known) >= 2:
        unit = _unit(vectors[: min(restrict_vocab, len(words))], device)
        ids = torch.tensor([(a, b) for a, b, _ in known], device=device)
        cosine = (unit[ids[:, 0]] * unit[ids[:, 1]]).sum(1).cpu().numpy().astype(np.float64)
        gold = np.array([s for _, _, s in known])
        result["spearman"] = float(stats.spearmanr(gold, cosine).statistic)
        result["pearson"] = float(stats.pearsonr(gold, cosine).statistic)
    return result


def nearest(words: Sequence[str], vectors: np.ndarray | torch.Tensor, positive: Sequence[str],
            negative: Sequence[str] = (), topn: int = 10) -> List[Tuple[str, float]]:
    """Words closest to sum(positive) - sum(negative) of unit vectors (so `a - b + c` queries too)."""
    index = {w: i for i, w in enumerate(words)}
    for w in [*positive, *negative]:
        if w not in index:
            raise SGNSError(f"word not in vocabulary: {w!r}")
    unit = _unit(vectors, "cpu")
    query = sum(unit[index[w]] for w in positive) - sum((unit[index[w]] for w in negative), torch.zeros(1))
    scores = unit @ (query / query.norm().clamp_min(1e-12))
    for w in [*positive, *negative]:
        scores[index[w]] = float("-inf")
    top = scores.topk(min(topn, len(words) - len(positive) - len(negative)))
    return [(words[i], float(s)) for s, i in zip(top.values.tolist(), top.indices.tolist(), strict=False)]


def evaluate_all(cfg, words: Sequence[str], vectors: np.ndarray | torch.Tensor,
                 device: str | torch.device = "cpu") -> Dict[str, dict]:
    """Every analogy and similarity file of the `eval` config group, keyed by file stem."""
    results: Dict[str, dict] = {}
    for path in cfg.analogies:
        results[Path(path).stem] = evaluate_analogies(words, vectors, path, cfg.restrict_vocab, cfg.method,
                                                      device)
    for path in cfg.similarities:
        results[Path(path).stem] = evaluate_similarity(words, vectors, path, device=device)
    return results
