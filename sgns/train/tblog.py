"""The run's TensorBoard event files (`tb/`): training curves, evaluations, the projector and HParams.

Scalars are what people plot, and nothing else: `train/loss`, `train/lr`, `train/words_per_sec`, and per
benchmark file `eval/<name>/accuracy` (plus `semantic_accuracy` and `syntactic_accuracy` where both parts
have questions in the vocabulary, as the Google set does) or `eval/<name>/spearman`. Counts (questions seen,
coverage, OOV, malformed lines) do not change while a run trains: they go to metrics.json, the log and one
`evaluation` text table (TensorBoard's Text tab).
TensorBoard sorts sections by name, so `eval` (the curves that show learning) comes before `train`.

The x-axis ("step" in TensorBoard) is corpus words trained, so runs of different batch sizes, corpora and
epochs line up, and the axis reads 500k, 1M, ... `purge_step` (words at the checkpoint a resumed run continues
from, plus one) makes TensorBoard drop the points a killed run logged after that checkpoint (all tags), so
curves continue with no duplicated or missing points; the loop flushes before each checkpoint so that every
point up to it is on disk. A run resumed from a checkpoint of its last step (killed while writing its outputs)
purges from that step itself, since the end-of-run points share its x, and logs the loop's last point again.
The optimizer step count stays in checkpoints and metrics.json.

HParams: each run writes a session (its hyperparameters and a success status) into its own `tb/`, next to
its scalars. No run writes an experiment summary: TensorBoard builds one from all the sessions it finds
under `--logdir`, so pointing it at a sweep dir lists every job in one HParams table, with each scalar tag
as a metric column holding its last value: the final loss, accuracies and Spearman correlations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from sgns.config import BOOKKEEPING, as_record, setting_role

ANALOGY_PARTS = ("semantic", "syntactic")  # evaluate_analogies' pooled parts (gram* sections are syntactic)
HF_ONLY = ("name", "config_name", "data_files", "split", "column", "revision")  # corpus keys only corpus=hf reads


def words_axis(words_done: float) -> int:
    """The x value of a point: corpus words trained so far."""
    return int(words_done)


def eval_curves(results: Mapping[str, Mapping[str, Any]]) -> Dict[str, float]:
    """The evaluation numbers that are curves, as `eval/<name>/<metric>` -> value: each analogy file's accuracy
    (and its semantic and syntactic accuracy where both parts have questions in the vocabulary), each similarity
    file's Spearman. A file with no question or pair in the vocabulary has no curve (its counts say why)."""
    curves: Dict[str, float] = {}
    for name, m in results.items():
        if "accuracy" in m:
            if not m.get("seen"):
                continue
            curves[f"eval/{name}/accuracy"] = float(m["accuracy"])
            if all(m.get(f"{part}_seen") for part in ANALOGY_PARTS):  # with one part, it is the accuracy again
                for part in ANALOGY_PARTS:
                    curves[f"eval/{name}/{part}_accuracy"] = float(m[f"{part}_accuracy"])
        elif m.get("spearman") is not None:
            curves[f"eval/{name}/spearman"] = float(m["spearman"])
    return curves


def evaluation_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """The final evaluation as a markdown table with the counts behind each score (TensorBoard's Text tab)."""
    rows = ["| benchmark | score | in vocabulary | coverage | malformed lines |", "|---|---|---|---|---|"]
    for name, m in results.items():
        if "accuracy" in m:
            parts = ([f"{part} {m[f'{part}_accuracy']:.4f}" for part in ANALOGY_PARTS]
                     if all(m.get(f"{part}_seen") for part in ANALOGY_PARTS) else [])
            score = f"accuracy {m['accuracy']:.4f}" + (f" ({', '.join(parts)})" if parts else "")
            known = f"{m['seen']:,} of {m['total']:,} questions"
        else:
            score = f"Spearman {m['spearman']:.4f}" if m.get("spearman") is not None else "Spearman n/a"
            known = f"{m['pairs']:,} of {m['total']:,} pairs"
        if m.get("ngram_words"):  # a subword run: words outside the vocabulary answered from their n-grams
            known += f", {m['ngram_words']:,} words from n-grams"
        rows.append(f"| {name} | {score} | {known} | {m['coverage']:.1%} | {m['malformed_lines']} |")
    return "\n".join(rows)


