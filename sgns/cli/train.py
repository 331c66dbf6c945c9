"""`sgns-train [overrides]` (also `python -m sgns.train`): the command line around sgns.train.train.

Before Hydra writes `.hydra/` into the run dir the config is composed and checked, and a run dir that holds a
different run, or one in use, is refused: both fail in one line, having written nothing. A plain run (overrides
and `-cd DIR` only, no sweep, not under torchrun) is composed once and run by sgns.hydra_app.run_once, as
`@hydra.main` would run it; sweeps, torchrun and Hydra's other flags go through `@hydra.main`
(sgns.hydra_app.run_with_hydra). The job returns the objective, so sweepers can optimise it; a failed job's
metrics.json says so; a failed sweep job is one line at the sweep's end. `--help` lists every key with its default and
comment, made from the schema without importing torch. Start-up costs and what is
imported when: docs/startup.md.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any, List, Mapping, Optional, Set, Tuple

from omegaconf import DictConfig, OmegaConf

from sgns import hydra_app
from sgns.cli.common import collect_again, defer_collection, exit_without_teardown
from sgns.errors import SGNSError, Stopped, exit_with_error
from sgns.train.metrics import mark_failed, objective

# The train loop (torch, numba, tensorboard) and sgns.distributed (torch) are imported where a run needs them,
# so that --help and a command line that fails its checks return without loading them.

log = logging.getLogger("sgns")
PLAIN_FLAGS = {"config_dir"}  # the flags (Hydra's parser's names) a plain run may have: composed once (run_once)
SWEEP_FLAGS = {"config_dir", "multirun"}  # those of a command line checked before Hydra runs it
HELP_FLAGS = {"config_dir", "help"}  # sgns-train's own --help
RUN_DIR_KEY = "trainer.run_dir"  # Hydra's run dir, as the job sees it
FULL_ERROR = "HYDRA_FULL_ERROR"  # Hydra re-raises a job's error where this is set (a user's: a full traceback)
INTERRUPTED = 130  # exit status after Ctrl-C (128 + SIGINT), as shells report it
# The loggers that print what a job returned (the objective: an accuracy or a Spearman, a float's 17 digits)
SWEEP_SCORE_LOGGERS = ("optuna.study.study", "hydra_plugins.hydra_optuna_sweeper._impl")
LOGGED_SCORE = re.compile(r"(\bvalues?: \[?)(-?\d+\.\d{5,}(?:e-?\d+)?)")
SCORE_DIGITS = 4  # as sgns's own log lines (sgns.train.loop.log_evaluation)
FINISHED_RUNS: List[str] = []  # the run dirs whose training ended in this process, for what a late Ctrl-C says


class RoundedScores(logging.Filter):
    """Rounds the objective in Optuna's and its Hydra sweeper's log lines (`Trial 3 finished with value:
    0.38878...`, `Best value: ...`) to SCORE_DIGITS decimals; optimization_results.yaml and Optuna's study keep
    the full value. Their messages arrive formatted, so the number is rewritten in the text."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and not record.args:
            record.msg = LOGGED_SCORE.sub(lambda m: f"{m.group(1)}{float(m.group(2)):.{SCORE_DIGITS}f}", record.msg)
        return True


def round_sweep_scores() -> None:
    """Put RoundedScores on the loggers that print a sweep's objective."""
    for name in SWEEP_SCORE_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RoundedScores) for f in logger.filters):
            logger.addFilter(RoundedScores())


def train_job(cfg: DictConfig) -> float:
    """The job Hydra runs: train, and return the objective to sweepers."""
    from sgns.distributed import FollowerExit, topology_from_env
    from sgns.train import train

    collect_again()  # the libraries are loaded (main deferred collection)
    try:
        metrics = train(cfg)
        FINISHED_RUNS.append(str(cfg.trainer.run_dir))
        return objective(cfg.objective, metrics) if metrics else 0.0  # torchrun ranks other than 0: no metrics
    except FollowerExit:
        sys.exit(2)  # rank 0 reports it, in one line
    except SGNSError as e:
        if isinstance(e, Stopped) and hydra_app.discard_unstarted_run_dir(cfg.trainer.run_dir):
            raise KeyboardInterrupt from None  # stopped while reading: nothing to resume, nothing kept (main says so)
        if topology_from_env().rank == 0:
            mark_failed(cfg.trainer.run_dir, e)  # metrics.json says failed and why; sgns-summarize shows it
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra_cfg = HydraConfig.get()
        if hydra_cfg.mode == RunMode.MULTIRUN:
            log.error(f"error: {e}")
            # the sweep goes on with the other jobs, and ends with one line for each failed one (not a traceback)
            overrides = " ".join(hydra_cfg.overrides.task)
            raise hydra_app.FailedJob(f"job {hydra_cfg.job.num} ({overrides}): {e}") from None
        exit_with_error("sgns-train", e)


