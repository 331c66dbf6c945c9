"""The run's TensorBoard event files (`tb/`): training curves, evaluations, the projector and HParams.

Every point's x-axis is the training step. `purge_step` makes TensorBoard drop points a killed run logged
after the checkpoint a resumed run continues from (all tags), so curves continue with no duplicated or
missing steps; the loop flushes before each checkpoint so that every point up to it is on disk.

HParams: each run writes a session (its hyperparameters and a success status) into its own `tb/`, next to
its scalars. No run writes an experiment summary: TensorBoard builds one from all the sessions it finds
under `--logdir`, so pointing it at a sweep dir lists every job in one HParams table, with each scalar tag
(`train/loss`, `eval/<name>/accuracy`, `hparams/objective`, ...) as a metric column holding its last value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from sgns.config import BOOKKEEPING, setting_role


class TBLog:
    """A SummaryWriter for one run, with the run's kinds of points."""

    def __init__(self, log_dir: str | Path, purge_step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(log_dir), purge_step=purge_step)
        self.eval_step = -1  # the step whose evaluation was logged last

    def train_point(self, step: int, loss: float, lr: float, words_per_sec: float) -> None:
        self.writer.add_scalar("train/loss", loss, step)
        self.writer.add_scalar("train/lr", lr, step)
        self.writer.add_scalar("train/words_per_sec", words_per_sec, step)

    def final_loss(self, step: int, loss: float) -> None:
        self.writer.add_scalar("train/loss", loss, step)

    def evaluation(self, results: Mapping[str, Mapping[str, Any]], step: int, words_done: float) -> None:
        """`eval/<file>/<metric>` points, and eval/words_seen mapping the step axis to corpus words; once per step
        (the final evaluation right after a periodic one at the same step is not logged twice)."""
        if self.eval_step == step:
            return
        self.eval_step = step
        self.writer.add_scalar("eval/words_seen", words_done, step)
        for name, metrics in results.items():
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and value is not None:
                    self.writer.add_scalar(f"eval/{name}/{key}", value, step)

    def projector(self, words: Sequence[str], vectors: np.ndarray, counts: Optional[Sequence[int]], top_n: int,
                  step: int) -> None:
        write_projector(self.writer, words, vectors, counts, top_n, step)

    def hparams(self, cfg: DictConfig, metrics: Mapping[str, Any], step: int) -> None:
        log_hparams(self.writer, cfg, metrics, step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def write_projector(writer: Any, words: Sequence[str], vectors: np.ndarray | torch.Tensor,
                    counts: Optional[Sequence[int]] = None, top_n: int = 1000, step: int = 0,
                    tag: str = "words") -> int:
    """Add the `top_n` most frequent words to TensorBoard's embedding projector; return how many were added.

    `writer` is a SummaryWriter or a log directory. Metadata is the word (and its corpus count).
    """
    from torch.utils.tensorboard import SummaryWriter

    n = min(top_n, len(words))
    if n <= 0:
        return 0
    own = not isinstance(writer, SummaryWriter)
    sw = SummaryWriter(str(writer)) if own else writer
    try:
        top = vectors[:n]
        matrix = (top.detach().float().cpu() if isinstance(top, torch.Tensor)
                  else torch.as_tensor(np.asarray(top, dtype=np.float32)))
        if counts is not None:
            metadata: Any = [[w, str(int(c))] for w, c in zip(words[:n], list(counts)[:n], strict=True)]
            sw.add_embedding(matrix, metadata=metadata, metadata_header=["word", "count"], global_step=step,
                             tag=tag)
        else:
            sw.add_embedding(matrix, metadata=list(words[:n]), global_step=step, tag=tag)
        sw.flush()
    finally:
        if own:
            sw.close()
    return n


def flat_hyperparameters(cfg: DictConfig) -> Dict[str, Any]:
    """The resolved config as `group.key -> int | float | str`, less bookkeeping settings; bools and lists
    (comma-joined) as text, None dropped."""
    tree = OmegaConf.to_container(cfg, resolve=True)
    flat: Dict[str, Any] = {}

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for key, value in node.items():
            name = f"{prefix}{key}"
            if name == "hydra" or setting_role(name) == BOOKKEEPING:
                continue
            if isinstance(value, Mapping):
                if name == "corpus.synthetic" and node.get("kind") != "synthetic":
                    continue  # the generator's settings mean nothing for a real corpus
                walk(value, name + ".")
            elif isinstance(value, (list, tuple)):
                flat[name] = ",".join(str(v) for v in value)
            elif isinstance(value, bool):
                flat[name] = str(value).lower()  # torch would log a bool as the number 0 or 1
            elif value is not None:
                flat[name] = value
    walk(tree, "")
    return flat


def log_hparams(writer: Any, cfg: DictConfig, metrics: Mapping[str, Any], step: int) -> None:
    """Write the run's session (hyperparameters, success) and its final objective into `writer`'s event dir."""
    from torch.utils.tensorboard.summary import hparams

    objective = metrics.get("objective")
    final = {"hparams/objective": objective, "hparams/words_per_sec": metrics.get("words_per_sec")}
    final = {k: float(v) for k, v in final.items() if isinstance(v, (int, float))}
    _experiment, session_start, session_end = hparams(flat_hyperparameters(cfg), final)
    writer.file_writer.add_summary(session_start, step)
    writer.file_writer.add_summary(session_end, step)
    for tag, value in final.items():
        writer.add_scalar(tag, value, step)
    writer.flush()
