"""Checkpoint files: atomic writes, retention, damage detection, safe loading, failed writes, run-dir checks."""

from __future__ import annotations

import errno
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

import sgns.train.checkpoint as ck
from sgns.errors import SGNSError
from sgns.train.checkpoint import (
    latest_loadable,
    list_checkpoints,
    load_checkpoint,
    remove_stale_temp_files,
    save_checkpoint,
)
from sgns.train.rundir import RunLock, check_run_dir

CONFIG = {"corpus": {"kind": "text", "path": "c.txt"}, "data": {"window": 5, "cache_dir": "/x"},
          "model": {"dim": 8}, "optimizer": {"lr": 0.025}, "trainer": {"epochs": 2, "seed": 1, "resume": "auto"}}


def state(step: int, config: dict = CONFIG) -> dict:
    g = torch.Generator().manual_seed(step)
    return {"model": {"input.weight": torch.randn(50, 8, generator=g), "output.weight": torch.zeros(50, 8)},
            "optimizer": None, "progress": {"step": step, "finished": False, "words_done": 1.5 * step},
            "vocab": {"words": ["a", "b"], "counts": [3, 2]}, "config": config}


def test_roundtrip_keeps_every_value(tmp_path: Path):
    s = state(7)
    path = save_checkpoint(s, tmp_path, 7, keep=2)
    assert path == tmp_path / "checkpoints" / "step-00000007.pt"
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["model"]["input.weight"], s["model"]["input.weight"])
    assert loaded["progress"] == s["progress"] and loaded["config"] == s["config"]
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_torchs_own_zip_crcs_are_left_out_and_ours_still_catches_damage(tmp_path: Path):
    """torch.save's CRC32 of each record costs about 1 s per 0.8 GB table and torch.load never checks it: a
    checkpoint carries only sgns's checksum (test_damaged_newest_is_reported_and_previous_used: it catches damage),
    and torch's setting is as it was after the save."""
    if not hasattr(torch.serialization, "set_crc32_options"):
        pytest.skip("this torch always writes its zip CRCs")
    before = torch.serialization.get_crc32_options()
    path = save_checkpoint(state(3), tmp_path, 3, keep=2)
    with zipfile.ZipFile(path) as z:
        tensors = [info for info in z.infolist() if "/data/" in info.filename]
    assert tensors and all(info.CRC == 0 for info in tensors)
    assert torch.serialization.get_crc32_options() == before
    assert torch.equal(load_checkpoint(path)["model"]["input.weight"], state(3)["model"]["input.weight"])


def test_a_large_tensors_crc_in_parts_is_zlibs_crc_of_the_whole(monkeypatch: pytest.MonkeyPatch):
    """state_checksum's CRC of a large tensor, computed in one part per thread and joined (crc32_combine), is the
    one zlib gives the whole: checkpoints written before (one part) still verify."""
    import zlib

    import numpy as np

    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 4097, 100_003):
        data = rng.integers(0, 256, n, dtype=np.uint8)
        for cut in (0, 1, n // 2, n):
            assert ck.crc32_combine(zlib.crc32(data[:cut], 77), zlib.crc32(data[cut:]), n - cut) == zlib.crc32(data, 77)
    monkeypatch.setattr(ck, "PARALLEL_CRC_BYTES", 1000)
    before = torch.get_num_threads()
    big = {"model": {"input.weight": torch.randn(1001, 3)}, "step": 1}
    whole = zlib.crc32(big["model"]["input.weight"].numpy().view(np.uint8).reshape(-1), zlib.crc32(b"x"))
    sums = set()
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            assert ck._crc32(big["model"]["input.weight"].numpy().view(np.uint8).reshape(-1), zlib.crc32(b"x")) == whole
            sums.add(ck.state_checksum(big))
        assert len(sums) == 1
    finally:
        torch.set_num_threads(before)


def test_only_the_last_n_are_kept(tmp_path: Path):
    for step in (10, 20, 30, 40):
        save_checkpoint(state(step), tmp_path, step, keep=3)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000020.pt", "step-00000030.pt",
                                                            "step-00000040.pt"]


