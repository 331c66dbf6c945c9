"""Checkpoints: one dict (model, optimizer, vocabulary, progress, RNG states, config), written atomically.

Files are `checkpoints/step-00001234.pt`. A write goes to a temporary file in the same directory, is
flushed and fsynced, then renamed over the final name, so a crash mid-write never leaves a partial
checkpoint under a real name. Every checkpoint carries a CRC32 of its whole content (tensors and plain
values): torch's zip reader notices truncation but not a flipped byte inside a tensor, we do. Reading uses
`torch.load(weights_only=True)` only: a file that needs arbitrary unpickling is refused.

This module also decides whether a run directory may be (re)used: `check_run_dir` refuses a directory that
holds a different run, or checkpoints that `trainer.resume=never` would overwrite, before anything is written.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import tempfile
import zlib
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from sgns.errors import SGNSError

PATTERN = re.compile(r"^step-(\d+)\.pt$")
TEMP_PREFIX = ".tmp-"
LOCK_NAME = ".sgns.lock"
# Test hook: `SGNS_FAULT_KILL_IN_CHECKPOINT=STEP` makes the process SIGKILL itself halfway through writing the
# checkpoint of that step, so the "killed during a checkpoint write" case can be tested deterministically.
FAULT_ENV = "SGNS_FAULT_KILL_IN_CHECKPOINT"

# Settings that change what a run computes. Resuming with any of them different would not continue the same run;
# everything else (device, threads, logging, checkpoint cadence, eval files, progress bar) may change on resume.
RESULT_KEYS = ("corpus", "data", "model", "optimizer", "trainer.epochs", "trainer.seed")
IGNORED_KEYS = {"data.cache_dir", "data.prefetch", "corpus.synthetic.evaluate"}


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: str | Path) -> List[Path]:
    """Checkpoints of a run, oldest first."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := PATTERN.match(p.name))]
    return [p for _, p in sorted(found)]


