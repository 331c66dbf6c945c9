"""hydra-optuna-sweeper's sweeper, made resumable: with a database (`hydra.sweeper.storage=sqlite:///search.db`),
running the same search again continues its study (hparams_search=optuna_sgns selects it; docs/sweeps_resume.md).

On start, before the plugin's own loop:
- trials left RUNNING by a driver that died (killed, crashed) are marked FAIL, their run dirs' metrics.json say
  so, and their parameters are queued to run again; but one whose run dir holds a finished run (the driver died
  after the job ended, before it recorded the value) is recorded COMPLETE with that run's objective;
- only `n_trials` minus the trials already finished (COMPLETE or PRUNED) are run;
- job numbers (the run dirs under hydra.sweep.dir) continue after the ones used before, never reusing one;
- the sampler is reseeded from its seed and the number of trials so far, so it does not replay its first draws.
Each trial records its job number (user attribute `hydra_job_num`), so a dead trial's run dir is found.

It lives in Hydra's `hydra_plugins` namespace because Hydra instantiates sweepers only from there (and only
registered ones: the callback RegisterResumableSweeper, which optuna_sgns.yaml names, registers it). Hydra
imports every module here at start-up: this one imports nothing beyond the optuna plugin's own light module.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any, List

log = logging.getLogger(__name__)

try:
    from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
except ImportError:  # the sweep extra is not installed: nothing to extend (Hydra imports this module anyway)
    OptunaSweeper = None

JOB_NUM_ATTR = "hydra_job_num"


def check_storage_support(storage: Any) -> None:
    """optuna 2.10 (hydra-optuna-sweeper 1.3's pin) fails on SQLAlchemy 2 with a bare AssertionError: say why."""
    if storage is None:
        return
    import sqlalchemy

    from sgns.errors import SGNSError

    if int(sqlalchemy.__version__.split(".")[0]) >= 2:
        raise SGNSError(f"hydra.sweeper.storage={storage} needs SQLAlchemy<2 with optuna 2.10 (which "
                        f"hydra-optuna-sweeper pins), found SQLAlchemy {sqlalchemy.__version__}: "
                        f"pip install 'sqlalchemy<2' (or pip install 'sgns[sweep]')")


def check_storage_opens(storage: Any) -> None:
    """A storage that is no database (a corrupt file), has an unknown scheme or lies in a read-only place: one line
    naming it, not SQLAlchemy's traceback."""
    if storage is None:
        return
    import re

    import optuna

    from sgns.errors import SGNSError

    try:
        optuna.storages.get_storage(storage)
    except Exception as e:  # SQLAlchemy's DatabaseError, OperationalError, NoSuchModuleError, ArgumentError
        text = str(e).strip()
        reason = re.sub(r"^\(\w+(\.\w+)*\) ", "", text.splitlines()[0]) if text else type(e).__name__
        raise SGNSError(f"hydra.sweeper.storage={storage} cannot be opened: {reason} (give a database URL such as "
                        f"sqlite:///search.db, of an SQLite file or a folder this process can write)") from None


def lock_study(storage: Any, study_name: str, sweep_dir: Path) -> int:
    """Hold a lock on the study for this driver's life and return its file descriptor: a second driver of the same
    study at once would mark this one's running trial failed (taking it for dead) and this one then stopped with
    optuna's traceback. The lock lies beside an SQLite file (one per study), else in hydra.sweep.dir."""
    import fcntl
    import hashlib
    import os

    from sgns.errors import SGNSError

    url = str(storage)
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        database = Path(url[len("sqlite:///"):])
        tag = hashlib.blake2b(study_name.encode(), digest_size=6).hexdigest()  # any study name, one file name
        lock = database.with_name(f".{database.name}.{tag}.lock")
    else:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        lock = sweep_dir / ".sgns-sweep.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise SGNSError(f"study {study_name} in hydra.sweeper.storage={storage} is being run by another sgns-train "
                        f"(pid {holder}): one driver per study; wait for it to end, or give this search another "
                        f"hydra.sweeper.study_name") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def continue_study(impl: Any, sweep_dir: Path) -> None:
    """Prepare the plugin's sweeper (`OptunaSweeperImpl`) to continue the study it names, if it exists."""
    import optuna
    from optuna.trial import TrialState

    from sgns.train.metrics import mark_failed

    try:
        study = optuna.load_study(study_name=impl.study_name, storage=impl.storage)
    except KeyError:
        return  # a new study: the plugin creates it
    trials = study.get_trials(deepcopy=False)
    used = [int(p.name) for p in sweep_dir.iterdir() if p.name.isdigit()] if sweep_dir.is_dir() else []
    used += [int(t.user_attrs[JOB_NUM_ATTR]) for t in trials if JOB_NUM_ATTR in t.user_attrs]
    impl.job_idx = max([impl.job_idx, len(trials), *[n + 1 for n in used]])
    recovered = 0
    for trial in trials:
        if trial.state != TrialState.RUNNING:
            continue
        num = trial.user_attrs.get(JOB_NUM_ATTR)
        value = finished_objective(sweep_dir / str(num)) if num is not None and len(study.directions) == 1 else None
        if value is not None:
            study.tell(trial.number, value)
            recovered += 1
            log.info(f"trial {trial.number} had finished when the search stopped (run dir {num}): recorded, "
                     f"objective {value:g}")
            continue
        study.tell(trial.number, state=TrialState.FAIL)
        with warnings.catch_warnings():  # optuna 2.10 calls enqueue_trial experimental: a user can do nothing
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.enqueue_trial(trial.params)
        if num is not None and (sweep_dir / str(num)).is_dir():
            mark_failed(sweep_dir / str(num), f"the search stopped while trial {trial.number} ran; it is marked "
                                              f"failed in study {impl.study_name} and its parameters run again")
        log.info(f"trial {trial.number} was running when the search stopped: marked failed, its parameters "
                 f"queued to run again")
    reseed_sampler(impl.sampler, impl.config.hydra.sweeper.sampler.get("seed"), len(trials))
    finished = recovered + sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    left = max(0, impl.n_trials - finished)
    log.info(f"continuing study {impl.study_name} in {impl.storage}: {finished} trials finished, {left} of "
             f"hydra.sweeper.n_trials={impl.n_trials} left to run (job numbers from {impl.job_idx})")
    impl.n_trials = left


