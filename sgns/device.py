"""Device names (`auto`, `cpu`, `cuda`, `cuda:N`) to torch devices, for training and evaluation alike."""

from __future__ import annotations

import os

import torch

from sgns.config import DEVICE_NAME
from sgns.errors import SGNSError


def resolve_device(name: str, option: str = "trainer.device=") -> torch.device:
    """`auto` is CUDA where available, else the CPU; `option` names the setting in error messages."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SGNSError(f"{option}{name} but CUDA is not available here: use {option}cpu")
    if not DEVICE_NAME.fullmatch(name):
        raise SGNSError(f"{option}{name!r}: use auto, cpu, cuda or cuda:N")
    return torch.device(name)


def cpu_threads(requested: int = 0) -> int:
    """`trainer.threads`, where 0 means the cores this process may run on, shared evenly between the
    processes torchrun started on this machine (LOCAL_WORLD_SIZE): more threads than cores only race."""
    if requested:
        return requested
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)))
