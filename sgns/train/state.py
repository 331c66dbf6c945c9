"""TrainState: where a run is (counters, the open loss window, the data position, torch's global RNG state).

`state_dict()` is the part of a checkpoint that says how far the run got; with the model, the pipeline's
state (negative-sampler RNG, optimizer), the vocabulary and the config it makes the whole checkpoint, and
`load_state_dict` puts a resumed run exactly where the interrupted one was.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch

# A rank's pipeline state (negative-sampler RNG, optimizer) in a checkpoint: the key keeps the pipeline's old name,
# "backend", so checkpoints written before the rename still resume.
PIPELINE_STATE_KEY = "backend"


def seed_everything(seed: int) -> None:
    """Seed torch's, numpy's and Python's global generators (model init draws from torch's)."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


@dataclass
class TrainState:
    step: int = 0  # batches trained
    pairs: int = 0  # positive pairs trained
    words_done: float = 0.0  # corpus words covered (drives the lr schedule, progress and eval cadence)
    train_seconds: float = 0.0  # time spent in the loop, up to the last log point
    # The loss window: summed loss (a 0-d tensor on the device, so no sync per step) and pairs since the
    # last log point. Checkpoints keep it, so a resumed run's next point averages the same steps.
    loss_sum: torch.Tensor = field(default_factory=lambda: torch.zeros(()))
    loss_pairs: int = 0
    # (loss, lr, words/s) of the last log point. Checkpoints keep it, so a run resumed from a checkpoint of its
    # last step (nothing left to train or log) reports the loss, and logs the point, the uninterrupted run did.
    last_point: Optional[Tuple[float, float, float]] = None
    position: Tuple[int, int, int] = (0, 0, 0)  # (epoch, chunk slot, batch) the data continues from
    finished: bool = False  # every output is written

    def advance(self, batch: Any, loss: torch.Tensor | float) -> None:
        """Count a trained batch (one with `pairs`, `words_done` and `resume_position`) and its summed loss."""
        self.step += 1
        self.pairs += batch.pairs
        self.loss_sum += loss
        self.loss_pairs += batch.pairs
        self.words_done = batch.words_done
        self.position = batch.resume_position

    def window_loss(self) -> float:
        """The mean loss per pair over the open window (NaN if it is empty)."""
        return float(self.loss_sum) / self.loss_pairs if self.loss_pairs else float("nan")

    def reset_window(self) -> None:
        self.loss_sum.zero_()
        self.loss_pairs = 0

    def state_dict(self) -> Dict[str, Any]:
        epoch, chunk, batch = self.position
        return {
            "progress": {"epoch": epoch, "chunk": chunk, "batch": batch, "step": self.step, "pairs": self.pairs,
                         "words_done": self.words_done, "train_seconds": self.train_seconds,
                         "finished": self.finished, "loss_sum": float(self.loss_sum), "loss_pairs": self.loss_pairs,
                         "last_point": self.last_point},
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        p = state["progress"]
        self.position = (p["epoch"], p["chunk"], p["batch"])
        self.step, self.pairs, self.words_done = p["step"], p["pairs"], p["words_done"]
        self.train_seconds, self.finished = p["train_seconds"], p.get("finished", False)
        self.loss_sum.fill_(p.get("loss_sum", 0.0))
        self.loss_pairs = p.get("loss_pairs", 0)
        self.last_point = tuple(p["last_point"]) if p.get("last_point") is not None else None
        torch.set_rng_state(state["torch_rng"])
