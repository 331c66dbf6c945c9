"""Run directories: the lock a training process holds, and whether a directory may be (re)used.

`check_run_dir` refuses, before anything is written, a directory in use by another process, one that holds a
different run (other result settings, see sgns.config.result_settings), or checkpoints that
`trainer.resume=never` would overwrite; otherwise it finds the checkpoint to continue from.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any, Callable, List, Mapping, Optional, Tuple

from omegaconf import DictConfig

from sgns.config import result_settings
from sgns.errors import SGNSError
from sgns.train.checkpoint import checkpoint_dir, latest_loadable, list_checkpoints, load_checkpoint

LOCK_NAME = ".sgns.lock"


def settings_differences(previous: Mapping[str, Any], current: Mapping[str, Any] | DictConfig) -> List[str]:
    """`key=old (now new)` for every result setting that differs between two configs."""
    old, new = result_settings(previous), result_settings(current)
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


def check_run_dir(run_dir: str | Path, config: Mapping[str, Any] | DictConfig, warn: Callable[[str], None] = print,
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
        path = Path(mode)
        found = (path, load_checkpoint(path, mmap=mmap))
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
