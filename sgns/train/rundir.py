"""Run directories: what training writes there (RunDir), the lock it holds, and whether a directory may be (re)used.

`RunDir` is the train loop's one way to the run's files: the resume decision, vocab.txt, TensorBoard,
checkpoints, the vectors and metrics.json. Under torchrun rank 0 alone writes them; the other ranks hold an
`OtherRankRunDir`, whose writers do nothing, so the loop never asks which rank it is.

`check_run_dir` refuses, before anything is written, a directory in use by another process, one that holds a
different run (other result settings, see sgns.config.result_settings), or checkpoints that
`trainer.resume=never` would overwrite; otherwise it finds the checkpoint to continue from.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from tqdm.auto import tqdm

from sgns.config import EvalConfig, result_settings, setting_default
from sgns.errors import SGNSError
from sgns.train.checkpoint import (
    checkpoint_dir,
    latest_loadable,
    list_checkpoints,
    remove_stale_temp_files,
    save_checkpoint,
)
from sgns.train.metrics import LOSS_WARNING, objective, ranks_by_loss, read_metrics, write_metrics
from sgns.train.progress import PlainProgress, progress_bar
from sgns.train.runs import checkpoint_vectors, read_checkpoint
from sgns.train.tblog import NullTBLog, TBLog
from sgns.vectors import save_word2vec

LOCK_NAME = ".sgns.lock"
log = logging.getLogger("sgns")


def settings_differences(previous: Mapping[str, Any], current: Mapping[str, Any]) -> List[str]:
    """`key=old (now new)` for every result setting that differs between two configs. A key the older config lacks
    (written before the key existed: model.minn, for one) counts as its default, which kept the old behaviour."""
    old, new = result_settings(previous), result_settings(current)
    old = {k: old[k] if k in old else setting_default(k) for k in set(old) | set(new)}
    return [f"{k}={old.get(k)!r} (this command: {new.get(k)!r})" for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)]


class RunLock:
    """An exclusive lock on a run directory, held while a process trains in it (released even on SIGKILL)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self.fd: Optional[int] = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise SGNSError(f"{self.path.parent} is in use by another sgns-train process; wait for it to finish "
                            f"or choose another hydra.run.dir") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def _in_use(run_dir: Path) -> bool:
    lock = run_dir / LOCK_NAME
    if not lock.is_file():
        return False
    fd = os.open(lock, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def check_run_dir(run_dir: str | Path, config: Mapping[str, Any], warn: Callable[[str], None] = print,
                  mmap: bool = True, locked_by_us: bool = False) -> Optional[Tuple[Path, dict]]:
    """Decide whether a run may train in `run_dir` with `config`; return the checkpoint to resume.

    Refuses (SGNSError, nothing written) a directory in use by another process, one whose checkpoints
    `trainer.resume=never` would overwrite, one holding a run with different result settings, and one whose
    checkpoints are all damaged. With `mmap=True` the returned checkpoint's tensors are only mapped;
    `locked_by_us`: this process holds the run dir's RunLock already.
    """
    run_dir = Path(run_dir)
    mode = str(config["trainer"]["resume"])
    found: Optional[Tuple[Path, dict]] = None
    if not run_dir.is_dir():
        pass
    elif not locked_by_us and _in_use(run_dir):
        raise SGNSError(f"{run_dir} is in use by another sgns-train process; wait for it to finish or choose "
                        f"another hydra.run.dir")
    elif mode == "never":
        if list_checkpoints(run_dir) or (run_dir / "vectors.bin").exists() or (run_dir / "vectors.txt").exists():
            raise SGNSError(f"{run_dir} already holds a run (checkpoints or vectors) that trainer.resume=never would "
                            f"overwrite: choose another hydra.run.dir, or delete that folder first")
        return None
    if mode not in ("auto", "never"):
        own = [p.resolve() for p in list_checkpoints(run_dir)] if run_dir.is_dir() else []
        if own and Path(mode).resolve() not in own:
            raise SGNSError(f"trainer.resume={mode} would continue another run inside {run_dir}, which holds its own "
                            f"checkpoints: choose a new hydra.run.dir for the continued run")
        found = read_checkpoint(mode, warn=warn, mmap=mmap)
    elif run_dir.is_dir():
        found = latest_loadable(run_dir, warn=warn, mmap=mmap)
        if found is None and list_checkpoints(run_dir):
            raise SGNSError(f"no checkpoint in {checkpoint_dir(run_dir)} can be loaded (see the warnings above): "
                            f"delete that folder to start the run over, or choose another hydra.run.dir")
        if found is None and _finished_record(run_dir):
            raise SGNSError(f"{run_dir} holds a finished run but no checkpoint to compare settings with: choose "
                            f"another hydra.run.dir")
    if found is not None:
        differences = settings_differences(found[1].get("config") or {}, config)
        if differences:
            raise SGNSError(f"{found[0]} belongs to a run with other settings: {'; '.join(differences[:4])}"
                            f"{' ...' if len(differences) > 4 else ''}. Use the same settings to resume it, or "
                            f"choose another hydra.run.dir")
    return found


def _finished_record(run_dir: Path) -> bool:
    try:
        return json.loads((run_dir / "metrics.json").read_text()).get("status") == "finished"
    except (OSError, ValueError, AttributeError):
        return False


class RunDir:
    """The run directory as the train loop writes it (under torchrun: rank 0's)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @contextlib.contextmanager
    def locked(self) -> Iterator[RunDir]:
        """Hold the run dir's lock (creating the directory) while the run trains in it."""
        lock = RunLock(self.path).acquire()
        try:
            yield self
        finally:
            lock.release()

    def find_resume(self, record: Mapping[str, Any]) -> Optional[dict]:
        """The checkpoint to continue from (None: start fresh); SGNSError if the directory holds a different run
        (`record`: this run's config as plain data)."""
        if remove_stale_temp_files(self.path):
            log.info(f"removed a half-written checkpoint left in {checkpoint_dir(self.path)} by an interrupted write")
        found = check_run_dir(self.path, record, warn=log.warning, mmap=False, locked_by_us=True)
        if found is not None:
            log.info(f"continuing from checkpoint {found[0]}")
        return found[1] if found else None

    def finished_metrics(self, checkpoint: dict) -> Dict[str, Any]:
        """A finished run trains nothing again: its metrics (restoring metrics.json from the final checkpoint)."""
        log.info(f"the run in {self.path} already finished; nothing to do (a new hydra.run.dir trains again)")
        if not _finished_record(self.path) and checkpoint.get("metrics"):
            # deleted since, or killed between the final checkpoint and metrics.json: the checkpoint holds a copy
            write_metrics(self.path, checkpoint["metrics"])
        binary = (checkpoint.get("config") or {}).get("trainer", {}).get("export_binary", True)
        vectors = self.path / ("vectors.bin" if binary else "vectors.txt")
        if not vectors.is_file() and "input.weight" in checkpoint.get("model", {}):  # deleted since: the final
            log.info(f"{vectors.name} is missing: rewriting it from the final checkpoint")  # checkpoint's model
            run = checkpoint_vectors(checkpoint, self.path)  # model=subword: each word's mean of rows
            self.write_vectors(run.words, run.input, binary)
        return checkpoint.get("metrics") or read_metrics(self.path)

    def write_vocab(self, vocab: Any) -> None:
        vocab.save(self.path / "vocab.txt")

    def write_resolved(self, text: str) -> None:
        """resolved.yaml: what the run asked for beside the values its "auto"/null settings resolved to."""
        (self.path / "resolved.yaml").write_text(text)

    def tblog(self, words_done: float, at_end: bool = False,
              last_point: Optional[Tuple[float, float, float]] = None) -> TBLog:
        """The run's TensorBoard log, continuing at `words_done` (TBLog says what `at_end` and `last_point` do)."""
        return TBLog(self.path / "tb", words_done, at_end, last_point)

    def progress_bar(self, total: float, initial: float, enabled: bool) -> Union[tqdm, PlainProgress]:
        """The console progress over corpus words: tqdm's bar on a terminal, plain lines when piped."""
        return progress_bar(total, initial, enabled)

    def benchmarks(self, eval_cfg: EvalConfig) -> EvalConfig:
        """The evaluations whose results this run dir records: all of `eval_cfg`."""
        return eval_cfg

    def save_checkpoint(self, build: Callable[[], dict], step: int, keep: int) -> None:
        """Write the checkpoint `build()` returns (it may refuse, raising SGNSError) as step `step`."""
        save_checkpoint(build(), self.path, step, keep)

    def write_vectors(self, words: Sequence[str], vectors: np.ndarray, binary: bool) -> None:
        path = self.path / ("vectors.bin" if binary else "vectors.txt")
        try:
            save_word2vec(path, words, vectors, binary=binary)
        except OSError as e:  # a full disk: one line (and metrics.json says failed), not Hydra's traceback
            raise SGNSError(f"could not write {path}: {e.strerror or e}; fix that and run the same command "
                            f"again") from None

    def write_metrics(self, metrics: Dict[str, Any], objective_setting: str) -> Dict[str, Any]:
        """Add the objective to `metrics` and write them as metrics.json; return them."""
        metrics = {**metrics, "objective": objective(objective_setting, metrics)}
        if ranks_by_loss(objective_setting, metrics):
            log.warning(LOSS_WARNING)
        write_metrics(self.path, metrics)
        return metrics


class OtherRankRunDir(RunDir):
    """The run directory as a torchrun rank other than 0 sees it: rank 0 decides, writes, evaluates and tells the
    story; this one writes nothing, evaluates nothing (the ranks' tables are the same) and logs only warnings."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(path)
        log.setLevel(logging.WARNING)

    @contextlib.contextmanager
    def locked(self) -> Iterator[RunDir]:
        yield self

    def find_resume(self, record: Mapping[str, Any]) -> Optional[dict]:
        return None  # rank 0's decision reaches every rank through the team

    def finished_metrics(self, checkpoint: dict) -> Dict[str, Any]:
        return {}

    def write_vocab(self, vocab: Any) -> None:
        pass

    def write_resolved(self, text: str) -> None:
        pass

    def tblog(self, words_done: float, at_end: bool = False,
              last_point: Optional[Tuple[float, float, float]] = None) -> TBLog:
        return NullTBLog()

    def progress_bar(self, total: float, initial: float, enabled: bool) -> Union[tqdm, PlainProgress]:
        return super().progress_bar(total, initial, enabled=False)

    def benchmarks(self, eval_cfg: EvalConfig) -> EvalConfig:
        return replace(eval_cfg, analogies=[], similarities=[], enabled=False)  # scores nothing

    def save_checkpoint(self, build: Callable[[], dict], step: int, keep: int) -> None:
        pass

    def write_vectors(self, words: Sequence[str], vectors: np.ndarray, binary: bool) -> None:
        pass

    def write_metrics(self, metrics: Dict[str, Any], objective_setting: str) -> Dict[str, Any]:
        return {}  # the run's metrics are rank 0's


def open_run_dir(path: str | Path, writer: bool) -> RunDir:
    """The run dir as this process uses it: the writer's (a process alone, rank 0), or another rank's."""
    return RunDir(path) if writer else OtherRankRunDir(path)
