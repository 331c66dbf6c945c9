"""Start from earlier vectors (`model.init_from`), optionally keeping them fixed (`model.freeze_init`).

The source is a word2vec file (text or binary: the C tool's, gensim's, ours), an sgns checkpoint, or a run
directory (its newest loadable checkpoint, else its vectors file), read by sgns.train.runs. Every word of the
new vocabulary found there starts from its input vector, and from its output vector too when the source is a
checkpoint (a word2vec file holds only input vectors); the other words get the usual initialisation.

Frozen rows are kept bit-identical by restoring them after each step, and only the rows the step could
have touched: whatever kernel ran the step, a word's input vector changes only when it is a center word,
so restoring the batch's frozen centers costs a few rows, not the table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch

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


class FrozenRows:
    """Keeps chosen rows of an input table bit-identical: `restore(touched)` after each step."""

    def __init__(self, weight: torch.Tensor, rows: np.ndarray):
        self.weight = weight
        rows_t = torch.from_numpy(np.unique(np.asarray(rows, dtype=np.int64))).to(weight.device)
        self.rows = rows_t
        self.values = weight.detach()[rows_t].clone()  # the frozen rows only, not a copy of the table
        self.slot = torch.full((weight.shape[0],), -1, dtype=torch.long, device=weight.device)
        self.slot[rows_t] = torch.arange(len(rows_t), device=weight.device)

    def restore(self, touched: torch.Tensor | np.ndarray | None = None) -> None:
        """Put back the frozen rows among `touched` (row ids a step may have changed; None: all of them)."""
        with torch.no_grad():
            if touched is None:
                self.weight[self.rows] = self.values
                return
            touched = torch.as_tensor(touched, device=self.weight.device).long().reshape(-1)
            slots = self.slot[touched]
            # No boolean indexing: on CUDA that waits for the device each step. Rows not frozen get their
            # own (already updated) values back.
            kept = torch.where((slots >= 0).unsqueeze(1), self.values[slots.clamp(min=0)], self.weight[touched])
            self.weight[touched] = kept


def touched_input_rows(batch: Any) -> Optional[torch.Tensor]:
    """Input rows a step on `batch` may change: its centers and contexts (a kernel that gives the context
    the input role is covered too); None when the batch does not say (then every frozen row is restored)."""
    centers, contexts = getattr(batch, "centers", None), getattr(batch, "contexts", None)
    if not isinstance(centers, torch.Tensor) or not isinstance(contexts, torch.Tensor):
        return None
    return torch.cat((centers.reshape(-1), contexts.reshape(-1)))


class FrozenInitBackend:
    """A backend whose steps leave the imported input rows bit-identical (`model.freeze_init=true`).

    Works with any kernel: the inner step runs as usual, then the frozen rows it may have touched are put
    back. Their ids travel in checkpoints (`frozen_rows`), so a resumed run keeps them frozen.
    """

    def __init__(self, inner: Any, weight: torch.Tensor, rows: Optional[np.ndarray]):
        self.inner, self.weight = inner, weight
        self.total_words = inner.total_words
        self.frozen = FrozenRows(weight, rows) if rows is not None else None

    def batches(self, start: tuple) -> Iterator[Any]:
        return self.inner.batches(start)

    def step(self, batch: Any, lr: float) -> torch.Tensor | float:
        loss = self.inner.step(batch, lr)
        self.frozen.restore(touched_input_rows(batch))
        return loss

    def state_dict(self) -> dict:
        return {**self.inner.state_dict(), "frozen_rows": self.frozen.rows.cpu()}

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state)
        if "frozen_rows" not in state:
            raise SGNSError("the checkpoint has no frozen rows: it was not written with model.freeze_init=true")
        self.frozen = FrozenRows(self.weight, state["frozen_rows"].numpy())  # the model is restored by now


def start_from(cfg_model: Any, model: torch.nn.Module, words: Sequence[str], backend: Any, resumed: bool,
               log: Callable[[str], None] = print) -> Any:
    """Apply `model.init_from` (not on resume: the checkpoint holds the model) and `model.freeze_init`;
    return the backend to train with (wrapped when rows are frozen)."""
    if not cfg_model.init_from:
        return backend
    rows = None
    if not resumed:
        init = read_initial_vectors(cfg_model.init_from)
        rows = import_vectors(model.input.weight, model.output.weight, words, init, log)
    if not cfg_model.freeze_init:
        return backend
    if not resumed:
        log(f"init_from: {len(rows):,} imported input vectors stay fixed (model.freeze_init=true)")
    return FrozenInitBackend(backend, model.input.weight, rows)
