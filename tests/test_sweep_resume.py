"""A search with a real database survives a SIGKILL of its driver: the same command continues the study."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path
from typing import List

import pytest

REPO = Path(__file__).resolve().parents[1]
SMALL = ["corpus.synthetic.sentences=20000", "corpus.synthetic.filler_words=200", "corpus.synthetic.pairs=6",
         "corpus.synthetic.relations=2", "trainer.epochs=1", "trainer.progress=false", "trainer.threads=1",
         "model.dim=choice(8,16)"]


def needs_database_support() -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    sqlalchemy = pytest.importorskip("sqlalchemy")
    if int(sqlalchemy.__version__.split(".")[0]) >= 2:
        pytest.skip(f"optuna 2.10 (hydra-optuna-sweeper's pin) needs SQLAlchemy<2, found {sqlalchemy.__version__}")


def search_command(tmp_path: Path, n_trials: int) -> List[str]:
    return [sys.executable, "-m", "sgns.train", "-m", "hparams_search=optuna_sgns",
            f"hydra.sweeper.n_trials={n_trials}",
            "hydra.sweeper.storage=sqlite:///search.db", "hydra.sweeper.study_name=resume-test",
            f"hydra.sweep.dir={tmp_path / 'sweep'}", *SMALL]


def environment() -> dict:
    paths = [str(REPO), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]  # tests/: driver_kill_callback
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


KILL_AT_JOB_1 = ["+hydra.callbacks.kill_driver._target_=driver_kill_callback.KillDriverAtJob",
                 "+hydra.callbacks.kill_driver.job_num=1"]


def test_a_killed_search_continues_its_study(tmp_path: Path) -> None:
    needs_database_support()
    import optuna
    from optuna.trial import TrialState

    sweep = tmp_path / "sweep"
    command = search_command(tmp_path, n_trials=3)
    # the driver SIGKILLs itself as job 1 starts (tests/driver_kill_callback.py): trial 1 is running and dies with it
    driver = subprocess.run(command + KILL_AT_JOB_1, cwd=tmp_path, env=environment(), capture_output=True,
                            text=True, timeout=180)
    assert driver.returncode == -signal.SIGKILL, driver.stderr[-3000:]
    assert (sweep / "1" / ".hydra").is_dir() and not (sweep / "1" / "metrics.json").exists()
    first = json.loads((sweep / "0" / "metrics.json").read_text())
    assert first["status"] == "finished"
    first_stamp = (sweep / "0" / "metrics.json").stat().st_mtime_ns

    again = subprocess.run(command, cwd=tmp_path, env=environment(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    log = again.stdout + again.stderr
    assert "trial 1 was running when the search stopped: marked failed" in log
    assert "1 trials finished, 2 of hydra.sweeper.n_trials=3 left to run (job numbers from 2)" in log

    study = optuna.load_study(study_name="resume-test", storage=f"sqlite:///{tmp_path / 'search.db'}")
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert study.trials[2].params == study.trials[1].params  # the killed trial's parameters ran again
    assert study.trials[3].params != study.trials[0].params  # the sampler, seeded anew, did not replay its draws
    assert [t.user_attrs["hydra_job_num"] for t in study.trials] == [0, 1, 2, 3]
    assert (sweep / "0" / "metrics.json").stat().st_mtime_ns == first_stamp  # the finished trial was not re-run
    killed = json.loads((sweep / "1" / "metrics.json").read_text())
    assert killed["status"] == "failed" and "the search stopped while trial 1 ran" in killed["error"]
    for job in (2, 3):
        metrics = json.loads((sweep / str(job) / "metrics.json").read_text())
        assert metrics["objective"] == study.trials[job].value

    summary = subprocess.run([sys.executable, "-m", "sgns.cli.summarize", str(sweep), "--no-plots"], cwd=tmp_path,
                             env=environment(), capture_output=True, text=True, timeout=120)
    assert summary.returncode == 0, summary.stderr
    assert "4 runs (3 finished, 1 failed)" in summary.stdout


def test_a_trial_whose_run_finished_before_the_driver_died_is_recorded_not_run_again(tmp_path: Path) -> None:
    needs_database_support()
    import optuna
    from omegaconf import OmegaConf
    from optuna.trial import TrialState

    from hydra_plugins.sgns_optuna_resume import JOB_NUM_ATTR, continue_study
    from sgns.train.metrics import write_metrics

    storage = f"sqlite:///{tmp_path / 'search.db'}"
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    sweep = tmp_path / "sweep"
    for job, metrics in enumerate(({"status": "finished", "objective": 0.25}, {"status": "running"})):
        trial = study.ask({"lr": optuna.distributions.UniformDistribution(0.01, 0.1)})
        trial.set_user_attr(JOB_NUM_ATTR, job)
        (sweep / str(job)).mkdir(parents=True)
        write_metrics(sweep / str(job), metrics)
    impl = type("Impl", (), {})()
    impl.study_name, impl.storage, impl.job_idx, impl.n_trials = "s", storage, 0, 3
    impl.sampler = optuna.samplers.RandomSampler(seed=1)
    impl.config = OmegaConf.create({"hydra": {"sweeper": {"sampler": {"seed": 1}}}})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        continue_study(impl, sweep)
    assert not caught, [str(w.message) for w in caught]  # optuna's ExperimentalWarning (enqueue_trial) says nothing

    trials = optuna.load_study(study_name="s", storage=storage).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.WAITING]
    assert trials[0].value == 0.25
    assert trials[2].system_attrs["fixed_params"] == trials[1].params  # only the unfinished one is queued again
    assert impl.n_trials == 2 and impl.job_idx == 2
    assert json.loads((sweep / "1" / "metrics.json").read_text())["status"] == "failed"


@pytest.mark.slow  # two searches (~45 s); the kill test above covers the counting of trials left
def test_a_finished_search_runs_no_trial_again(tmp_path: Path) -> None:
    needs_database_support()
    command = search_command(tmp_path, n_trials=1)
    for _ in range(2):
        result = subprocess.run(command, cwd=tmp_path, env=environment(), capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
    assert "1 trials finished, 0 of hydra.sweeper.n_trials=1 left to run" in result.stdout + result.stderr
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.name.isdigit()) == ["0"]
    assert (tmp_path / "sweep" / "optimization_results.yaml").is_file()


def test_without_sqlalchemy_1_a_database_fails_in_one_line(tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    sqlalchemy = pytest.importorskip("sqlalchemy")
    if int(sqlalchemy.__version__.split(".")[0]) < 2:
        pytest.skip("SQLAlchemy<2 is installed: the database works")
    result = subprocess.run(search_command(tmp_path, n_trials=1), cwd=tmp_path, env=environment(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("sgns-train: error: hydra.sweeper.storage=sqlite:///"
                                                             "search.db needs SQLAlchemy<2 with optuna 2.10")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "sweep" / "0").exists()


@pytest.mark.parametrize("storage, reason", [
    ("sqlite:///not-a-database.db", "file is not a database"),
    ("foo://x", "Can't load plugin: sqlalchemy.dialects:foo"),
    ("sqlite:////proc/self/search.db", "unable to open database file"),  # no file can be made there, even by root
])
def test_a_storage_that_cannot_be_opened_fails_in_one_line(tmp_path: Path, storage: str, reason: str) -> None:
    needs_database_support()
    (tmp_path / "not-a-database.db").write_text("a text file, not SQLite\n")
    command = [c.replace("sqlite:///search.db", storage) for c in search_command(tmp_path, n_trials=1)]
    result = subprocess.run(command, cwd=tmp_path, env=environment(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"sgns-train: error: hydra.sweeper.storage={storage} cannot be opened: {reason} (give a database URL such as "
        f"sqlite:///search.db, of an SQLite file or a folder this process can write)")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "sweep" / "0").exists()
    assert (tmp_path / "not-a-database.db").read_text() == "a text file, not SQLite\n"


def test_a_second_driver_of_the_same_study_is_refused_in_one_line(tmp_path: Path) -> None:
    """Two drivers of one study at once: the second took the first's running trial for dead and marked it failed,
    and the first then stopped with optuna's traceback ("Values cannot be specified when state is ... FAIL")."""
    needs_database_support()
    import time

    import optuna
    from optuna.trial import TrialState

    command = search_command(tmp_path, n_trials=2)
    first = subprocess.Popen(command, cwd=tmp_path, env=environment(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not (tmp_path / "sweep" / "0" / ".hydra").is_dir():  # the first driver's trial 0 runs
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read()[-3000:]
            time.sleep(0.05)
        second = subprocess.run(command, cwd=tmp_path, env=environment(), capture_output=True, text=True,
                                timeout=180)
        _, first_err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert second.returncode == 2 and "Traceback" not in second.stderr, second.stderr[-3000:]
    assert second.stderr.strip().splitlines()[-1] == (
        "sgns-train: error: study resume-test in hydra.sweeper.storage=sqlite:///search.db is being run by another "
        f"sgns-train (pid {first.pid}): one driver per study; wait for it to end, or give this search another "
        "hydra.sweeper.study_name")
    assert first.returncode == 0 and "Traceback" not in first_err, first_err[-3000:]
    study = optuna.load_study(study_name="resume-test", storage=f"sqlite:///{tmp_path / 'search.db'}")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.COMPLETE]
