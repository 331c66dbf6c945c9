"""The corpus stage under attack (issue 30): nothing hangs, nothing is left running or lying around, a damaged
cache never reaches the kernels. Every hang is bounded by a hard timeout (an alarm, or a child process killed),
so a regression fails instead of blocking the suite."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List

import numpy as np
import pytest

from sgns.corpus import encode, file_ranges, resolve_workers, run_in_order, text_source
from sgns.corpus.reading import check_corpus_file, usable_cores
from sgns.errors import SGNSError

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
TINY = ["model.dim=8", "data.min_count=1", "trainer.epochs=1", "trainer.device=cpu", "trainer.progress=false",
        "eval.benchmarks=[]"]


class Hung(Exception):
    pass


@contextmanager
def hard_timeout(seconds: int) -> Iterator[None]:
    """Raise Hung in this (main) thread after `seconds`: a Python loop that spins is interrupted."""

    def hung(*_):
        raise Hung(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def lines_file(path: Path, megabytes: int = 3, newlines: bool = True) -> Path:
    line = b"alpha beta gamma delta epsilon zeta eta theta\n" if newlines else b"alpha beta gamma delta "
    path.write_bytes(line * (megabytes * (1 << 20) // len(line)))
    return path


# ------------------------------------------------------------------------------- 1. hangs


@pytest.mark.parametrize("newlines", [True, False])
def test_a_file_truncated_under_file_ranges_is_reported_not_spun_on(tmp_path: Path, newlines: bool):
    path = lines_file(tmp_path / "c.txt", newlines=newlines)
    ranges = file_ranges(path, os.path.getsize(path), chunk_bytes=1 << 20)
    next(ranges)
    os.truncate(path, 1000)
    with hard_timeout(20), pytest.raises(SGNSError, match=r"changed while being read \(size 3,14.* -> 1,000 bytes"):
        list(ranges)


def test_a_file_grown_under_file_ranges_is_reported(tmp_path: Path):
    path = lines_file(tmp_path / "c.txt")
    ranges = file_ranges(path, os.path.getsize(path), chunk_bytes=1 << 20)
    next(ranges)
    with open(path, "ab") as f:
        f.write(b"appended meanwhile\n")
    with hard_timeout(20), pytest.raises(SGNSError, match="changed while being read"):
        list(ranges)


def test_a_file_truncated_while_the_parallel_reader_works_is_one_error(tmp_path: Path):
    path = lines_file(tmp_path / "c.txt", megabytes=6)
    source = text_source(path, 1000, False, workers=2, chunk_bytes=1 << 20)
    pieces = source.pieces(2)
    next(pieces)
    os.truncate(path, 1000)
    with hard_timeout(60), pytest.raises(SGNSError, match="changed while being read"):
        list(pieces)


@pytest.mark.parametrize("kind", ["fifo", "dev_zero", "directory", "socket"])
def test_a_non_regular_corpus_path_is_refused(tmp_path: Path, kind: str):
    if kind == "fifo":
        path = tmp_path / "pipe"
        os.mkfifo(path)
    elif kind == "socket":
        import socket

        path = tmp_path / "s"
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(path))
    else:
        path = Path("/dev/zero") if kind == "dev_zero" else tmp_path
    what = {"fifo": "is a FIFO", "dev_zero": "is a character device", "directory": "is a directory",
            "socket": "is a socket"}[kind]
    with hard_timeout(20), pytest.raises(SGNSError, match=what):
        text_source(path, 1000, False)


def test_a_symlink_loop_says_so(tmp_path: Path):
    loop = tmp_path / "loop"
    loop.symlink_to(tmp_path / "loop")
    with pytest.raises(SGNSError, match="symlink loop"):
        check_corpus_file(loop)
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "no")
    with pytest.raises(SGNSError, match="corpus file not found"):  # a dangling link is a missing file
        check_corpus_file(dangling)


def test_the_config_check_refuses_what_is_there_and_not_a_file_but_leaves_missing_files_to_the_job(tmp_path: Path):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    for missing in (tmp_path / "missing.txt", loop):  # a sweep's job fails alone when it reads it
        assert check_corpus_file(missing, missing_ok=True) == missing
    with pytest.raises(SGNSError, match="is a character device"):
        check_corpus_file("/dev/zero", missing_ok=True)


@pytest.mark.parametrize("kind", ["fifo", "dev_zero"])
def test_sgns_train_refuses_a_fifo_or_a_device_in_one_line_before_writing_anything(tmp_path: Path, kind: str):
    if kind == "fifo":
        path = tmp_path / "pipe"
        os.mkfifo(path)
    else:
        path = Path("/dev/zero")
    run = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "sgns.train", "corpus=text", f"corpus.path={path}", *TINY,
                             f"hydra.run.dir={run}", f"data.cache_dir={tmp_path / 'cache'}"],
                            capture_output=True, text=True, timeout=120, env=ENV, cwd=tmp_path)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "not a regular file" in lines[0], result.stderr[-2000:]
    assert not run.exists() and not (tmp_path / "cache").exists()


# ----------------------------------------------------------------------- 2. orphans and litter

def children_of(pid: int) -> List[int]:
    """Live (not zombie) processes whose parent is `pid`, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == pid and state != "Z":
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


