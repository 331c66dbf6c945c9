"""Errors that point at the fix and help made from the schema (issue 29 items 3 and 4): the real commands, run as
a user runs them (subprocesses, a real SIGINT), each with a hard timeout."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Tuple

import numpy as np
import pytest
from conftest import zipf_text

import sgns
from sgns import hydra_app
from sgns.cli import train as cli_train
from sgns.config import ANALOGY_METHODS, RESTRICT_VOCAB, Config, field_types, setting_keys
from sgns.errors import SGNSError
from sgns.vectors import save_word2vec

ROOT = Path(__file__).resolve().parent.parent
CONFIG_SOURCE = ROOT / "sgns" / "config.py"
TIMEOUT = 120  # seconds any one command may take here; a hang fails the test instead of the suite
TINY = ["trainer.epochs=1", "model.dim=8", "data.min_count=1", "trainer.progress=false", "trainer.device=cpu"]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=TIMEOUT, cwd=cwd,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The one `error:` line a failed command printed (no traceback, a non-zero exit)."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if "error" in ln.lower()]
    assert len(errors) == 1, proc.stderr
    return errors[0]


# ------------------------------------------------------------------------------------------- wrong keys


@pytest.mark.parametrize("override, nearest", [
    ("model.dimm=10", "model.dim"),
    ("+model.dimm=10", "model.dim"),  # Hydra would add the key, and training would ignore it
    ("dimm=10", "model.dim"),
    ("data.windw=3", "data.window"),
])
def test_a_misspelled_key_names_the_nearest_keys_and_never_suggests_plus(override: str, nearest: str,
                                                                         tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    line = one_error_line(run("sgns-train", override, *TINY, f"hydra.run.dir={run_dir}"))
    assert f"did you mean {nearest}?" in line, line
    assert "+" not in line and "append" not in line, line
    assert not run_dir.exists()


def test_a_wrong_group_option_lists_every_option() -> None:
    line = one_error_line(run("sgns-train", "corpus=txt"))
    assert "did you mean corpus=text?" in line, line
    assert "corpus options: hf, synthetic, text" in line, line


def test_a_misspelled_key_fails_in_fit_too(tiny_corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(SGNSError, match=r"model\.dimm is not a setting: did you mean model\.dim\?"):
        sgns.fit(tiny_corpus, tmp_path / "run", **{"model.dimm": 8})


def test_cfg_job_resolve_prints_the_resolved_config() -> None:
    proc = run("sgns-train", "--cfg", "job", "--resolve", "model.dim=7")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "  dim: 7" in proc.stdout
    assert re.search(r"^  run_dir: outputs/\d{4}-\d\d-\d\d/\d\d-\d\d-\d\d$", proc.stdout, re.M), proc.stdout
    assert "${" not in proc.stdout


# ----------------------------------------------------------------------------------------- interrupted


def interrupt_when_logged(command: List[str], run_dir: Path, logged: str) -> subprocess.CompletedProcess:
    """Run `command` and send it a real SIGINT once run_dir/train.log exists and holds `logged`."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = run_dir / "train.log"
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (log.exists() and logged in log.read_text()):
            assert proc.poll() is None and time.monotonic() < deadline, f"ended before it logged {logged!r}"
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def interrupt_in_startup(run_dir: Path, corpus: Path, logged: str = "") -> subprocess.CompletedProcess:
    """sgns-train with a real SIGINT once Hydra has started the job (its log exists) and the log holds `logged`:
    by default while it still loads its libraries (about a second), the start-up a user interrupts. On a busy
    machine this test's process may wake too late, when the run has trained and said `done:` (a signal then has
    no start-up left to interrupt): that try is discarded (what it wrote is removed) and the run tried again, up to
    3 times."""
    before = set(run_dir.iterdir()) if run_dir.exists() else None
    for _ in range(3):
        proc = interrupt_when_logged(["sgns-train", "corpus=text", f"corpus.path={corpus}", *TINY,
                                      f"hydra.run.dir={run_dir}"], run_dir, logged)
        if "done:" not in proc.stdout:
            break
        for path in ([run_dir] if before is None else set(run_dir.iterdir()) - before):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    return proc