class TBLog:
    """A SummaryWriter for one run, with the run's kinds of points, all against corpus words trained."""

    def __init__(self, log_dir: str | Path, words_done: float, at_end: bool = False,
                 last_point: Optional[Tuple[float, float, float]] = None) -> None:
        """Continue the log at `words_done`. `at_end`: the run resumes from a checkpoint of its last step, with
        nothing left to train; `last_point` is the (loss, lr, words/s) the loop logged at that step, if it did."""
        from torch.utils.tensorboard import SummaryWriter

        x = words_axis(words_done)
        self.writer = SummaryWriter(str(log_dir), purge_step=x if at_end else x + 1)
        self.eval_x = -1  # the x of the evaluation logged last
        if at_end and last_point is not None:
            self.train_point(words_done, *last_point)

    def train_point(self, words_done: float, loss: float, lr: float, words_per_sec: float) -> None:
        x = words_axis(words_done)
        self.writer.add_scalar("train/loss", loss, x)
        self.writer.add_scalar("train/lr", lr, x)
        self.writer.add_scalar("train/words_per_sec", words_per_sec, x)

    def final_loss(self, words_done: float, loss: float) -> None:
        self.writer.add_scalar("train/loss", loss, words_axis(words_done))

    def evaluation(self, results: Mapping[str, Mapping[str, Any]], words_done: float) -> None:
        """The curve points of one evaluation; once per x (the final evaluation right after a periodic one at the
        same words is not logged twice)."""
        x = words_axis(words_done)
        if self.eval_x == x:
            return
        self.eval_x = x
        for tag, value in eval_curves(results).items():
            self.writer.add_scalar(tag, value, x)

    def evaluation_summary(self, results: Mapping[str, Mapping[str, Any]], words_done: float) -> None:
        if results:
            self.writer.add_text("evaluation", evaluation_table(results), words_axis(words_done))

    def projector(self, words: Sequence[str], vectors: np.ndarray, counts: Optional[Sequence[int]], top_n: int,
                  words_done: float) -> None:
        write_projector(self.writer, words, vectors, counts, top_n, words_axis(words_done))

    def hparams(self, record: Mapping[str, Any], words_done: float) -> None:
        log_hparams(self.writer, record, words_axis(words_done))

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class NullTBLog(TBLog):
    """The TBLog of a torchrun rank other than 0: the same calls, nothing written (rank 0 writes `tb/`), so the
    train loop logs without asking which rank it is."""

    def __init__(self) -> None:  # no SummaryWriter: not even an empty event file
        pass

    def train_point(self, words_done: float, loss: float, lr: float, words_per_sec: float) -> None:
        pass

    def final_loss(self, words_done: float, loss: float) -> None:
        pass

    def evaluation(self, results: Mapping[str, Mapping[str, Any]], words_done: float) -> None:
        pass

    def evaluation_summary(self, results: Mapping[str, Mapping[str, Any]], words_done: float) -> None:
        pass

    def projector(self, words: Sequence[str], vectors: np.ndarray, counts: Optional[Sequence[int]], top_n: int,
                  words_done: float) -> None:
        pass

    def hparams(self, record: Mapping[str, Any], words_done: float) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def write_projector(writer: Any, words: Sequence[str], vectors: np.ndarray | torch.Tensor,
                    counts: Optional[Sequence[int]] = None, top_n: int = 1000, step: int = 0,
                    tag: str = "words") -> int:
    """Add the `top_n` most frequent words to TensorBoard's embedding projector; return how many were added.

    `writer` is a SummaryWriter or a log directory (given a directory, a SummaryWriter opened there writes the
    event file TensorBoard finds the run by). Metadata is the word (and its corpus count). The files are what
    SummaryWriter.add_embedding writes (`STEP/TAG/tensors.tsv`, `metadata.tsv`, the log dir's
    `projector_config.pbtxt`), but the vectors are formatted a row at a time (`%.9g`: float32 exactly) instead
    of a Python str() per number: 0.02 s instead of 0.085 s for the default 1,000 x 100 (docs/startup.md).
    """
    from tensorboard.plugins import projector
    from torch.utils.tensorboard import SummaryWriter

    n = min(top_n, len(words))
    if n <= 0:
        return 0
    own = not isinstance(writer, SummaryWriter)
    sw = SummaryWriter(str(writer)) if own else writer
    try:
        top = vectors[:n]
        matrix = (top.detach().float().cpu().numpy() if isinstance(top, torch.Tensor)
                  else np.asarray(top, dtype=np.float32))
        subdir = f"{step:05d}/{tag}"
        folder = Path(sw.get_logdir()) / subdir
        folder.mkdir(parents=True, exist_ok=True)
        row = "\t".join(["%.9g"] * matrix.shape[1])
        (folder / "tensors.tsv").write_bytes("".join(row % tuple(r) + "\n" for r in matrix.tolist()).encode())
        metadata = (["word\tcount"] + [f"{w}\t{int(c)}" for w, c in zip(words[:n], list(counts[:n]), strict=True)]
                    if counts is not None else [str(w) for w in words[:n]])
        (folder / "metadata.tsv").write_bytes(("\n".join(metadata) + "\n").encode("utf-8"))
        config = projector.ProjectorConfig()
        embedding = config.embeddings.add()
        embedding.tensor_name, embedding.tensor_path = f"{tag}:{step:05d}", f"{subdir}/tensors.tsv"
        embedding.metadata_path = f"{subdir}/metadata.tsv"
        projector.visualize_embeddings(sw.get_logdir(), config)
        sw.flush()
    finally:
        if own:
            sw.close()
    return n


def flat_hyperparameters(config: Mapping[str, Any]) -> Dict[str, Any]:
    """A config (plain data, or composed) as `group.key -> int | float | str`, less bookkeeping settings; bools
    and lists (comma-joined) as text, None dropped."""
    tree = as_record(config)
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
            elif prefix == "corpus." and key in HF_ONLY and node.get("kind") != "hf":
                continue  # a dataset's split and column mean nothing for a file
            elif isinstance(value, (list, tuple)):
                flat[name] = ",".join(str(v) for v in value)
            elif isinstance(value, bool):
                flat[name] = str(value).lower()  # torch would log a bool as the number 0 or 1
            elif value is not None:
                flat[name] = value
    walk(tree, "")
    return flat


def log_hparams(writer: Any, config: Mapping[str, Any], step: int) -> None:
    """Write the run's session (hyperparameters, success) into `writer`'s event dir. Its metric columns in the
    HParams tab are the last values of the run's scalars (written before): the final loss and evaluation."""
    from torch.utils.tensorboard.summary import hparams

    _experiment, session_start, session_end = hparams(flat_hyperparameters(config), {})
    writer.file_writer.add_summary(session_start, step)
    writer.file_writer.add_summary(session_end, step)
    writer.flush()
