"""Exact resume, checked on real `sgns-train` subprocesses killed with real signals.

One reference run trains uninterrupted; every other run is interrupted (SIGKILL at arbitrary moments and
halfway through a checkpoint write, SIGINT, SIGTERM, a double SIGINT), re-run with the same command, and
must end with a byte-identical vectors.bin, the same metrics and the same TensorBoard curves (no
duplicated or missing steps).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest
from conftest import zipf_text

from sgns.train.checkpoint import FAULT_ENV, list_checkpoints, load_checkpoint, save_checkpoint

# Both pipelines resume exactly: the numba kernel in deterministic mode (1000-word spans: 120 steps of the run
# below, 30k words and 4 epochs) and the pair pipeline (512-pair batches: 476 steps), and model=subword on both.
# Per pipeline: its overrides, its step count, and the steps after which the tests below interrupt it.
PIPELINES = {
    "numba": {"extra": ["trainer.deterministic=true", "data.span_tokens=1000"], "steps": 120, "late": 80, "mid": 60},
    "torch": {"extra": ["trainer.kernel=torch"], "steps": 476, "late": 150, "mid": 50},
    # model=subword, its input table 400 words + 5,000 n-gram buckets: on the CPU's numba kernel (the default), and
    # on the torch pipeline (the CUDA path)
    "subword": {"extra": ["model=subword", "model.bucket=5000", "trainer.deterministic=true", "data.span_tokens=1000"],
                "steps": 120, "late": 80, "mid": 60},
    "subword_torch": {"extra": ["model=subword", "model.bucket=5000", "trainer.deterministic=true",
                                "trainer.kernel=torch"], "steps": 476, "late": 150, "mid": 50},
}


@pytest.fixture(scope="module", params=list(PIPELINES))
def setup(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    """The corpus, an analogy file (for eval curves) and one uninterrupted reference run."""
    folder = tmp_path_factory.mktemp("resume")
    corpus = zipf_text(folder / "corpus.txt", words=30000, vocab=400)
    analogies = folder / "analogies.txt"
    analogies.write_text(": section\n" + "".join(f"w{i} w{i + 1} w{i + 2} w{i + 3}\n" for i in range(0, 60, 2)))
    paths = {"corpus": corpus, "analogies": analogies, "cache": folder / "cache", "reference": folder / "reference",
             "folder": folder, **PIPELINES[request.param]}
    # The reference also fills numba's on-disk cache and the token cache, as every later run finds them (a kernel
    # compiled here and one loaded from the cache train the same bits: test_numba_kernels.py checks it).
    proc = start(paths, paths["reference"])
    out = finish(proc)
    assert proc.returncode == 0, out
    return paths


@pytest.fixture
def timed(setup: Dict[str, Any]) -> Dict[str, Any]:
    """`setup` with the times of a whole run, taken with the caches warm (after the reference)."""
    started = time.monotonic()
    proc = start(setup, setup["folder"] / "timed")
    proc.wait_for(lambda: "resolved:" in proc.output())
    resolved = time.monotonic()
    out = finish(proc)
    assert proc.returncode == 0, out
    seconds = time.monotonic() - started  # a whole run, start-up included: where random kills may land
    return {**setup, "seconds": seconds, "after_resolved": time.monotonic() - resolved}  # after: training, outputs


def command(paths: Dict[str, Any], run: Path, *extra: str) -> List[str]:
    return [sys.executable, "-m", "sgns.train", "corpus=text", f"corpus.path={paths['corpus']}", "data.min_count=1",
            "data.batch_size=512", "data.chunk_tokens=5000", "model.dim=16", "trainer.epochs=4",
            "trainer.checkpoint_every=20", "trainer.log_every=10", "trainer.keep_checkpoints=2", "trainer.device=cpu",
            "trainer.threads=1", "trainer.progress=false", f"eval.analogies=[{paths['analogies']}]",
            "eval.every_words=25000", f"data.cache_dir={paths['cache']}", f"hydra.run.dir={run}", *paths["extra"],
            *extra]


class Proc:
    """A running sgns-train whose combined output is collected line by line as it comes."""

    def __init__(self, args: List[str], env: Dict[str, str]) -> None:
        self.popen = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.lines: List[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.popen.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def returncode(self) -> Optional[int]:
        return self.popen.poll()

    def wait_for(self, predicate, timeout: float = 120) -> None:
        end = time.monotonic() + timeout
        while not predicate():
            assert self.popen.poll() is None, "\n".join(self.lines)
            assert time.monotonic() < end, "timed out: " + "\n".join(self.lines)
            time.sleep(0.003)

    def output(self) -> str:
        return "\n".join(self.lines)


def start(paths: Dict[str, Any], run: Path, *extra: str, env: Optional[Dict[str, str]] = None) -> Proc:
    return Proc(command(paths, run, *extra), {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})


def finish(proc: Proc, timeout: float = 300) -> str:
    proc.popen.wait(timeout=timeout)
    proc.reader.join(timeout=10)
    return proc.output()


def newest_step(run: Path) -> int:
    found = list_checkpoints(run)
    return int(found[-1].stem.split("-")[1]) if found else -1


def curves(run: Path) -> Dict[str, List[Tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    events = EventAccumulator(str(run / "tb"), size_guidance={SCALARS: 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
            if tag.startswith(("train/", "eval/")) and tag != "train/words_per_sec"}


def assert_same_as_reference(paths: Dict[str, Any], run: Path) -> None:
    reference = paths["reference"]
    assert (run / "vectors.bin").read_bytes() == (reference / "vectors.bin").read_bytes()
    got, expected = (json.loads((r / "metrics.json").read_text()) for r in (run, reference))
    for key in ("status", "steps", "pairs", "train_words", "loss", "eval"):
        assert got[key] == expected[key], key
    got_curves, expected_curves = curves(run), curves(reference)
    assert set(got_curves) == set(expected_curves) and any(t.startswith("eval/") for t in got_curves)
    for tag, points in expected_curves.items():
        steps = [s for s, _ in got_curves[tag]]
        assert steps == sorted(set(steps)), f"{tag}: duplicated or unordered steps {steps}"
        assert got_curves[tag] == points, tag  # same steps, same values: nothing missing or doubled
    assert len(expected_curves["train/loss"]) == -(-paths["steps"] // 10)


def test_sigkill_anywhere_then_same_command_gives_identical_vectors(setup, tmp_path):
    run = tmp_path / "run"
    # 1. killed halfway through writing the checkpoint of step 60
    proc = start(setup, run, env={FAULT_ENV: "60"})
    finish(proc)
    assert proc.returncode == -signal.SIGKILL
    assert [p.name for p in list_checkpoints(run)] == ["step-00000020.pt", "step-00000040.pt"]
    assert [p.name for p in (run / "checkpoints").glob(".tmp-*")]  # the half-written file, under a temp name
    # 2. killed at an arbitrary moment between two checkpoints
    proc = start(setup, run)
    proc.wait_for(lambda: newest_step(run) >= setup["late"])
    time.sleep(random.uniform(0, 0.02))
    proc.popen.send_signal(signal.SIGKILL)
    out = finish(proc)
    assert proc.returncode == -signal.SIGKILL
    assert "half-written checkpoint" in out and "continuing from checkpoint" in out and "step-00000040.pt" in out
    # 3. the same command finishes the run
    proc = start(setup, run)
    out = finish(proc)
    assert proc.returncode == 0, out
    assert "continuing from checkpoint" in out
    assert not list((run / "checkpoints").glob(".tmp-*"))
    assert_same_as_reference(setup, run)
    # 4. and once more: nothing to do, exit 0, outputs untouched
    stamp = (run / "vectors.bin").stat().st_mtime_ns
    proc = start(setup, run)
    out = finish(proc)
    assert proc.returncode == 0 and "already finished" in out, out
    assert (run / "vectors.bin").stat().st_mtime_ns == stamp



def test_a_run_killed_between_its_last_steps_checkpoint_and_its_outputs_resumes_exactly(setup, tmp_path):
    # The periodic checkpoint of the last step comes before the outputs: killed between the two, the run has
    # no step left to train, and must still report the reference's loss (its last window's), not NaN.
    run = tmp_path / "run"
    shutil.copytree(setup["reference"], run)  # a finished run of the same command
    last = list_checkpoints(run)[-1]
    checkpoint = load_checkpoint(last)
    assert int(last.stem.split("-")[1]) == checkpoint["progress"]["step"] and checkpoint["progress"]["finished"]
    checkpoint["progress"]["finished"] = False  # as the periodic checkpoint of that step left it
    checkpoint.pop("checksum", None)
    save_checkpoint(checkpoint, run, checkpoint["progress"]["step"], keep=2)
    for name in ("vectors.bin", "metrics.json"):
        (run / name).unlink()
    proc = start(setup, run)
    out = finish(proc)
    assert proc.returncode == 0, out
    assert "continuing from checkpoint" in out
    assert_same_as_reference(setup, run)

# The final checkpoint and the run dir's status are written by the loop and checkpoint.py alike for every pipeline
# (each pipeline's state and resume are checked by the SIGKILL and SIGINT tests): checked on the default pipeline.
@pytest.mark.parametrize("setup", ["numba"], indirect=True)
def test_a_run_killed_writing_its_only_checkpoint_runs_again(setup, tmp_path):
    """A short run checkpoints only at its end (the default cadence is 10 minutes): killed writing that final
    checkpoint (or a full disk failing it), the run dir must not claim a finished run, which made the same command
    refuse it ("holds a finished run but no checkpoint") while its metrics.json said finished."""
    run = tmp_path / "run"
    final_step = newest_step(setup["reference"])
    proc = start(setup, run, "trainer.checkpoint_every=0", env={FAULT_ENV: str(final_step)})
    finish(proc)
    assert proc.returncode == -signal.SIGKILL
    assert not list_checkpoints(run)
    metrics = run / "metrics.json"
    assert not metrics.exists() or json.loads(metrics.read_text())["status"] != "finished"
    proc = start(setup, run, "trainer.checkpoint_every=0")
    out = finish(proc)
    assert proc.returncode == 0, out
    assert_same_as_reference(setup, run)


@pytest.mark.slow
def test_many_random_sigkills_give_identical_vectors(timed, tmp_path):
    """Kills at random moments: three from process start on (start-up, reading the corpus: before the reference
    run's `resolved:` line, which a resumed run reaches as late), then up to five once the run logs `resolved:`
    (loading the kernel, training, checkpoints, writing the outputs), anywhere within the reference run's time
    for that part: such a run may finish first, which ends the test as a resumed run should."""
    run, rng = tmp_path / "run", random.Random(5)
    kills = 0
    for attempt in range(30):
        proc = start(timed, run)
        if attempt < 3:
            time.sleep(rng.uniform(0.05, 0.6) * (timed["seconds"] - timed["after_resolved"]))
        elif attempt < 8:
            proc.wait_for(lambda p=proc: "resolved:" in p.output() or p.popen.poll() is not None)
            time.sleep(rng.uniform(0.05, 1.0) * timed["after_resolved"])
        if attempt < 8:
            proc.popen.send_signal(signal.SIGKILL)
        out = finish(proc)
        if proc.returncode == 0:
            break
        assert proc.returncode == -signal.SIGKILL, out
        kills += 1
    assert kills >= 3
    assert_same_as_reference(timed, run)


def test_sigint_stops_with_a_checkpoint_and_a_resume_hint(setup, tmp_path):
    stop_by_signal_then_resume(setup, tmp_path / "run", signal.SIGINT)


# SIGTERM takes SIGINT's path (one StopRequest in the loop, whatever the pipeline; only the name differs): checked
# on the default pipeline alone, while SIGINT, with its resume, is checked on each pipeline above.
@pytest.mark.parametrize("setup", ["numba"], indirect=True)
def test_sigterm_stops_with_a_checkpoint_and_a_resume_hint(setup, tmp_path):
    stop_by_signal_then_resume(setup, tmp_path / "run", signal.SIGTERM)


def stop_by_signal_then_resume(setup: Dict[str, Any], run: Path, sig: int) -> None:
    """`sig` at step `mid` stops the run with a checkpoint and a one-line hint; after SIGINT the same command
    resumes it to the reference's bits, reporting its own process's speed."""
    proc = start(setup, run)
    proc.wait_for(lambda: newest_step(run) >= setup["mid"])
    proc.popen.send_signal(sig)
    out = finish(proc)
    assert proc.returncode == 2, out
    name = signal.Signals(sig).name
    assert f"{name} received, stopping after this step" in out
    last = out.strip().splitlines()[-1]
    assert last.startswith(f"sgns-train: error: stopped by {name} at step ")
    assert f"run the same command again with hydra.run.dir={run}" in last
    stopped_at = int(last.split(" at step ")[1].split(",")[0])
    assert newest_step(run) == stopped_at and "Traceback" not in out
    if sig == signal.SIGTERM:
        return  # resuming is the same for both (and costs a run): checked once, after SIGINT
    before = load_checkpoint(list_checkpoints(run)[-1])["progress"]
    proc = start(setup, run)
    out = finish(proc)
    assert proc.returncode == 0, out
    assert_same_as_reference(setup, run)
    # the resumed process's speed: its own words over its own training seconds, not the whole run's words
    metrics = json.loads((run / "metrics.json").read_text())
    own_words = metrics["train_words"] - int(before["words_done"])
    assert metrics["process_words"] == own_words > 0
    assert metrics["train_seconds"] <= metrics["wall_seconds"]
    assert metrics["train_seconds_total"] >= before["train_seconds"] + metrics["train_seconds"] - 1e-6
    assert metrics["words_per_sec"] == pytest.approx(own_words / metrics["train_seconds"], rel=1e-4)
    assert f"({own_words:,} in this process)" in out


def test_second_sigint_exits_at_once_without_damage(setup, tmp_path):
    run = tmp_path / "run"
    proc = start(setup, run)
    proc.wait_for(lambda: newest_step(run) >= setup["mid"])
    proc.popen.send_signal(signal.SIGINT)
    proc.wait_for(lambda: "SIGINT received" in proc.output())
    proc.popen.send_signal(signal.SIGINT)
    out = finish(proc)
    assert proc.returncode == 130, out
    assert "second interrupt, exiting now" in out
    assert list_checkpoints(run)
    for path in list_checkpoints(run):
        load_checkpoint(path)  # every checkpoint left is whole (and resuming from one: see the SIGKILL test)


def tree_digest(folder: Path) -> Dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


REFUSALS = [
    (["data.window=3"], "other settings: data.window=5 (this command: 3)"),
    (["trainer.epochs=2", "optimizer.lr=0.05"], "optimizer.lr=0.025 (this command: 0.05); trainer.epochs=4 (this"),
    (["trainer.resume=never"], "trainer.resume=never would overwrite"),
]


# The refusal is sgns-train's check of the command line against the run dir's, before Hydra or any pipeline: the
# real command line on the default pipeline, then every refusal in-process on each pipeline.
@pytest.mark.parametrize("setup", ["numba"], indirect=True)
def test_a_different_command_into_a_finished_run_dir_is_one_line_and_touches_nothing(setup, tmp_path):
    """The real command line (Hydra would rewrite .hydra/*.yaml if the check came later)."""
    run = tmp_path / "finished"
    shutil.copytree(setup["reference"], run)
    before = tree_digest(run)
    proc = start(setup, run, *REFUSALS[0][0])
    out = finish(proc)
    assert proc.returncode == 2
    assert out.strip().count("\n") == 0 and REFUSALS[0][1] in out, out  # one line
    assert tree_digest(run) == before  # .hydra/*.yaml, train.log, vectors, checkpoints: all untouched


def test_a_different_run_into_a_finished_run_dir_is_refused_and_touches_nothing(setup, tmp_path):
    """Every refusal through sgns-train's pre-check function, in-process."""
    from sgns.cli.train import check_command_line
    from sgns.errors import SGNSError

    run = tmp_path / "finished"
    shutil.copytree(setup["reference"], run)
    before = tree_digest(run)
    for extra, needle in REFUSALS:
        with pytest.raises(SGNSError) as error:
            check_command_line(command(setup, run, *extra)[3:])
        assert needle in str(error.value)
    check_command_line(command(setup, run, "trainer.threads=2", "eval.every_words=0")[3:])  # same run: allowed
    assert tree_digest(run) == before


# The last commit whose vocabulary broke ties of equal count alphabetically (before gensim's order, issue 27).
BEFORE_GENSIM_ORDER = "0c064d1815346460a915eda879047f5929ad7850"


def code_at(commit: str, folder: Path) -> Path:
    """This repository's package as it was at `commit` (skip when the history is not there: a shallow clone)."""
    repo = Path(__file__).resolve().parent.parent
    archive = subprocess.run(["git", "-C", str(repo), "archive", "--format=tar", commit, "sgns", "hydra_plugins"],
                             capture_output=True)
    if archive.returncode != 0:
        pytest.skip(f"needs the git history holding commit {commit[:7]} (the code that wrote old checkpoints)")
    folder.mkdir()
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder


def test_a_checkpoint_written_before_the_gensim_vocabulary_order_resumes_exactly(tmp_path):
    """A run checkpointed by the code before issue 27 (ties alphabetical) resumes with the order it was written
    with, to the bits of that code's uninterrupted run, although a new run orders the same words differently."""
    old = code_at(BEFORE_GENSIM_ORDER, tmp_path / "old-code")
    paths = {"corpus": zipf_text(tmp_path / "corpus.txt", words=30000, vocab=400), "cache": tmp_path / "cache",
             "analogies": tmp_path / "analogies.txt", "reference": tmp_path / "old-reference",
             **PIPELINES["torch"]}
    paths["analogies"].write_text(": section\n" + "".join(f"w{i} w{i + 1} w{i + 2} w{i + 3}\n"
                                                          for i in range(0, 60, 2)))
    with_old_code = {"PYTHONPATH": str(old), "PYTHONSAFEPATH": "1"}  # safe path: `-m` does not put the cwd first
    proc = start(paths, paths["reference"], env=with_old_code)
    out = finish(proc)
    assert proc.returncode == 0, out
    run = tmp_path / "run"
    proc = start(paths, run, env={**with_old_code, FAULT_ENV: "60"})  # killed writing its third checkpoint
    finish(proc)
    assert proc.returncode == -signal.SIGKILL and newest_step(run) == 40
    assert "ties" not in load_checkpoint(list_checkpoints(run)[-1])["vocab"]

    proc = start(paths, run, env={"PYTHONPATH": str(Path(__file__).resolve().parent.parent), "PYTHONSAFEPATH": "1"})
    out = finish(proc)
    assert proc.returncode == 0, out
    assert "continuing from checkpoint" in out and "step-00000040.pt" in out
    assert (run / "vocab.txt").read_text() == (paths["reference"] / "vocab.txt").read_text()
    assert_same_as_reference(paths, run)

    from sgns.corpus import encode, text_source
    from sgns.vocab import Vocabulary

    corpus = encode(text_source(paths["corpus"], 10000, False, 1), tmp_path / "cache-new", log=lambda _: None)
    new_order = Vocabulary.build(corpus.words, corpus.counts, min_count=1).words
    old_order = [line.rsplit(" ", 1)[0] for line in (run / "vocab.txt").read_text().splitlines()]
    assert sorted(new_order) == sorted(old_order) and new_order != old_order  # only the resume kept the old one


def test_a_ranks_pipeline_state_keeps_its_checkpoint_key() -> None:
    # Checkpoints written under torchrun before "backend" was renamed "pipeline" in the code hold each rank's
    # pipeline state under "backend": the key must not follow the rename, or they would no longer resume.
    from sgns.train.state import PIPELINE_STATE_KEY

    assert PIPELINE_STATE_KEY == "backend"
