"""Checkpoints: one dict (model, optimizer, vocabulary, progress, RNG states, config), written atomically.

Files are `checkpoints/step-00001234.pt`. A write goes to a temporary file in the same directory, is
flushed and fsynced, then renamed over the final name, so a crash mid-write never leaves a partial
checkpoint under a real name. Reading uses `torch.load(weights_only=True)` only: a file that needs
arbitrary unpickling is refused.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import torch

from sgns.errors import SGNSError

PATTERN = re.compile(r"^step-(\d+)\.pt$")


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: str | Path) -> List[Path]:
    """Checkpoints of a run, oldest first."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := PATTERN.match(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(state: dict, run_dir: str | Path, step: int, keep: int) -> Path:
    folder = checkpoint_dir(run_dir)
    path = folder / f"step-{step:08d}.pt"
    tmp = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".pt")
        with os.fdopen(fd, "wb") as f:
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
    except OSError as e:
        raise SGNSError(f"could not write checkpoint {path}: {e.strerror or e}; the previous checkpoint "
                        f"is intact") from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    for old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load with weights_only=True; raise SGNSError for a missing, corrupt or unsafe file."""
    path = Path(path)
    if not path.is_file():
        raise SGNSError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for bad files
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            reason = "it holds objects other than tensors and plain data, refused for safety"
        raise SGNSError(f"checkpoint {path} cannot be loaded: {reason}") from None
    if not isinstance(state, dict) or "model" not in state:
        raise SGNSError(f"checkpoint {path} is not an sgns checkpoint (no model state)")
    return state


def latest_loadable(run_dir: str | Path, warn: Callable[[str], None] = print,
                    map_location: str | torch.device = "cpu") -> Optional[Tuple[Path, dict]]:
    """The newest checkpoint that loads; a damaged newer one is reported and skipped."""
    for path in reversed(list_checkpoints(run_dir)):
        try:
            return path, load_checkpoint(path, map_location)
        except SGNSError as e:
            warn(f"warning: {e}; trying the previous checkpoint")
    return None
