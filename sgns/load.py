"""Reuse: checkpoints and word2vec files back into models and vectors (one call each, for Python users).

    model = load_model("outputs/.../checkpoints/step-00012345.pt")   # an SGNS nn.Module, vocabulary attached
    emb = torch.nn.Embedding.from_pretrained(model.input.weight.detach())
    wv = load_vectors("outputs/...")        # a run dir, a checkpoint or a word2vec file -> WordVectors
    wv.nearest("king"); wv.nearest(["king", "woman"], ["man"])

Both read through sgns.train.runs, the one reader of runs and checkpoints.
(Until the layout of issue 9 these were `sgns.export.load_model` / `load_vectors`.)
"""

from __future__ import annotations

from pathlib import Path

import torch

from sgns.errors import SGNSError
from sgns.model import SGNS, SubwordSGNS
from sgns.subwords import subword_table
from sgns.train.runs import (
    VECTOR_CHOICES,
    checkpoint_subwords,
    checkpoint_tables,
    read_checkpoint,
    read_vectors,
)
from sgns.vectors import WordVectors
from sgns.vocab import Vocabulary

__all__ = ["VECTOR_CHOICES", "load_model", "load_vectors"]


def load_model(checkpoint: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Rebuild the trained SGNS module from a checkpoint (or a run dir's newest one).

    The returned model carries `model.vocab` (a Vocabulary: `.words`, `.index[word]`, `.counts`), so
    `model.input.weight[model.vocab.index["king"]]` is king's vector.
    """
    path, state = read_checkpoint(checkpoint)
    words, input_table, _ = checkpoint_tables(state, path)
    subwords = checkpoint_subwords(state)
    if subwords is not None:  # its n-gram rows rebuilt from the vocabulary and the run's minn/maxn/bucket
        model = SubwordSGNS(subword_table(words, **subwords), int(input_table.shape[1]))
    else:
        model = SGNS(len(words), int(input_table.shape[1]))
    # the checkpoint's own tensors, not copies: a subword run's 0.8 GB table is held once, not twice, after loading
    model.load_state_dict({k: v.detach() for k, v in state["model"].items()}, assign=True)
    model.vocab = Vocabulary.from_state_dict(state["vocab"])
    return model.to(device)


def load_vectors(path: str | Path, which: str = "input") -> WordVectors:
    """WordVectors from a word2vec file (text or binary), a checkpoint, or a run directory.

    A run directory uses its newest checkpoint (both tables, so `which="average"` works), else its
    vectors.bin / vectors.txt. A subword run's checkpoint gives each word's mean of rows and, with `which="input"`,
    vectors for words outside the vocabulary from its n-grams.
    """
    if which not in VECTOR_CHOICES:
        raise SGNSError(f"unknown vectors choice {which!r}: use {' or '.join(VECTOR_CHOICES)}")
    run = read_vectors(path, fall_back=which == "input")
    # a subword run's unseen words come from its input n-grams: with input vectors only
    return WordVectors(run.words, run.vectors(which), run.source, run.ngrams if which == "input" else None)
