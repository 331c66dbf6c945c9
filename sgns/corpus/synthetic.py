"""The embedded default corpus: synthetic text with planted relations, and its analogy questions.

No real corpus may ship with sgns, yet `sgns-train` with no arguments must train offline and show that it
learns. So we generate one. Each relation r has entity pairs (a_i, b_i); every pair has its own topic
words and every side of a relation has its own role words. A sentence mentions one entity among two topic
words of its pair, one role word of its side and Zipf-distributed filler. SGNS then places
a_i ~ topic_i + roleA and b_i ~ topic_i + roleB, so b_i - a_i + a_j lands on b_j: the analogy file asks
exactly that, in the standard questions-words format. An untrained or broken model scores near zero.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, List, Tuple

import numpy as np

if TYPE_CHECKING:
    from sgns.config import CorpusConfig, EvalConfig, SyntheticConfig

CONSONANTS = "bdfgklmnprstvz"
VOWELS = "aeiou"
TOPIC_WORDS = 3  # per entity pair
ROLE_WORDS = 4  # per side of a relation
FILLER_SHARE = 0.2  # sentences with filler only


def _make_words(n: int, rng: np.random.Generator, taken: set) -> List[str]:
    """n distinct pronounceable pseudo-words not in `taken`."""
    words: List[str] = []
    while len(words) < n:
        syllables = rng.integers(2, 4)
        w = "".join(CONSONANTS[rng.integers(len(CONSONANTS))] + VOWELS[rng.integers(len(VOWELS))]
                    for _ in range(syllables))
        if w not in taken:
            taken.add(w)
            words.append(w)
    return words


def generate(cfg: SyntheticConfig) -> Tuple[List[str], List[str]]:
    """Return (corpus lines, analogy file lines) for a SyntheticConfig."""
    rng = np.random.default_rng(cfg.seed)
    taken: set = set()
    filler = _make_words(cfg.filler_words, rng, taken)
    zipf = 1.0 / (np.arange(cfg.filler_words) + 2.7)  # Zipf-Mandelbrot filler frequencies
    zipf /= zipf.sum()
    relations = []
    for _ in range(cfg.relations):
        a = _make_words(cfg.pairs, rng, taken)
        b = _make_words(cfg.pairs, rng, taken)
        topics = [_make_words(TOPIC_WORDS, rng, taken) for _ in range(cfg.pairs)]
        roles = (_make_words(ROLE_WORDS, rng, taken), _make_words(ROLE_WORDS, rng, taken))
        relations.append((a, b, topics, roles))

    lines: List[str] = []
    lengths = rng.integers(8, 17, size=cfg.sentences)
    fillers = rng.choice(cfg.filler_words, size=int(lengths.sum()), p=zipf)
    used = 0
    n_relations, n_pairs = int(cfg.relations), int(cfg.pairs)  # a config's attribute costs ~40 us: once, not per line
    for length in lengths:
        words = [filler[j] for j in fillers[used : used + length]]
        used += length
        if rng.random() >= FILLER_SHARE:
            a, b, topics, roles = relations[rng.integers(n_relations)]
            i = rng.integers(n_pairs)
            side = rng.integers(2)
            planted = [(a, b)[side][i], *rng.choice(topics[i], 2, replace=False),
                       roles[side][rng.integers(ROLE_WORDS)]]
            slots = rng.choice(length, len(planted), replace=False)
            for slot, word in zip(slots, planted, strict=False):
                words[slot] = word
        lines.append(" ".join(words))

    questions: List[str] = []
    for r, (a, b, _, _) in enumerate(relations):
        questions.append(f": relation-{r}")
        for i in range(cfg.pairs):
            for j in range(cfg.pairs):
                if i != j:
                    questions.append(f"{a[i]} {b[i]} {a[j]} {b[j]}")
    return lines, questions


def _write_atomic(path: Path, lines: List[str]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, path)


def ensure_synthetic(cfg: SyntheticConfig, cache_dir: str | Path) -> Tuple[Path, Path]:
    """Generate (once per setting) the corpus and analogy files; return their paths."""
    params = {k: int(getattr(cfg, k)) for k in ("relations", "pairs", "filler_words", "sentences", "seed")}
    key = hashlib.blake2b(json.dumps(params, sort_keys=True).encode(), digest_size=8).hexdigest()
    folder = Path(cache_dir).expanduser() / f"synthetic-{key}"
    corpus, analogies = folder / "corpus.txt", folder / "planted_analogies.txt"
    if not (corpus.exists() and analogies.exists()):
        folder.mkdir(parents=True, exist_ok=True)
        lines, questions = generate(cfg)
        _write_atomic(corpus, lines)
        _write_atomic(analogies, questions)
    return corpus, analogies


def evaluation_config(eval_cfg: EvalConfig, corpus: CorpusConfig, cache_dir: str | Path) -> EvalConfig:
    """The run's `eval` group, with the synthetic corpus's planted analogy file first when it is scored."""
    if corpus.kind == "synthetic" and corpus.synthetic.evaluate:
        planted = ensure_synthetic(corpus.synthetic, cache_dir)[1]
        return replace(eval_cfg, analogies=[str(planted), *eval_cfg.analogies])
    return eval_cfg
