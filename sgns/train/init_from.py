"""Start from earlier vectors (`model.init_from`); the pipeline keeps them fixed (`model.freeze_init`).

The source is a word2vec file (text or binary: the C tool's, gensim's, ours), an sgns checkpoint, or a run
directory (its newest loadable checkpoint, else its vectors file), read by sgns.train.runs. Every word of the
new vocabulary found there starts from its input vector, and from its output vector too when the source is a
checkpoint (a word2vec file holds only input vectors); the other words get the usual initialisation. The rows
imported are what the pipeline keeps bit-identical when `model.freeze_init` is set (sgns.pipelines.base.FrozenRows).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from sgns.config import ModelConfig
from sgns.errors import SGNSError
from sgns.train.runs import RunVectors, read_vectors


def read_initial_vectors(path: str | Path) -> RunVectors:
    """Read `path` (word2vec file, checkpoint or run dir); raise one-line SGNSErrors for unusable sources."""
    key = f"model.init_from={path}"
    try:
        return read_vectors(path, fall_back=False)
    except SGNSError as e:
        message = str(e)
        raise SGNSError(message if message.startswith(key) else f"{key}: {message}") from None
    except OSError as e:
        raise SGNSError(f"{key}: cannot be read: {e.strerror or e}") from None


def import_vectors(input_weight: torch.Tensor, output_weight: torch.Tensor, words: Sequence[str],
                   init: RunVectors, log: Callable[[str], None] = print) -> np.ndarray:
    """Copy the vectors of `words` found in `init` into the model's tables; return their row indices.

    Raises SGNSError when the dimensions differ or no word is shared. A word repeated in the source keeps
    its first row (word2vec files list the most frequent first).
    """
    dim = int(input_weight.shape[1])
    if init.dim != dim:
        raise SGNSError(f"model.init_from={init.source} holds {init.dim}-dimensional vectors but model.dim={dim}: "
                        f"set model.dim={init.dim}")
    if not np.isfinite(init.input).all() or (init.output is not None and not np.isfinite(init.output).all()):
        raise SGNSError(f"model.init_from={init.source} holds non-finite values (NaN or inf): not usable")
    source_row: dict = {}
    for i, w in enumerate(init.words):
        source_row.setdefault(w, i)
    pairs = [(row, source_row[w]) for row, w in enumerate(words) if w in source_row]
    if not pairs:
        raise SGNSError(f"model.init_from={init.source} shares no word with this vocabulary ({len(init.words):,} "
                        f"words there, {len(words):,} here): check the corpus, its lowercasing and phrases")
    rows = np.fromiter((r for r, _ in pairs), dtype=np.int64, count=len(pairs))
    src = np.fromiter((s for _, s in pairs), dtype=np.int64, count=len(pairs))
    index = torch.from_numpy(rows).to(input_weight.device)
    with torch.no_grad():
        input_weight[index] = torch.from_numpy(init.input[src]).to(input_weight)
        if init.output is not None:
            output_weight[index] = torch.from_numpy(init.output[src]).to(output_weight)
    tables = "input and output vectors" if init.output is not None else "input vectors"
    log(f"init_from: {len(rows):,} of {len(words):,} vocabulary words start from {init.source} ({tables}); "
        f"{len(words) - len(rows):,} start fresh")
    return rows


def start_from(model_cfg: ModelConfig, model: torch.nn.Module, words: Sequence[str], resumed: bool,
               log: Callable[[str], None] = print) -> Optional[np.ndarray]:
    """Apply `model.init_from` (not on resume: the checkpoint holds the model); the rows imported, or None."""
    if not model_cfg.init_from or resumed:
        return None
    init = read_initial_vectors(model_cfg.init_from)
    rows = import_vectors(model.input.weight, model.output.weight, words, init, log)
    if model_cfg.freeze_init:
        log(f"init_from: {len(rows):,} imported input vectors stay fixed (model.freeze_init=true)")
    return rows