READ_SLOWLY = """
import sys, time
from sgns.corpus import run_in_order

def slow(i):
    time.sleep(30)
    return i

for _ in run_in_order(((slow, (i,)) for i in range(8)), 2):
    pass
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and the parent-death signal are Linux's")
def test_the_reading_workers_die_with_their_parent_killed(tmp_path: Path):
    parent = subprocess.Popen([sys.executable, "-c", READ_SLOWLY], env=ENV)
    workers: List[int] = []
    try:
        deadline = time.monotonic() + 60
        while len(workers) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
            workers = children_of(parent.pid)
        assert len(workers) == 2, "the reader did not start its two workers"
        parent.kill()  # SIGKILL: no cleanup in the parent
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(map(alive, workers)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(map(alive, workers)), "the workers outlived their killed parent"
    finally:
        parent.kill()
        for pid in workers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


HOLD_A_TEMPORARY = """
import sys, time
from sgns.corpus import CorpusSource, encode, text_source

real = text_source(sys.argv[1], 1000, False, 1)

def pieces(workers):
    for piece in real.pieces(1):
        yield piece
    print("reading", flush=True)
    time.sleep(60)  # killed here, its temporary folder half written

encode(CorpusSource("held", sys.argv[3], pieces, 1000, 1), sys.argv[2], log=lambda _: None)
"""


def start_holding(corpus: Path, cache: Path, key: str) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", HOLD_A_TEMPORARY, str(corpus), str(cache), key], env=ENV,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "reading"
    return child


def temporaries(cache: Path) -> List[str]:
    return sorted(p.name for p in cache.iterdir() if p.name.startswith(".tokens-") and p.is_dir())


def test_a_killed_runs_temporary_cache_folder_is_removed_by_the_next_run(tmp_path: Path):
    corpus, cache = lines_file(tmp_path / "c.txt", megabytes=1), tmp_path / "cache"
    child = start_holding(corpus, cache, "dead")
    try:
        assert len(temporaries(cache)) == 1
    finally:
        child.kill()
        child.wait(timeout=10)
    said: List[str] = []
    encode(text_source(corpus, 1000, False, 1), cache, log=said.append)
    assert temporaries(cache) == []
    assert [line for line in said if "left by a run that died" in line]
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # its lock file too


def test_a_live_runs_temporary_cache_folder_is_kept(tmp_path: Path):
    corpus, cache = lines_file(tmp_path / "c.txt", megabytes=1), tmp_path / "cache"
    child = start_holding(corpus, cache, "live")
    try:
        held = temporaries(cache)
        encode(text_source(corpus, 1000, False, 1), cache, log=lambda _: None)
        assert temporaries(cache) == held and child.poll() is None
    finally:
        child.kill()
        child.wait(timeout=10)


def test_an_unlocked_temporary_folder_is_removed_only_once_a_day_old(tmp_path: Path):
    corpus, cache = lines_file(tmp_path / "c.txt", megabytes=1), tmp_path / "cache"
    old, recent = cache / ".tokens-0123-abcd", cache / ".tokens-0123-efgh"  # as sgns wrote them before locks
    for folder in (old, recent):
        folder.mkdir(parents=True)
        (folder / "ids.bin").write_bytes(b"\0" * 64)
    two_days_ago = time.time() - 2 * 86400
    os.utime(old / "ids.bin", (two_days_ago, two_days_ago))
    os.utime(old, (two_days_ago, two_days_ago))
    encode(text_source(corpus, 1000, False, 1), cache, log=lambda _: None)
    assert temporaries(cache) == [recent.name]


# ------------------------------------------------------------------------------ 3. a damaged cache


def damage(folder: Path, how: str) -> None:
    ids = np.fromfile(folder / "ids.bin", dtype=np.int32)
    if how == "huge id":
        ids[len(ids) // 2] = 1 << 30
    elif how == "negative id":
        ids[-1] = -7
    elif how == "short ids":
        ids = ids[:-3]
    elif how == "offsets":
        offsets = np.load(folder / "offsets.npy")
        offsets[1] = offsets[-1] + 5
        np.save(folder / "offsets.npy", offsets)
    elif how == "meta":
        (folder / "meta.json").write_text("{not json")
    ids.tofile(folder / "ids.bin")


@pytest.mark.parametrize("how", ["huge id", "negative id", "short ids", "offsets", "meta"])
def test_a_damaged_token_cache_entry_is_rebuilt_with_one_line(tmp_path: Path, how: str):
    corpus, cache = lines_file(tmp_path / "c.txt", megabytes=1), tmp_path / "cache"
    source = text_source(corpus, 1000, False, 1)
    good = encode(source, cache, log=lambda _: None)
    expected = (np.array(good.ids), good.offsets.copy(), good.counts.copy())
    damage(good.path, how)
    said: List[str] = []
    again = encode(source, cache, log=said.append)
    damaged = [line for line in said if "is damaged" in line]
    assert len(damaged) == 1 and "it is rebuilt" in damaged[0], said
    assert np.array_equal(again.ids, expected[0]) and np.array_equal(again.offsets, expected[1])
    assert np.array_equal(again.counts, expected[2])


def test_a_run_on_a_cache_with_out_of_range_ids_does_not_crash(tmp_path: Path):
    """Issue 30: exit 139 and nothing on stderr. The run rebuilds the entry and trains."""
    corpus, cache = lines_file(tmp_path / "c.txt", megabytes=1), tmp_path / "cache"
    good = encode(text_source(corpus, 10000, False, 0), cache, log=lambda _: None)  # the run's settings
    damage(good.path, "huge id")
    run = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "sgns.train", "corpus=text", f"corpus.path={corpus}", *TINY,
                             f"hydra.run.dir={run}", f"data.cache_dir={cache}"],
                            capture_output=True, text=True, timeout=300, env=ENV, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((run / "metrics.json").read_text())["status"] == "finished"
    assert "is damaged" in (run / "train.log").read_text()


# ------------------------------------------------------------------------------ 7a. worker count


def test_the_worker_count_is_capped_at_the_cores():
    assert resolve_workers(1000) == usable_cores() == resolve_workers(0)
    assert resolve_workers(1) == 1


def test_the_worker_count_is_capped_at_the_pieces(tmp_path: Path):
    path = lines_file(tmp_path / "c.txt")  # 3 pieces of 1 MiB
    ranges = list(file_ranges(path, os.path.getsize(path), chunk_bytes=1 << 20))
    assert len(ranges) == 3
    source = text_source(path, 1000, False, chunk_bytes=1 << 20)
    pieces = source.pieces(8)
    next(pieces)  # the pool has started every process it will use
    started = children_of(os.getpid())
    rest = list(pieces)
    assert len(rest) == 2 and 2 <= len(started) <= min(3, usable_cores()), started


def test_many_requested_workers_read_the_same_as_one(tmp_path: Path):
    path = lines_file(tmp_path / "c.txt")
    one = encode(text_source(path, 1000, False, 1, chunk_bytes=1 << 20), tmp_path / "a", log=lambda _: None)
    many = encode(text_source(path, 1000, False, 1000, chunk_bytes=1 << 20), tmp_path / "b", log=lambda _: None)
    assert (one.path / "ids.bin").read_bytes() == (many.path / "ids.bin").read_bytes()


def test_run_in_order_with_more_workers_than_tasks_starts_one_per_task():
    results = run_in_order(((os.getpid, ()) for _ in range(3)), 8)
    first = next(results)
    started = children_of(os.getpid())
    assert len([first, *results]) == 3 and 2 <= len(started) <= 3, started


# ---------------------------------------------------------------------- a full disk under the cache (attack 2)

FILE_SIZE_LIMITED_ENCODE = """
import resource, signal, sys
from sgns.corpus import encode, text_source
from sgns.errors import SGNSError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as a full disk's ENOSPC
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
try:
    encode(text_source(sys.argv[1], 10000, True, workers=1), sys.argv[2], log=lambda _: None)