def finished_objective(run_dir: Path) -> Any:
    """The objective of the finished run in `run_dir` (its metrics.json), or None if it did not finish."""
    import math

    from sgns.train.metrics import FINISHED
    from sgns.train.runs import Run

    metrics = Run.read(run_dir).metrics  # empty when metrics.json is missing or unreadable
    value = metrics.get("objective")
    if metrics.get("status") != FINISHED or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def reseed_sampler(sampler: Any, seed: Any, trials_so_far: int) -> None:
    """A seeded sampler made afresh would draw again what it drew first (measured: TPE's first random trial came
    back as the first new one): seed it from (seed, trials so far), reproducible for the same restart point."""
    import numpy as np

    if not hasattr(sampler, "reseed_rng"):
        return  # GridSampler (still a functools.partial here) walks its grid, skipping points already tried
    sampler.reseed_rng()
    if seed is None:
        return
    # optuna 2.x's TPESampler and RandomSampler keep their RandomState in `_rng` (the sweep extra pins optuna<3)
    for part, rng_owner in enumerate((sampler, getattr(sampler, "_random_sampler", None))):
        if isinstance(getattr(rng_owner, "_rng", None), np.random.RandomState):
            rng_owner._rng = np.random.RandomState([int(seed), trials_so_far, part])


def record_job_numbers(impl: Any) -> None:
    """Wrap the plugin's `_configure_trials` (called right before each launch) so every trial records its job
    number: a later run finds the run dir of a trial that a dead driver left running."""
    configure = impl._configure_trials

    def configure_and_record(trials: List[Any], *args: Any, **kwargs: Any) -> Any:
        for i, trial in enumerate(trials):
            trial.set_user_attr(JOB_NUM_ATTR, impl.job_idx + i)
        return configure(trials, *args, **kwargs)

    impl._configure_trials = configure_and_record


if OptunaSweeper is not None:

    class ResumableOptunaSweeper(OptunaSweeper):
        """OptunaSweeper that continues a study kept in a database instead of running n_trials more."""

        def sweep(self, arguments: List[str]) -> None:
            from sgns.errors import SGNSError, exit_with_error

            impl = self.sweeper
            try:
                check_storage_support(impl.storage)
                check_storage_opens(impl.storage)
                if impl.storage is not None:
                    self.study_lock = lock_study(impl.storage, impl.study_name, Path(str(impl.config.hydra.sweep.dir)))
            except SGNSError as e:
                exit_with_error("sgns-train", e)  # one line, as for any bad input (SystemExit passes Hydra by)
            if impl.storage is not None:
                continue_study(impl, Path(str(impl.config.hydra.sweep.dir)))
            record_job_numbers(impl)
            return super().sweep(arguments)

    from hydra.experimental.callback import Callback

    class RegisterResumableSweeper(Callback):
        """Registers ResumableOptunaSweeper with Hydra (`Plugins.register`, Hydra's API for this). Hydra creates a
        sweeper only from a class its plugin scan registered, and the scan misses this module under an editable
        install (setuptools' import hook is no folder it can walk); callbacks are created before the sweeper."""

        def __init__(self) -> None:
            from hydra.core.plugins import Plugins

            Plugins.instance().register(ResumableOptunaSweeper)
