"""Checkpoints: one dict (model, optimizer, vocabulary, progress, RNG states, config), written atomically.

Files are `checkpoints/step-00001234.pt`. A write goes to a temporary file in the same directory, is
flushed and fsynced, then renamed over the final name, so a crash mid-write never leaves a partial
checkpoint under a real name. Every checkpoint carries a CRC32 of its whole content (tensors and plain
values): torch's zip reader notices truncation but not a flipped byte inside a tensor, we do. Reading uses
`torch.load(weights_only=True)` only: a file that needs arbitrary unpickling is refused.

Whether a run directory may be (re)used is decided in sgns.train.rundir.
"""

from __future__ import annotations

import os
import pickle
import re
import signal
import tempfile
import types
import warnings
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, Tuple

import torch

from sgns.errors import SGNSError

PATTERN = re.compile(r"^step-(\d+)\.pt$")
TEMP_PREFIX = ".tmp-"
# Test hook: `SGNS_FAULT_KILL_IN_CHECKPOINT=STEP` makes the process SIGKILL itself halfway through writing the
# checkpoint of that step, so the "killed during a checkpoint write" case can be tested deterministically.
FAULT_ENV = "SGNS_FAULT_KILL_IN_CHECKPOINT"


class _UnmemoizedPickler(pickle.Pickler):
    """A pickler without the memo (pickle's `fast` mode): it would hold an entry for every vocabulary word while
    the checkpoint is written (+40 MiB at 810k words, docs/memory.md). A checkpoint holds no object that refers
    to itself, which is what the memo is needed for; the file loads the same."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fast = True


_UNMEMOIZED_PICKLE = types.SimpleNamespace(__name__="sgns_unmemoized_pickle", Pickler=_UnmemoizedPickler)


@contextmanager
def _without_zip_crcs() -> Iterator[None]:
    """torch.save without its own CRC32 of each zip record (where torch can leave it out; torch.load never checks
    it): `state_checksum` already covers every byte that matters, with zlib's CRC, several times faster than the
    one torch's zip writer computes (0.8 GB model=subword table: about 1 s of the final checkpoint, docs/subwords.md).
    Only zip tools that test records (unzip -t) notice the missing CRCs."""
    get = getattr(torch.serialization, "get_crc32_options", None)
    set_ = getattr(torch.serialization, "set_crc32_options", None)
    if get is None or set_ is None:
        yield
        return
    before = get()
    set_(False)
    try:
        yield
    finally:
        set_(before)


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


PARALLEL_CRC_BYTES = 64 << 20  # a tensor from this size on has its CRC computed in parts, one per thread


def _gf2_times(matrix: List[int], vector: int) -> int:
    total, row = 0, 0
    while vector:
        if vector & 1:
            total ^= matrix[row]
        vector >>= 1
        row += 1
    return total


def crc32_combine(crc1: int, crc2: int, length2: int) -> int:
    """zlib's crc32_combine (not exposed by Python's zlib): the CRC32 of A + B from crc1 = crc32(A) and
    crc2 = crc32(B), length2 = len(B): crc1 carried through length2 zero bytes by squaring the one-zero-bit
    operator (a 32 x 32 matrix over GF(2)), then xored with crc2."""
    if length2 <= 0:
        return crc1
    zeros = [0xEDB88320] + [1 << n for n in range(31)]  # the operator of one zero bit
    for _ in range(3):  # squared three times: one zero byte
        zeros = [_gf2_times(zeros, v) for v in zeros]
    while length2:  # the bits of length2, lowest first: 1, 2, 4, ... zero bytes
        if length2 & 1:
            crc1 = _gf2_times(zeros, crc1)
        length2 >>= 1
        if length2:
            zeros = [_gf2_times(zeros, v) for v in zeros]
    return crc1 ^ crc2


def _crc32(data: Any, crc: int) -> int:
    """zlib.crc32(data, crc) of a flat uint8 array; a large one in parts on torch's threads (zlib lets go of the
    GIL), joined with `crc32_combine`: the same value, about half the time on 2 threads (a 0.8 GB table: 0.4 s)."""
    threads = torch.get_num_threads()
    if len(data) < PARALLEL_CRC_BYTES or threads < 2:
        return zlib.crc32(data, crc)
    bounds = [len(data) * i // threads for i in range(threads + 1)]
    parts = [data[bounds[i] : bounds[i + 1]] for i in range(threads)]
    with ThreadPoolExecutor(threads - 1) as pool:
        later = [pool.submit(zlib.crc32, part) for part in parts[1:]]
        crc = zlib.crc32(parts[0], crc)
        for part, future in zip(parts[1:], later, strict=True):
            crc = crc32_combine(crc, future.result(), len(part))
    return crc


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
                crc = _crc32(t.reshape(-1).view(torch.uint8).numpy(), crc)
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


class _ErrorKeepingFile:
    """File wrapper that keeps the OSError a write raised: torch's zip writer turns it into "[enforce fail at
    inline_container.cc] unexpected pos ...", which hides the reason (a full disk, a file size limit)."""

    def __init__(self, f: Any) -> None:
        self.f, self.error = f, None

    def write(self, data: Any) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = e
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self.f, name)