def remove_stale_temp_files(run_dir: str | Path) -> int:
    """Delete half-written checkpoints left by a process killed mid-write; return how many."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return 0
    stale = [p for p in folder.iterdir() if p.name.startswith(TEMP_PREFIX)]
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


def state_checksum(state: Any) -> int:
    """CRC32 over every leaf of a checkpoint dict, in order: tensor bytes (with dtype and shape) and plain values."""
    crc = 0

    def walk(node: Any) -> None:
        nonlocal crc
        if isinstance(node, dict):
            for key, value in node.items():
                crc = zlib.crc32(repr(key).encode(), crc)
                walk(value)
        elif isinstance(node, (list, tuple)):
            crc = zlib.crc32(f"{type(node).__name__}{len(node)}".encode(), crc)
            for value in node:
                walk(value)
        elif isinstance(node, torch.Tensor):
            t = node.detach().cpu().contiguous()
            crc = zlib.crc32(f"{t.dtype}{tuple(t.shape)}".encode(), crc)
            if t.numel():
                crc = zlib.crc32(t.reshape(-1).view(torch.uint8).numpy(), crc)
        else:
            crc = zlib.crc32(repr(node).encode(), crc)

    walk(state)
    return crc


class _HalfwayKiller:
    """File wrapper for the fault hook: SIGKILLs this process once half of `expected` bytes are written."""

    def __init__(self, f: Any, expected: int) -> None:
        self.f, self.expected, self.written = f, expected, 0

    def write(self, data: Any) -> int:
        n = self.f.write(data)
        self.written += n
        if self.written >= self.expected // 2:
            self.f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return n

    def __getattr__(self, name: str) -> Any:
        return getattr(self.f, name)


def _fault_step() -> Optional[int]:
    value = os.environ.get(FAULT_ENV)
    return int(value) if value and value.isdigit() else None


def save_checkpoint(state: dict, run_dir: str | Path, step: int, keep: int) -> Path:
    """Write `state` atomically as checkpoints/step-N.pt, then delete all but the newest `keep` checkpoints.

    On any failure (disk full, read-only directory) the temporary file is removed, the older checkpoints
    are untouched and an SGNSError says so.
    """
    folder = checkpoint_dir(run_dir)
    path = folder / f"step-{step:08d}.pt"
    state = {**state, "checksum": state_checksum(state)}
    tmp = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=TEMP_PREFIX, suffix=".pt")
        with os.fdopen(fd, "wb") as f:
            if _fault_step() == step:
                expected = sum(t.numel() * t.element_size() for t in state["model"].values())
                torch.save(state, _HalfwayKiller(f, expected))
            else:
                torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)
    except (OSError, RuntimeError) as e:  # torch's zip writer reports a failed write as RuntimeError
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).strip().splitlines()[0]
        previous = [p.name for p in list_checkpoints(run_dir) if p != path]
        kept = f"the previous checkpoint {previous[-1]} is intact" if previous else "no earlier checkpoint exists"
        raise SGNSError(f"could not write checkpoint {path}: {reason}; {kept}") from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    for old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", mmap: bool = False) -> dict:
    """Load with weights_only=True; raise SGNSError for a missing, corrupt or unsafe file.

    `mmap=True` maps the tensors instead of reading them (cheap, for looking at the config and progress).
    """
    path = Path(path)
    if not path.is_file():
        raise SGNSError(f"checkpoint not found: {path}")
    try:
        try:
            state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
        except RuntimeError as e:
            if not (mmap and "mmap" in str(e)):
                raise
            state = torch.load(path, map_location=map_location, weights_only=True)  # not a zip file: plain read
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for bad files
        text = str(e).strip()
        reason = text.splitlines()[0] if text else f"{type(e).__name__} (the file is empty or truncated)"
        if "weights_only" in text or "Unsupported global" in text or "Unsupported operand" in text:
            reason = "it holds pickled objects other than tensors and plain data; refused for safety, nothing was run"
        raise SGNSError(f"checkpoint {path} cannot be loaded: {reason}") from None
    if not isinstance(state, dict) or "model" not in state or "progress" not in state:
        raise SGNSError(f"checkpoint {path} is not an sgns checkpoint (no model state)")
    stored = state.pop("checksum", None)
    if stored is None:
        raise SGNSError(f"checkpoint {path} has no checksum: not written by this version of sgns")
    if not mmap and state_checksum(state) != stored:
        raise SGNSError(f"checkpoint {path} is corrupted: its content does not match its checksum")
    return state


def latest_loadable(run_dir: str | Path, warn: Callable[[str], None] = print,
                    map_location: str | torch.device = "cpu", mmap: bool = False) -> Optional[Tuple[Path, dict]]:
    """The newest checkpoint that loads; a damaged newer one is reported and skipped."""
    for path in reversed(list_checkpoints(run_dir)):
        try:
            return path, load_checkpoint(path, map_location, mmap=mmap)
        except SGNSError as e:
            warn(f"warning: {e}; trying the previous checkpoint")
    return None


# ------------------------------------------------------------------------------------------- run dirs


def result_settings(config: Dict[str, Any]) -> Dict[str, Any]:
    """The flattened settings (RESULT_KEYS) of a resolved config dict that decide what a run computes."""
    flat: Dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else str(key), value)
        elif prefix not in IGNORED_KEYS:
            flat[prefix] = list(node) if isinstance(node, tuple) else node

    for key in RESULT_KEYS:
        node: Any = config
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        walk(key, node)
    return flat


def settings_differences(previous: Dict[str, Any], current: Dict[str, Any]) -> List[str]:
    """`key=old (now new)` for every result setting that differs between two resolved configs."""
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


def check_run_dir(run_dir: str | Path, config: Dict[str, Any], warn: Callable[[str], None] = print,
                  mmap: bool = True, locked_by_us: bool = False) -> Optional[Tuple[Path, dict]]:
    """Decide whether a run may train in `run_dir` with the resolved `config`; return the checkpoint to resume.

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
