"""Start from earlier vectors (`model.init_from`); the pipeline keeps them fixed (`model.freeze_init`).

The source is a word2vec file (text or binary: the C tool's, gensim's, ours), an sgns checkpoint, or a run
directory (its newest loadable checkpoint, else its vectors file). Every word of the new vocabulary found
there starts from its input vector, and from its output vector too when the source is a checkpoint (a
word2vec file holds only input vectors); the other words get the usual initialisation. The rows imported
are what the pipeline keeps bit-identical when `model.freeze_init` is set (sgns.pipelines.base.FrozenRows).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence

import numpy as np
import torch

from sgns.errors import SGNSError
from sgns.vectors import load_word2vec


@dataclass
class InitialVectors:
    words: List[str]
    input: np.ndarray  # (len(words), dim) float32
    output: Optional[np.ndarray]  # the same shape, or None for a word2vec file
    source: str

    @property
    def dim(self) -> int:
        return int(self.input.shape[1])


def read_initial_vectors(path: str | Path) -> InitialVectors:
    """Read `path` (word2vec file, checkpoint or run dir); raise one-line SGNSErrors for unusable sources."""
    from sgns.load import is_checkpoint_file, read_checkpoint, vocab_words

    p = Path(path).expanduser()
    key = f"model.init_from={path}"
    if not p.exists():
        raise SGNSError(f"{key}: no such file or directory")
    try:
        if p.is_dir():
            from sgns.train.checkpoint import list_checkpoints

            if not list_checkpoints(p):
                found = next((p / n for n in ("vectors.bin", "vectors.txt") if (p / n).is_file()), None)
                if found is None:
                    raise SGNSError(f"{key}: not a run directory (no checkpoints/, no vectors.bin or vectors.txt)")
                words, vectors = load_word2vec(found)
                return InitialVectors(words, vectors, None, str(found))
        if p.is_dir() or is_checkpoint_file(p):
            source, state = read_checkpoint(p)
            words = vocab_words(state, source)
            weights = state.get("model", {})
            if "input.weight" not in weights or "output.weight" not in weights:
                raise SGNSError(f"checkpoint {source} has no input/output embedding tables")
            vin = weights["input.weight"].detach().float().cpu().numpy()
            vout = weights["output.weight"].detach().float().cpu().numpy()
            if vin.shape != vout.shape or len(vin) != len(words):
                raise SGNSError(f"checkpoint {source} is inconsistent: {len(words)} words, tables of shapes "
                                f"{tuple(vin.shape)} and {tuple(vout.shape)}")
            return InitialVectors(words, vin, vout, str(source))
        words, vectors = load_word2vec(p)
        return InitialVectors(words, vectors, None, str(p))
    except SGNSError as e:
        message = str(e)
        raise SGNSError(message if message.startswith(key) else f"{key}: {message}") from None
    except OSError as e:
        raise SGNSError(f"{key}: cannot be read: {e.strerror or e}") from None


def import_vectors(input_weight: torch.Tensor, output_weight: torch.Tensor, words: Sequence[str],
                   init: InitialVectors, log: Callable[[str], None] = print) -> np.ndarray:
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


def start_from(cfg_model: Any, model: torch.nn.Module, words: Sequence[str], resumed: bool,
               log: Callable[[str], None] = print) -> Optional[np.ndarray]:
    """Apply `model.init_from` (not on resume: the checkpoint holds the model); the rows imported, or None."""
    if not cfg_model.init_from or resumed:
        return None
    init = read_initial_vectors(cfg_model.init_from)
    rows = import_vectors(model.input.weight, model.output.weight, words, init, log)
    if cfg_model.freeze_init:
        log(f"init_from: {len(rows):,} imported input vectors stay fixed (model.freeze_init=true)")
    return rows