def test_ctrl_c_in_startup_is_one_line_and_leaves_no_half_run_dir(tiny_corpus: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    line = one_error_line(interrupt_in_startup(run_dir, tiny_corpus))
    assert "interrupted" in line and "before training started" in line, line
    assert not run_dir.exists(), list(run_dir.iterdir())


@pytest.fixture(scope="module")
def long_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A corpus read for a second or more (only read: each test reads it into its own token cache)."""
    return zipf_text(tmp_path_factory.mktemp("long") / "long.txt", words=2_000_000, vocab=20000)


def test_ctrl_c_while_reading_the_corpus_leaves_no_half_run_dir(long_corpus: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    line = one_error_line(interrupt_in_startup(run_dir, long_corpus, logged="corpus: reading"))
    assert "before training started" in line, line
    assert not run_dir.exists(), list(run_dir.iterdir())


INTERRUPTED_FIT = """
import sys
import sgns
try:
    sgns.fit(sys.argv[1], sys.argv[2], dim=8, epochs=1, progress=False)
except KeyboardInterrupt as e:
    print("KeyboardInterrupt:", e)
"""


def test_ctrl_c_while_fit_reads_leaves_no_half_run_dir(long_corpus: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    done = interrupt_when_logged([sys.executable, "-c", INTERRUPTED_FIT, str(long_corpus), str(run_dir)], run_dir,
                                 "corpus: reading")
    out, err = done.stdout, done.stderr
    assert "KeyboardInterrupt: " in out and "before training started" in out, out + err[-2000:]
    assert not run_dir.exists()


def test_ctrl_c_in_startup_keeps_an_earlier_runs_files(tiny_corpus: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("mine\n")
    one_error_line(interrupt_in_startup(run_dir, tiny_corpus))
    assert (run_dir / "notes.txt").read_text() == "mine\n"


def test_a_discarded_run_dir_takes_its_log_file_handler_along(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A library that logs after the discard (torch's atexit callback, when Ctrl-C came mid-import) finds no
    handler of the removed dir's log: a closed FileHandler would reopen its file and fail, with a traceback."""
    run_dir = (tmp_path / "run").absolute()
    run_dir.mkdir()
    handler = logging.FileHandler(run_dir / "train.log")
    root = logging.getLogger()
    root.addHandler(handler)
    hydra_app.MADE_RUN_DIRS.add(run_dir)
    try:
        assert hydra_app.discard_unstarted_run_dir(run_dir)
        logging.getLogger("a.library").warning("a record after the run dir is gone")
    finally:
        root.removeHandler(handler)
        hydra_app.MADE_RUN_DIRS.discard(run_dir)
    assert not run_dir.exists()
    assert handler not in root.handlers and "Logging error" not in capsys.readouterr().err


def test_an_interrupt_after_a_run_finished_says_its_outputs_are_complete(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_train, "FINISHED_RUNS", [])
    assert "before training started" in cli_train.interrupted_when()
    cli_train.FINISHED_RUNS.append("outputs/a")
    assert cli_train.interrupted_when() == "after the run finished; its outputs in outputs/a are complete"
    cli_train.FINISHED_RUNS.append("outputs/b")
    assert "after 2 runs finished" in cli_train.interrupted_when()


INTERRUPTED_EXIT = """
import atexit, os, signal, time
from sgns.cli.common import exit_without_teardown

def a_librarys_atexit_callback():  # registered after exit_without_teardown's, so it runs before it
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(5)

with exit_without_teardown():
    atexit.register(a_librarys_atexit_callback)
    print("done: the command's work")
"""


def test_ctrl_c_after_a_command_is_done_ends_it_quietly_with_its_status() -> None:
    proc = subprocess.run([sys.executable, "-c", INTERRUPTED_EXIT], capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert "done:" in proc.stdout


# ------------------------------------------------------------------------------------------------ sweeps


def test_a_failed_sweep_job_is_one_line(tmp_path: Path) -> None:
    missing = [tmp_path / "missing-a.txt", tmp_path / "missing-b.txt"]
    proc = run("sgns-train", "-m", "corpus=text", f"corpus.path={missing[0]},{missing[1]}", *TINY,
               f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert proc.returncode != 0
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    failed = [ln for ln in proc.stderr.splitlines() if ln.startswith("sgns-train: error:")]
    assert len(failed) == 2, proc.stderr
    for job, (line, path) in enumerate(zip(failed, missing, strict=True)):
        assert line.startswith(f"sgns-train: error: job {job} (") and "corpus file not found" in line, line
        assert str(path) in line, line


# ----------------------------------------------------------------------------------------------- fit, export


def test_fit_errors_speak_of_run_dir(tiny_corpus: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "vectors.bin").write_bytes(b"")  # a run's output that resume=never would overwrite
    with pytest.raises(SGNSError) as error:
        sgns.fit(tiny_corpus, run_dir, resume="never", epochs=1, dim=8)
    assert "hydra.run.dir" not in str(error.value) and "another run_dir" in str(error.value), error.value


def test_export_of_a_word2vec_file_says_what_it_is(tmp_path: Path) -> None:
    vectors = tmp_path / "vectors.bin"
    save_word2vec(vectors, ["a", "b"], np.ones((2, 3), dtype=np.float32))
    line = one_error_line(run("sgns-export", str(vectors), str(tmp_path / "out.txt"), "--text"))
    assert "is a word2vec file" in line and "run directory" in line, line
    assert "pickled" not in line and "safety" not in line, line


# -------------------------------------------------------------------------------------------------- help


def schema_comments() -> dict:
    """`field -> comment` for every field line of sgns/config.py's schema classes, read as plain lines (a reader
    apart from the one --help uses): `class X` starts a class, `    name: type = ...  # comment` is a field."""
    found: dict = {}
    cls = None
    for line in CONFIG_SOURCE.read_text().splitlines():
        header = re.match(r"class (\w+)", line)
        if header:
            cls = header[1]
            continue
        field = re.match(r"    (\w+): [^=]+=.*?  # (.*)$", line)
        if cls and field:
            found[f"{cls}.{field[1]}"] = field[2].strip()
    return found


def schema_keys(cls: type = Config, prefix: str = "") -> List[Tuple[str, str]]:
    """(dotted key, `Class.field` that defines it) for every setting of the schema."""
    found = []
    for f in dataclasses.fields(cls):
        kind = field_types(cls)[f.name]
        if dataclasses.is_dataclass(kind):
            found += schema_keys(kind, f"{prefix}{f.name}.")
        else:
            found.append((f"{prefix}{f.name}", f"{cls.__name__}.{f.name}"))
    return found


def test_help_lists_every_key_with_its_default_and_comment() -> None:
    proc = run("sgns-train", "--help")
    assert proc.returncode == 0, proc.stderr
    comments = schema_comments()
    assert [key for key, _ in schema_keys()] == setting_keys()
    missing = [f"{key}: {comments[owner]}" for key, owner in schema_keys()
               if not re.search(rf"^  {re.escape(key)}=\S*\s+{re.escape(comments[owner])}$", proc.stdout, re.M)]
    assert not missing, "\n".join(missing)
    assert re.search(r"^model: the embedding tables$", proc.stdout, re.M)  # a group, with its comment
    assert re.search(r"^  model\.dim=100\s+embedding dimension$", proc.stdout, re.M)  # a key, default, comment


def test_help_lists_the_commands_and_every_group_option() -> None:
    from sgns.hydra_app import option_names

    text = run("sgns-train", "--help").stdout
    for command in ("sgns-train", "sgns-eval", "sgns-export", "sgns-summarize"):
        assert re.search(rf"^  {command} ", text, re.M), command
    for group, options in option_names().items():
        assert re.search(rf"^  {group}: .*", text, re.M), group
        line = re.search(rf"^  {group}: (.*)$", text, re.M)[1]
        assert [o.replace(" (default)", "") for o in line.split(", ")] == options, line
    assert "corpus: hf, synthetic (default), text" in text


def test_help_with_overrides_shows_their_values() -> None:
    text = run("sgns-train", "--help", "optimizer=sparse_adam").stdout
    assert re.search(r"^  optimizer\.lr=0\.001\s", text, re.M), text


def test_help_shows_the_subword_settings_with_fasttexts_defaults() -> None:
    text = run("sgns-train", "--help", "model=subword").stdout
    assert re.search(r"^  model\.name=subword\s", text, re.M), text
    for key, default in (("minn", "3"), ("maxn", "6"), ("bucket", "2000000")):
        assert re.search(rf"^  model\.{key}={default}\s+subword: ", text, re.M), key
    assert "model: full_softmax, sgns (default), subword" in text


def test_subword_ngram_lengths_out_of_order_are_refused_in_one_line() -> None:
    line = one_error_line(run("sgns-train", "model=subword", "model.minn=5", "model.maxn=4"))
    assert "model.maxn=4 is out of range: must be >= model.minn=5 (or 0: no n-grams)" in line


def test_the_constants_repeated_for_quick_commands_agree() -> None:
    from sgns.cli import eval as eval_cli
    from sgns.cli import export as export_cli
    from sgns.hydra_app import RUN_FILES
    from sgns.load import VECTOR_CHOICES as LOAD_CHOICES
    from sgns.train.rundir import LOCK_NAME
    from sgns.train.runs import VECTOR_CHOICES

    assert LOCK_NAME in RUN_FILES
    assert eval_cli.METHODS == ANALOGY_METHODS and eval_cli.RESTRICT_VOCAB == RESTRICT_VOCAB
    assert eval_cli.VECTOR_CHOICES == LOAD_CHOICES == export_cli.VECTOR_CHOICES == VECTOR_CHOICES


@pytest.mark.parametrize("command", ["sgns-train", "sgns-eval", "sgns-export", "sgns-summarize"])
def test_help_imports_no_torch(command: str) -> None:
    """--help is quick because it loads neither torch nor numba (timings: docs/startup.md)."""
    module = {"sgns-train": "sgns.cli.train", "sgns-eval": "sgns.cli.eval", "sgns-export": "sgns.cli.export",
              "sgns-summarize": "sgns.cli.summarize"}[command]
    code = (f"import sys; sys.argv = [{command!r}, '--help']\nfrom {module} import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('LOADED', sorted(m for m in ('torch', 'numba') if m in sys.modules), file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT)
    assert "LOADED []" in proc.stderr, proc.stderr[-2000:]


# ------------------------------------------------------------------------------------------------ README


def test_the_readmes_error_examples_are_what_the_cli_prints() -> None:
    text = (ROOT / "README.md").read_text()
    block = text.split("an out-of-range value fails at once", 1)[1].split("```", 2)[1]
    lines = [ln for ln in block.splitlines() if ln.strip()]
    assert lines and lines[0].startswith("$ sgns-train")
    for command, shown in zip(lines[::2], lines[1::2], strict=True):
        proc = run(*command.removeprefix("$ ").split())
        assert proc.stderr.strip() == shown.strip(), (command, proc.stderr)


@pytest.fixture
def tiny_corpus(tmp_path: Path) -> Path:
    return zipf_text(tmp_path / "tiny.txt", words=5000)
