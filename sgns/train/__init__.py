"""The train stage: the loop (loop.py) around a TrainState (state.py), with checkpoints (checkpoint.py), the run
dir it writes, its checks and lock (rundir.py), the one reader of runs and checkpoints and the `Run` a run
directory holds (runs.py), the start vectors of `model.init_from` (init_from.py), the evaluation cadence
(eval_schedule.py), the checkpoint cadence (checkpoint_cadence.py), the console progress (progress.py),
TensorBoard (tblog.py), signal handling (signals.py) and metrics.json (metrics.py).
`sgns.train.train(cfg)` trains and returns the metrics; `python -m sgns.train` is `sgns-train`.
"""

from typing import Any

__all__ = ["train"]


def __getattr__(name: str) -> Any:
    # `train` is imported on first use, so that reading a checkpoint (sgns.train.checkpoint) does not load
    # the loop's dependencies (pipelines, numba, tensorboard).
    if name == "train":
        from sgns.train.loop import train

        return train
    raise AttributeError(f"module 'sgns.train' has no attribute {name!r}")