@pytest.mark.parametrize("damage", ["truncated", "empty", "flipped_tensor_byte", "flipped_last_byte", "garbage"])
def test_damaged_newest_is_reported_and_previous_used(tmp_path: Path, damage: str):
    save_checkpoint(state(1), tmp_path, 1, keep=5)
    newest = save_checkpoint(state(2), tmp_path, 2, keep=5)
    data = bytearray(newest.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "empty":
        data = bytearray()
    elif damage == "flipped_tensor_byte":  # torch's own reader does not notice this one: our checksum does
        data[len(data) // 2] ^= 0x01
    elif damage == "flipped_last_byte":
        data[-30] ^= 0xFF
    else:
        data = bytearray(os.urandom(2000))
    newest.write_bytes(bytes(data))
    warnings = []
    path, loaded = latest_loadable(tmp_path, warn=warnings.append)
    assert path.name == "step-00000001.pt" and loaded["progress"]["step"] == 1
    assert len(warnings) == 1 and "step-00000002.pt" in warnings[0] and "previous" in warnings[0]


def test_all_damaged_gives_none_and_check_run_dir_refuses(tmp_path: Path):
    newest = save_checkpoint(state(1), tmp_path, 1, keep=5)
    newest.write_bytes(newest.read_bytes()[:100])
    assert latest_loadable(tmp_path, warn=lambda _: None) is None
    with pytest.raises(SGNSError, match="no checkpoint .* can be loaded"):
        check_run_dir(tmp_path, CONFIG, warn=lambda _: None)


class RunsCode:
    """Unpickling this object writes a marker file: proof that arbitrary code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


@pytest.mark.parametrize("fmt", ["torch_zip", "raw_pickle"])
def test_a_checkpoint_that_would_run_code_is_refused(tmp_path: Path, fmt: str):
    marker = tmp_path / "code_ran"
    payload = {"model": {"w": torch.zeros(2)}, "progress": {}, "evil": RunsCode(marker)}
    path = tmp_path / "checkpoints" / "step-00000005.pt"
    path.parent.mkdir()
    if fmt == "torch_zip":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    # The file really is dangerous: a plain unpickling runs the code.
    torch.load(path, weights_only=False) if fmt == "torch_zip" else pickle.loads(path.read_bytes())
    assert marker.read_text() == "ran"
    marker.unlink()
    with pytest.raises(SGNSError, match="refused for safety"):
        load_checkpoint(path)
    assert not marker.exists()
    assert latest_loadable(tmp_path, warn=lambda _: None) is None
    assert not marker.exists()


def test_plain_data_without_checksum_or_model_is_refused(tmp_path: Path):
    path = tmp_path / "x.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(SGNSError, match="not an sgns checkpoint"):
        load_checkpoint(path)
    torch.save(state(1), path)  # right shape, but not written by save_checkpoint
    with pytest.raises(SGNSError, match="no checksum"):
        load_checkpoint(path)
    with pytest.raises(SGNSError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def _assert_previous_intact(tmp_path: Path, previous: Path, before: bytes) -> None:
    assert [p.name for p in list_checkpoints(tmp_path)] == [previous.name]
    assert previous.read_bytes() == before
    assert load_checkpoint(previous)["progress"]["step"] == 1
    assert not [p for p in previous.parent.iterdir() if p.name.startswith(".")]


def test_disk_full_leaves_previous_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    previous = save_checkpoint(state(1), tmp_path, 1, keep=1)
    before = previous.read_bytes()
    folder = previous.parent

    def mkstemp_on_full_disk(dir: str, prefix: str, suffix: str):
        # a real ENOSPC from the kernel: the "temporary file" is /dev/full; the name is where it would be
        name = Path(dir) / f"{prefix}full{suffix}"
        name.write_bytes(b"")
        return os.open("/dev/full", os.O_WRONLY), str(name)

    monkeypatch.setattr(ck.tempfile, "mkstemp", mkstemp_on_full_disk)
    expected = r"could not write checkpoint .*step-00000002.pt: No space left on device; .*step-00000001.pt is intact"
    with pytest.raises(SGNSError, match=expected):
        save_checkpoint(state(2), tmp_path, 2, keep=1)
    assert folder.is_dir()
    _assert_previous_intact(tmp_path, previous, before)


FILE_SIZE_LIMITED_SAVE = """
import resource, signal, sys, torch
from sgns.train.checkpoint import save_checkpoint
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
state = {"model": {"input.weight": torch.randn(1000, 100)}, "progress": {"step": 2}}  # 400 kB: past torch's buffer
save_checkpoint(state, sys.argv[1], 2, keep=1)
"""


def test_a_write_failing_inside_torchs_writer_names_the_systems_reason(tmp_path: Path):
    # A real failed write(2) in the middle of a large tensor (a full disk fails the same way): torch's zip writer
    # reports it as "[enforce fail at inline_container.cc] unexpected pos"; the error says the system's reason.
    previous = save_checkpoint(state(1), tmp_path, 1, keep=1)
    before = previous.read_bytes()
    done = subprocess.run([sys.executable, "-c", FILE_SIZE_LIMITED_SAVE, str(tmp_path)], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert "could not write checkpoint" in last and "step-00000002.pt: File too large; " in last, done.stderr
    assert "enforce fail" not in done.stderr
    _assert_previous_intact(tmp_path, previous, before)


def test_checkpoints_get_the_mode_of_every_other_output(tmp_path: Path):
    umask = os.umask(0o022)
    try:
        path = save_checkpoint(state(1), tmp_path, 1, keep=1)
        assert path.stat().st_mode & 0o777 == 0o644
        os.umask(0o027)
        path = save_checkpoint(state(2), tmp_path, 2, keep=1)
        assert path.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(umask)


def test_read_only_directory_leaves_previous_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    previous = save_checkpoint(state(1), tmp_path, 1, keep=1)
    before = previous.read_bytes()
    if os.geteuid() == 0:  # root ignores permission bits: raise what a read-only directory raises
        def read_only(*args, **kwargs):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

        monkeypatch.setattr(ck.tempfile, "mkstemp", read_only)
    else:
        previous.parent.chmod(0o555)
    try:
        with pytest.raises(SGNSError, match="could not write checkpoint .*Permission denied.*is intact"):
            save_checkpoint(state(2), tmp_path, 2, keep=1)
    finally:
        previous.parent.chmod(0o755)
    _assert_previous_intact(tmp_path, previous, before)


def test_stale_temp_files_are_removed(tmp_path: Path):
    save_checkpoint(state(1), tmp_path, 1, keep=1)
    (tmp_path / "checkpoints" / ".tmp-abc.pt").write_bytes(b"half")
    assert remove_stale_temp_files(tmp_path) == 1
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-00000001.pt"]


def test_check_run_dir_refusals(tmp_path: Path):
    assert check_run_dir(tmp_path / "new", CONFIG) is None
    save_checkpoint(state(3), tmp_path, 3, keep=1)
    path, found = check_run_dir(tmp_path, CONFIG)
    assert found["progress"]["step"] == 3
    other = {**CONFIG, "data": {"window": 9, "cache_dir": "/elsewhere"}}
    with pytest.raises(SGNSError, match=r"other settings: data.window=5 \(this command: 9\)"):
        check_run_dir(tmp_path, other)
    ignored = {**CONFIG, "data": {"window": 5, "cache_dir": "/elsewhere"}, "eval": {"every_words": 7}}
    assert check_run_dir(tmp_path, ignored) is not None  # cache dir and eval do not change what is trained
    never = {**CONFIG, "trainer": {**CONFIG["trainer"], "resume": "never"}}
    with pytest.raises(SGNSError, match="trainer.resume=never would overwrite"):
        check_run_dir(tmp_path, never)
    elsewhere = tmp_path / "fork"
    fork = {**CONFIG, "trainer": {**CONFIG["trainer"], "resume": str(path)}}
    assert check_run_dir(elsewhere, fork)[0] == path  # continuing a checkpoint into a new dir is fine
    lock = RunLock(tmp_path).acquire()
    try:
        with pytest.raises(SGNSError, match="in use by another sgns-train process"):
            check_run_dir(tmp_path, CONFIG)
        with pytest.raises(SGNSError, match="in use"):
            RunLock(tmp_path).acquire()
    finally:
        lock.release()
    assert check_run_dir(tmp_path, CONFIG) is not None


def test_a_torchscript_archive_is_one_line_without_torchs_warning(tmp_path: Path):
    """torch.load warns before dispatching a TorchScript archive to torch.jit.load (issue 30 item 6: sgns-export
    printed that UserWarning before its error line)."""
    path = tmp_path / "model.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    done = subprocess.run(["sgns-export", str(path), str(tmp_path / "out.bin")], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"sgns-export: error: checkpoint {path} cannot be loaded: it is a "
                                        f"TorchScript archive (torch.jit.save), not an sgns checkpoint"]
    assert not (tmp_path / "out.bin").exists()


def test_files_torch_cannot_read_are_named_in_words(tmp_path: Path):
    """torch's first line named its internals: a KeyError '101' for a text file, inline_container.cc for a zip
    it did not write."""
    good = save_checkpoint(state(1), tmp_path, 1, keep=1).read_bytes()
    cases = {"notes.pt": (b"hello world\n", "it is not a torch file (neither a zip archive nor a pickle)"),
             "half.pt": (good[:len(good) // 2], "the file is truncated or damaged (PytorchStreamReader failed "
                                                "reading zip archive: failed finding central directory)")}
    other_zip = tmp_path / "other.pt"
    with zipfile.ZipFile(other_zip, "w") as z:
        z.writestr("a.txt", "hello")
    for name, (content, _) in cases.items():
        (tmp_path / name).write_bytes(content)
    cases["other.pt"] = (b"", "it is a zip archive that torch.save did not write")
    for name, (_, reason) in cases.items():
        with pytest.raises(SGNSError) as raised:
            load_checkpoint(tmp_path / name)
        assert str(raised.value) == f"checkpoint {tmp_path / name} cannot be loaded: {reason}"
