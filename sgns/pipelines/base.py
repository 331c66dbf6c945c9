"""What every pipeline does the same way: its tag in checkpoints (checked here, once, on restore) and keeping
imported rows fixed (`model.freeze_init`) as part of its step.

Frozen rows are kept bit-identical by restoring them after each step, and only the rows the step could have
touched: a word's input vector changes only when it is a center word (or, for a kernel that gives the
context the input role, a context word), so restoring the batch's frozen rows costs a few rows, not the table.
"""

from __future__ import annotations

from typing import Any, ClassVar, Dict, Optional

import numpy as np
import torch

from sgns.errors import SGNSError

# Each pipeline's tag, and the settings that choose it (sgns.pipelines.choose_pipeline holds the rules).
CHOSEN_BY: Dict[str, str] = {
    "span": "the numba kernel over token spans (trainer.kernel=numba, or auto on the CPU with optimizer.name=sgd)",
    "device": "the torch device pipeline (trainer.kernel=torch, or auto on a CUDA device or with model=subword)",
    "pairs": "the CPU pair pipeline (trainer.kernel=auto on the CPU with optimizer.name=sparse_adam)",
    "softmax": "the full-softmax pipeline (model=full_softmax)",
}


def checkpoint_pipeline(state: dict) -> str:
    """The tag of the pipeline that wrote a checkpoint."""
    if "pipeline" in state:
        return state["pipeline"]
    # Checkpoints written before they carried the tag: each pipeline's state had its own keys.
    if "spans" in state:
        return "span"
    if state.get("pair_source") == "device":
        return "device"
    return "pairs" if "sampler" in state else "softmax"


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


class PipelineBase:
    """The checkpoint state every pipeline writes the same way, around its own (`own_state`)."""

    name: ClassVar[str]  # the pipeline's tag (a key of CHOSEN_BY)
    frozen: Optional[FrozenRows] = None  # imported input rows kept fixed (model.freeze_init), else None

    def freeze(self, weight: torch.Tensor, rows: Optional[np.ndarray]) -> None:
        """Keep `rows` of the input table `weight` fixed from now on (None: the rows of the checkpoint that is
        restored next)."""
        self.frozen = FrozenRows(weight, np.zeros(0, dtype=np.int64) if rows is None else rows)

    def own_state(self) -> dict:
        return {}

    def load_own_state(self, state: dict) -> None:
        pass

    def state_dict(self) -> dict:
        state: Dict[str, Any] = {"pipeline": self.name, **self.own_state()}
        if self.frozen is not None:
            state["frozen_rows"] = self.frozen.rows.cpu()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore from a checkpoint written by this pipeline; SGNSError naming the settings of another."""
        written_by = checkpoint_pipeline(state)
        if written_by != self.name:
            raise SGNSError(f"this run's checkpoint was written by {CHOSEN_BY.get(written_by, written_by)}, which "
                            f"builds other batches than {CHOSEN_BY[self.name]}: resume it with those settings, or "
                            f"start a new run (another hydra.run.dir)")
        if self.frozen is not None:
            if "frozen_rows" not in state:
                raise SGNSError("the checkpoint has no frozen rows: it was not written with model.freeze_init=true")
            self.frozen = FrozenRows(self.frozen.weight, state["frozen_rows"].numpy())  # the model is restored by now
        self.load_own_state(state)
