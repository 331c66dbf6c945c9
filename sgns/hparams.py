"""A run's hyperparameters and final metrics for TensorBoard's HParams tab.

Each run writes a session (its hyperparameters and a success status) into its own `tb/` event dir, next to
its scalars. No run writes an experiment summary: TensorBoard then builds one from all the sessions it finds
under `--logdir`, so pointing it at a sweep dir lists every job in one HParams table, with each scalar tag
(`train/loss`, `eval/<name>/accuracy`, `hparams/objective`, ...) as a metric column holding its last value.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping

from omegaconf import DictConfig, OmegaConf

# Bookkeeping keys that change no result: left out so the HParams table shows only real choices.
NOT_HYPERPARAMETERS = {
    "data.cache_dir", "data.prefetch", "trainer.run_dir", "trainer.progress", "trainer.log_every",
    "trainer.checkpoint_every", "trainer.keep_checkpoints", "trainer.resume", "trainer.threads",
    "eval.every_words",
}


def flat_hyperparameters(cfg: DictConfig) -> Dict[str, Any]:
    """The resolved config as `group.key -> int | float | str`; bools and lists (comma-joined) as text, None dropped."""
    tree = OmegaConf.to_container(cfg, resolve=True)
    flat: Dict[str, Any] = {}

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for key, value in node.items():
            name = f"{prefix}{key}"
            if name in NOT_HYPERPARAMETERS or name == "hydra":
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