except SGNSError as e:
    print(e)
"""


def test_a_token_cache_write_failing_is_one_line_and_leaves_nothing(tmp_path: Path):
    """numpy's tofile reported a short write as `OSError: 1596096 requested and 600744 written`, which reached
    sgns-train as a traceback (a cache on a full disk)."""
    corpus = lines_file(tmp_path / "c.txt", megabytes=2)
    cache = tmp_path / "cache"
    done = subprocess.run([sys.executable, "-c", FILE_SIZE_LIMITED_ENCODE, str(corpus), str(cache)],
                          capture_output=True, text=True, timeout=120, env=ENV)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert done.stdout.strip() == f"cannot write the token cache in {cache}: File too large (set data.cache_dir=DIR)"
    assert [p.name for p in cache.iterdir()] == []  # no entry, no temporary folder, no lock file


# ------------------------------------------------------------- malformed Hugging Face data files (attack 3)


def hf_file(folder: Path, name: str) -> Path:
    """A local data file for corpus=hf: good ones of each kind of column, or damaged ones."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = folder / name
    rows = [f"w{i % 7} w{i % 5} w{i % 3}" for i in range(3000)]
    if name == "ints.jsonl":
        path.write_text("".join(json.dumps({"text": i}) + "\n" for i in range(3000)))
    elif name == "lists.jsonl":
        path.write_text("".join(json.dumps({"text": r.split()}) + "\n" for r in rows))
    elif name == "bytes.parquet":
        pq.write_table(pa.table({"text": pa.array([r.encode() for r in rows])}), path)
    elif name == "empty.jsonl":
        path.write_bytes(b"")
    elif name == "cut.jsonl":
        text = "".join(json.dumps({"text": r}) + "\n" for r in rows)
        path.write_text(text[: len(text) // 2 + 5])
    elif name == "ragged.csv":
        path.write_text('text,n\n"a b",1\na,b,c,d\n')
    return path


HF_FAILURES = {
    "ints.jsonl": "dataset column 'text' holds int64 values, not text: set corpus.column to a column of strings; "
                  "columns are ['text']",
    "lists.jsonl": "dataset column 'text' holds List values, not text: set corpus.column to a column of strings; "
                   "columns are ['text']",
    "bytes.parquet": "dataset column 'text' holds binary values, not text: set corpus.column to a column of "
                     "strings; columns are ['text']",
    "empty.jsonl": "corpus data file {path} is empty",
    "cut.jsonl": "could not load dataset 'json' split 'train': JSON parse error: Missing a closing quotation mark in "
                 "string. in row 1500 (in {path})",
    "ragged.csv": "could not load dataset 'csv' split 'train': Error tokenizing data. C error: Expected 2 fields in "
                  "line 3, saw 4 (in {path})",
}


@pytest.mark.parametrize("name", list(HF_FAILURES))
def test_a_malformed_hugging_face_data_file_is_one_clear_line(tmp_path: Path, name: str):
    """A column of ints, lists or bytes trained on their str() ("['w1', 'w2']" as words); an empty file said
    "StopIteration"; a damaged one "An error occurred while generating the dataset", after datasets' own log line."""
    from sgns.config import CorpusConfig
    from sgns.corpus import hf_source

    path = hf_file(tmp_path, name)
    with pytest.raises(SGNSError) as raised:
        hf_source(CorpusConfig(kind="hf", data_files=[str(path)]))
    assert str(raised.value) == HF_FAILURES[name].format(path=path)


def test_sgns_train_on_a_damaged_hugging_face_file_prints_one_line(tmp_path: Path):
    path = hf_file(tmp_path, "cut.jsonl")
    done = subprocess.run([sys.executable, "-m", "sgns.train", "corpus=hf", f"corpus.data_files=[{path}]", *TINY,
                           f"data.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'run'}"],
                          capture_output=True, text=True, timeout=300,
                          env={**ENV, "HF_DATASETS_CACHE": str(tmp_path / "hf"), "HF_DATASETS_OFFLINE": "1"})
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["sgns-train: error: " + HF_FAILURES["cut.jsonl"].format(path=path)]


def test_sigterm_while_reading_names_sigterm_not_ctrl_c(tmp_path: Path):
    """A batch scheduler's SIGTERM while the corpus was read said "interrupted (Ctrl-C)" and exited 130."""
    corpus = lines_file(tmp_path / "c.txt", megabytes=40)  # read for seconds
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "sgns.train", "corpus=text", f"corpus.path={corpus}", *TINY,
                             f"data.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run_dir}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        deadline = time.monotonic() + 120
        while not ((run_dir / "train.log").exists() and "corpus: reading" in (run_dir / "train.log").read_text()):
            assert proc.poll() is None and time.monotonic() < deadline, "sgns-train ended before reading"
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM
    assert err.splitlines() == ["sgns-train: error: interrupted by SIGTERM before training started; nothing was "
                                "trained"]
    assert not run_dir.exists()