def parse_args(argv: List[str]) -> Tuple[argparse.Namespace, Set[str]]:
    """`argv` read by Hydra's own parser (a flag it does not know: its usage error, exit status 2), and the flags
    it sets (`config_dir`, `multirun`, `help`, `cfg` ...: the parser's names). Overrides may stand on both sides
    of a flag (`a=1 -m b=2,3`), so that a sweep under torchrun is refused with its reason."""
    parser = hydra_app.args_parser()
    args = parser.parse_intermixed_args(argv)
    defaults = vars(parser.parse_args([]))
    return args, {key for key, value in vars(args).items() if key != "overrides" and value != defaults[key]}


def parse_overrides(overrides: List[str]) -> Tuple[List[str], List[Tuple[int, str]], Optional[str]]:
    """`overrides` as (the first job's overrides, (position in them, override) of every further sweep value,
    hydra.run.dir if they set it); SGNSError for one that does not parse."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except Exception as e:
        raise SGNSError(str(e).strip().splitlines()[0]) from None
    first: List[str] = []  # the overrides of the first job (a sweep's first value)
    others: List[Tuple[int, str]] = []  # (position in `first`, override) of every further sweep value
    run_dir = None
    for o in parsed:
        key = o.get_key_element()
        if key == "hydra.run.dir" and not o.is_sweep_override():
            run_dir = str(o.value())
        if o.is_hydra_override() or key.startswith("hydra"):
            continue
        if not o.is_sweep_override():
            first.append(o.input_line)
        elif o.is_discrete_sweep():
            values = [f"{key}={v}" for v in o.sweep_string_iterator()]
            others += [(len(first), v) for v in values[1:]]
            first.append(values[0])
    return first, others, run_dir


def check_command_line(argv: List[str]) -> None:
    """Before Hydra runs (and writes `.hydra/*.yaml` into the run dir), compose the config once (and once more
    per further value of a sweep) and check it, then refuse a hydra.run.dir that holds a different run, one in
    use, or checkpoints that trainer.resume=never would overwrite: each in one line, having written nothing."""
    args, flags = parse_args(argv)
    if flags - SWEEP_FLAGS:
        return  # --help, --cfg, -c ...: Hydra's own business
    first, others, run_dir = parse_overrides(args.overrides)
    cfg = hydra_app.compose(first, config_dir=args.config_dir, check=True)
    for at, value in others:
        hydra_app.compose([*first[:at], value, *first[at + 1:]], config_dir=args.config_dir, check=True)
    if not args.multirun:
        check_run_dir_of(run_dir, cfg)  # sweeps get fresh dirs


def check_run_dir_of(run_dir: Optional[str], cfg: Mapping[str, Any] | DictConfig) -> None:
    """Refuse (SGNSError) a corpus path that is no file, and a hydra.run.dir given on the command line that may not
    take this run."""
    from sgns.corpus import check_corpus_path

    check_corpus_path(cfg["corpus"])
    if run_dir and "${" not in run_dir:
        hydra_app.check_run_dir_writable(run_dir)
    if not run_dir or "${" in run_dir or not Path(run_dir).expanduser().is_dir():
        return  # a new run dir holds nothing to compare with
    from sgns.train.rundir import check_run_dir

    check_run_dir(Path(run_dir).expanduser(), cfg, warn=lambda _: None, mmap=True)


def prepare_distributed(argv: List[str]) -> List[str]:
    """Under torchrun: join the process group, agree on one run dir (rank 0's), and keep the other ranks from
    writing Hydra's files into it. Returns the arguments Hydra gets on this rank."""
    from sgns.distributed import join_cluster

    args, flags = parse_args(argv)
    if "multirun" in flags:
        raise SGNSError("a sweep (-m) cannot run under torchrun, which trains one model: sweep with a Hydra "
                        "launcher (hydra/launcher=slurm) instead")
    cfg = hydra_app.compose(args.overrides, config_dir=args.config_dir, hydra_config=True)
    cluster = join_cluster(str(cfg.trainer.device), OmegaConf.to_object(cfg.dist))
    assert cluster is not None
    # rank 0 resolves ${now:...} once (the command line was checked on every rank before)
    run_dir = cluster.broadcast_object(str(cfg.hydra.run.dir) if cluster.rank == 0 else None,
                                       "agreeing on the run directory")
    argv = [a for a in argv if not a.startswith(("hydra.run.dir=", "+hydra.run.dir=", "++hydra.run.dir="))]
    argv.append(f"hydra.run.dir={run_dir}")
    if cluster.rank != 0:  # rank 0 alone writes .hydra/ and the log file
        argv += ["hydra.output_subdir=null", "hydra/job_logging=none", "hydra/hydra_logging=none"]
    return argv


def main() -> None:
    """Console entry point: `sgns-train [overrides]`, also `torchrun ... -m sgns.train [overrides]`. Ends the
    process without the interpreter's teardown (sgns.cli.common.exit_without_teardown), except under torchrun.
    Ctrl-C before the train loop takes it over (start-up: imports, reading): one line, exit status 130, and the
    run dir it made removed (sgns.hydra_app.run_once); once training runs, the loop stops with a checkpoint."""
    distributed_run = "WORLD_SIZE" in os.environ
    defer_collection()  # until train_job has loaded torch, numba and the train loop
    with contextlib.nullcontext() if distributed_run else exit_without_teardown():
        try:
            run_command(sys.argv[1:])
        except KeyboardInterrupt:
            signals = sys.modules.get("sgns.train.signals")  # loaded once train() runs
            by = signals.interrupted_by if signals is not None else None
            said = f"by {signal.Signals(by).name}" if by is not None else "(Ctrl-C)"
            sys.stderr.write(f"sgns-train: error: interrupted {said} {interrupted_when()}\n")
            sys.exit(128 + by if by is not None else INTERRUPTED)
        finally:
            distributed = sys.modules.get("sgns.distributed")
            if distributed is not None:  # under torchrun; a process that exits still in the group may abort in gloo
                distributed.leave_cluster()


def interrupted_when() -> str:
    """When an interrupt outside the train loop came, for its one line: before any run of this command trained,
    or after some had finished (in the bookkeeping after a run's `done:` line, or between sweep jobs)."""
    if not FINISHED_RUNS:
        return "before training started; nothing was trained"
    if len(FINISHED_RUNS) == 1:
        return f"after the run finished; its outputs in {FINISHED_RUNS[0]} are complete"
    return f"after {len(FINISHED_RUNS)} runs finished; their outputs are complete ({', '.join(FINISHED_RUNS)})"


def run_command(argv: List[str]) -> None:
    args, flags = parse_args(argv)
    rank = 0
    try:
        hydra_app.check_overrides(args.overrides, args.config_dir)  # every command line, --help and --cfg too
        if "cfg" in flags and args.resolve and not any(o.lstrip("+").startswith(RUN_DIR_KEY + "=")
                                                       for o in args.overrides):
            # --cfg runs no job, so Hydra leaves runtime.output_dir unset: the run dir a run would get instead
            argv = [*argv, f"{RUN_DIR_KEY}=${{hydra:run.dir}}"]
        if "help" in flags and flags <= HELP_FLAGS:
            print(hydra_app.help_text(args.overrides, args.config_dir))
            return
        if "WORLD_SIZE" in os.environ:  # started by torchrun (or srun, mpirun with its variables)
            from sgns.distributed import topology_from_env

            topology = topology_from_env()
            rank = topology.rank
            check_command_line(argv)
            if topology.distributed:
                argv = prepare_distributed(argv)
        elif not flags <= PLAIN_FLAGS or parse_overrides(args.overrides)[1] or not run_once(args):
            check_command_line(argv)  # a sweep, or one of Hydra's flags
        else:
            return  # run_once ran it
    except SGNSError as e:
        distributed = sys.modules.get("sgns.distributed")  # imported where its errors can occur (torchrun)
        if distributed is not None:
            if isinstance(e, distributed.FollowerExit):
                sys.exit(2)  # rank 0 reports it, in one line
            if rank != 0 and not isinstance(e, distributed.PeerLost):
                sys.exit(2)  # the same line as rank 0's (the same arguments): said once
        exit_with_error("sgns-train", e)
    sys.argv[1:] = argv
    if "multirun" in flags:
        round_sweep_scores()
    if "multirun" in flags and FULL_ERROR not in os.environ:
        # Hydra re-raises a failed job's error to us instead of printing it with a hint about tracebacks
        os.environ[FULL_ERROR] = "1"
        try:
            hydra_app.run_with_hydra(train_job)
        except hydra_app.FailedJob as e:  # every failed job, one line each
            sys.stderr.write(f"{e}\n")
            sys.exit(2)
        return
    hydra_app.run_with_hydra(train_job)


def run_once(args: argparse.Namespace) -> bool:
    """Run a plain command line (overrides and -cd only, no sweep) composed once (sgns.hydra_app.run_once), the
    run dir it names checked before anything is written. False, having run nothing, if the composed config asks
    for a multirun (hydra.mode=MULTIRUN), which `@hydra.main` then runs."""
    run_dir = parse_overrides(args.overrides)[2]
    ran, _ = hydra_app.run_once(train_job, args.overrides, config_dir=args.config_dir,
                                check=lambda cfg: check_run_dir_of(run_dir, cfg), report=True)
    return ran


if __name__ == "__main__":
    main()
