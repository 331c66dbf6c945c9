"""Reuse: checkpoints and word2vec files back into models and vectors (one call each, for Python users).

    model = load_model("outputs/.../checkpoints/step-00012345.pt")   # an SGNS nn.Module, vocabulary attached
    emb = torch.nn.Embedding.from_pretrained(model.input.weight.detach())
    wv = load_vectors("outputs/...")        # a run dir, a checkpoint or a word2vec file -> WordVectors
    wv.nearest("king"); wv.nearest(["king", "woman"], ["man"])

(Until the layout of issue 9 these were `sgns.export.load_model` / `load_vectors`.)
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Tuple

import numpy as np
import torch

from sgns.errors import SGNSError
from sgns.vectors import WordVectors, load_word_vectors

VECTOR_CHOICES = ("input", "average")
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's (default) zip container


def is_checkpoint_file(path: str | Path) -> bool:
    """A torch checkpoint (zip container or .pt name) rather than a word2vec file."""
    p = Path(path)
    if p.suffix in (".pt", ".pth"):
        return True
    try:
        with open(p, "rb") as f:
            return f.read(4) == ZIP_MAGIC
    except OSError:
        return False


def read_checkpoint(path: str | Path) -> Tuple[Path, dict]:
    """A checkpoint file, or the newest loadable checkpoint of a run directory, with the path it came from."""
    from sgns.train.checkpoint import latest_loadable, load_checkpoint

    p = Path(path)
    if p.is_dir():
        found = latest_loadable(p, warn=lambda msg: sys.stderr.write(msg + "\n"))
        if found is None:
            raise SGNSError(f"{p} holds no loadable checkpoint (expected {p / 'checkpoints'}/step-N.pt)")
        return found
    return p, load_checkpoint(p)


def vocab_words(state: dict, source: Path) -> List[str]:
    vocab = state.get("vocab")
    if not isinstance(vocab, dict) or "words" not in vocab:
        raise SGNSError(f"checkpoint {source} holds no vocabulary: not an sgns training checkpoint")
    return list(vocab["words"])


def state_vectors(state: dict, which: str = "input", source: str | Path = "checkpoint") -> np.ndarray:
    """The input vectors of a checkpoint state, or the average of input and output vectors."""
    if which not in VECTOR_CHOICES:
        raise SGNSError(f"unknown vectors choice {which!r}: use input or average")
    weights = state["model"]
    if "input.weight" not in weights or "output.weight" not in weights:
        raise SGNSError(f"checkpoint {source} has no input/output embedding tables")
    vectors = weights["input.weight"].detach().float()
    if which == "average":  # Levy et al. 2015: w + c often helps similarity tasks
        vectors = (vectors + weights["output.weight"].detach().float()) / 2
    return vectors.cpu().numpy()


def load_model(checkpoint: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Rebuild the trained SGNS module from a checkpoint (or a run dir's newest one).

    The returned model carries `model.vocab` (a Vocabulary: `.words`, `.index[word]`, `.counts`), so
    `model.input.weight[model.vocab.index["king"]]` is king's vector.
    """
    from sgns.model import SGNS
    from sgns.vocab import Vocabulary

    path, state = read_checkpoint(checkpoint)
    words = vocab_words(state, path)
    weights = state["model"]
    if "input.weight" not in weights:
        raise SGNSError(f"checkpoint {path} has no input embedding table")
    vocab_size, dim = weights["input.weight"].shape
    if vocab_size != len(words):
        raise SGNSError(f"checkpoint {path} is inconsistent: {len(words)} words but {vocab_size} vectors")
    model = SGNS(vocab_size, dim)
    model.load_state_dict({k: v.detach().clone() for k, v in weights.items()})
    model.vocab = Vocabulary.from_state_dict(state["vocab"])
    return model.to(device)


def load_vectors(path: str | Path, which: str = "input") -> WordVectors:
    """WordVectors from a word2vec file (text or binary), a checkpoint, or a run directory.

    A run directory uses its newest checkpoint (both tables, so `which="average"` works), else its
    vectors.bin / vectors.txt.
    """
    p = Path(path)
    if not p.exists():
        raise SGNSError(f"not found: {p}")
    if p.is_dir():
        from sgns.train.checkpoint import list_checkpoints

        if not list_checkpoints(p):
            for name in ("vectors.bin", "vectors.txt"):
                if (p / name).is_file():
                    if which != "input":
                        raise SGNSError(f"{p} has no checkpoint, only {name}: --vectors {which} needs a checkpoint")
                    return load_word_vectors(p / name)
            raise SGNSError(f"{p} is not a run directory: it holds no checkpoints/ and no vectors.bin or vectors.txt")
    if p.is_dir():
        try:
            source, state = read_checkpoint(p)
        except SGNSError as e:
            fallback = next((p / n for n in ("vectors.bin", "vectors.txt") if (p / n).is_file()), None)
            if fallback is None or which != "input":
                raise
            sys.stderr.write(f"warning: {e}; using {fallback}\n")
            return load_word_vectors(fallback)
        return WordVectors(vocab_words(state, source), state_vectors(state, which, source), str(source))
    if is_checkpoint_file(p):
        source, state = read_checkpoint(p)
        return WordVectors(vocab_words(state, source), state_vectors(state, which, source), str(source))
    if which != "input":
        raise SGNSError(f"{p} is a word2vec file: it holds one set of vectors, so only `input` applies")
    return load_word_vectors(p)
