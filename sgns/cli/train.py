"""`sgns-train [overrides]` (also `python -m sgns.train`): the Hydra command line around sgns.train.train.

Before Hydra runs (and writes `.hydra/` into the run dir) the overrides are composed once and checked, and a
run dir that holds a different run, or one in use, is refused: both fail in one line, having written nothing.
The Hydra entry point returns the objective, so sweepers can optimise it; a failed job's metrics.json says so.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import List, Tuple

import hydra
from omegaconf import DictConfig

from sgns.config import CONFIG_DIR, check_resolvable, config_error, validate
from sgns.distributed import FollowerExit, PeerLost, join_cluster, leave_cluster, topology_from_env
from sgns.errors import SGNSError, exit_with_error
from sgns.train import train
from sgns.train.metrics import mark_failed, objective
from sgns.train.rundir import check_run_dir

log = logging.getLogger("sgns")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def hydra_main(cfg: DictConfig) -> float:
    try:
        metrics = train(cfg)
        return objective(cfg.objective, metrics) if metrics else 0.0  # torchrun ranks other than 0: no metrics
    except FollowerExit:
        sys.exit(2)  # rank 0 reports it, in one line
    except SGNSError as e:
        if topology_from_env().rank == 0:
            mark_failed(cfg.trainer.run_dir, e)  # metrics.json says failed and why; sgns-summarize shows it
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.get().mode == RunMode.MULTIRUN:
            log.error(f"error: {e}")
            raise  # the sweep goes on with the other jobs and reports this one at the end
        exit_with_error("sgns-train", e)


def check_command_line(argv: List[str]) -> None:
    """Before Hydra runs (and writes `.hydra/*.yaml` into the run dir), compose the config once (and once more
    per further value of a sweep) and check it, then refuse a hydra.run.dir that holds a different run, one in
    use, or checkpoints that trainer.resume=never would overwrite: each in one line, having written nothing."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    flags = [a for a in argv if a.startswith("-")]
    if set(flags) - {"-m", "--multirun"}:
        return  # --help, --cfg, -c ...: Hydra's own business
    try:
        parsed = OverridesParser.create().parse_overrides([a for a in argv if not a.startswith("-")])
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
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose("train", overrides=first)
            check_composed(cfg)
            for at, value in others:
                check_composed(compose("train", overrides=[*first[:at], value, *first[at + 1 :]]))
    except SGNSError:
        raise
    except Exception as e:
        raise config_error(e) from None
    if flags or not run_dir or "${" in run_dir or not Path(run_dir).expanduser().is_dir():
        return  # sweeps get fresh dirs; a new run dir holds nothing to compare with
    check_run_dir(Path(run_dir).expanduser(), cfg, warn=lambda _: None, mmap=True)


def check_composed(cfg: DictConfig) -> None:
    """Every value resolves (but trainer.run_dir, which only Hydra's runtime knows) and is in range."""
    check_resolvable(cfg, skip=("trainer.run_dir",))
    validate(cfg)


def prepare_distributed(argv: List[str]) -> List[str]:
    """Under torchrun: join the process group, agree on one run dir (rank 0's), and keep the other ranks from
    writing Hydra's files into it. Returns the arguments Hydra gets on this rank."""
    from hydra import compose, initialize_config_dir

    if any(a in ("-m", "--multirun") for a in argv):
        raise SGNSError("a sweep (-m) cannot run under torchrun, which trains one model: sweep with a Hydra "
                        "launcher (hydra/launcher=slurm) instead")
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[a for a in argv if not a.startswith("-")], return_hydra_config=True)
    cluster = join_cluster(cfg)
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
    """Console entry point: `sgns-train [overrides]`, also `torchrun ... -m sgns.train [overrides]`."""
    try:
        run_command(sys.argv[1:])
    finally:
        leave_cluster()  # under torchrun; a process that exits still in the group may abort in gloo's threads


def run_command(argv: List[str]) -> None:
    rank = 0
    try:
        topology = topology_from_env()
        rank = topology.rank
        check_command_line(argv)
        if topology.distributed:
            sys.argv[1:] = prepare_distributed(argv)
    except FollowerExit:
        sys.exit(2)
    except SGNSError as e:
        if rank != 0 and not isinstance(e, PeerLost):
            sys.exit(2)  # the same line as rank 0's (the same arguments): said once
        exit_with_error("sgns-train", e)
    hydra_main()


if __name__ == "__main__":
    main()