def _file_mode() -> int:
    """The mode every other output gets (0644 under the usual umask): mkstemp makes 0600."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


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
    tmp, writer = None, None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=TEMP_PREFIX, suffix=".pt")
        os.fchmod(fd, _file_mode())
        with os.fdopen(fd, "wb") as f:
            writer = _ErrorKeepingFile(f)
            with _without_zip_crcs():
                if _fault_step() == step:
                    expected = sum(t.numel() * t.element_size() for t in state["model"].values())
                    torch.save(state, _HalfwayKiller(writer, expected), pickle_module=_UNMEMOIZED_PICKLE)
                else:
                    torch.save(state, writer, pickle_module=_UNMEMOIZED_PICKLE)
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
        if not isinstance(e, OSError) and writer is not None and writer.error is not None:
            e = writer.error  # the write's own reason, not torch's "unexpected pos"
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


def _load_failure(path: Path, error: Exception) -> str:
    """Why torch.load failed on `path`, in words: torch's own first line names its internals (a KeyError '101'
    for a text file, inline_container.cc for a zip that torch did not write)."""
    text = str(error).strip()
    if "TorchScript archive" in text:
        return "it is a TorchScript archive (torch.jit.save), not an sgns checkpoint"
    if "weights_only" in text or "Unsupported global" in text or "Unsupported operand" in text:
        return "it holds pickled objects other than tensors and plain data; refused for safety, nothing was run"
    if not text:
        return f"{type(error).__name__} (the file is empty or truncated)"
    with path.open("rb") as f:
        head = f.read(4)
    first = text.splitlines()[0]
    if head.startswith(b"PK"):  # a zip archive, torch.save's format
        if zipfile.is_zipfile(path) and "not in a subdirectory" in text:
            return "it is a zip archive that torch.save did not write"
        return f"the file is truncated or damaged ({first.split('. ')[0]})"
    if not head.startswith(b"\x80"):  # nor a pickle (torch's legacy format)
        return "it is not a torch file (neither a zip archive nor a pickle)"
    return f"the file is truncated or damaged ({first})"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", mmap: bool = False) -> dict:
    """Load with weights_only=True; raise SGNSError for a missing, corrupt or unsafe file.

    `mmap=True` maps the tensors instead of reading them (cheap, for looking at the config and progress); a
    model=subword checkpoint's input table then stays as stored (the rows words have, "input_fill" beside them).
    """
    path = Path(path)
    if not path.is_file():
        raise SGNSError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():
            # torch.load warns, then dispatches a TorchScript archive (torch.jit.save's model.pt) to torch.jit.load;
            # as an error it is one line, not a warning before the refusal
            warnings.filterwarnings("error", message=".*TorchScript archive", category=UserWarning)
            try:
                state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
            except RuntimeError as e:
                if not (mmap and "mmap" in str(e)):
                    raise
                state = torch.load(path, map_location=map_location, weights_only=True)  # not a zip file: plain read
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for bad files
        raise SGNSError(f"checkpoint {path} cannot be loaded: {_load_failure(path, e)}") from None
    if not isinstance(state, dict) or "model" not in state or "progress" not in state:
        raise SGNSError(f"checkpoint {path} is not an sgns checkpoint (no model state)")
    stored = state.pop("checksum", None)
    if stored is None:
        raise SGNSError(f"checkpoint {path} has no checksum: not written by this version of sgns")
    if not mmap and state_checksum(state) != stored:
        raise SGNSError(f"checkpoint {path} is corrupted: its content does not match its checksum")
    if "input_fill" in state and not mmap:  # model=subword's trained input rows: the whole table back (a mapped
        from sgns.model import unpack_input_rows  # read keeps them: sgns.train.runs.checkpoint_tables fills them)

        state["model"] = unpack_input_rows(state["model"], state["input_fill"])  # the fill stays: resume keeps it
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
