"""`sgns-train [overrides]` (also `python -m sgns.train`): the Hydra command line around sgns.train.train.

Before Hydra runs (and writes `.hydra/` into the run dir) the overrides are composed once and checked, and a
run dir that holds a different run, or one in use, is refused: both fail in one line, having written nothing.
The Hydra entry point returns the objective, so sweepers can optimise it; a failed job's metrics.json says so.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Dict, List

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


def check_overrides(argv: List[str]) -> None:
    """Compose the config before Hydra runs, so a bad key or value fails in one line and writes nothing."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if any(a in ("-m", "--multirun") or a.startswith("-") for a in argv):
        flags = [a for a in argv if a.startswith("-")]
        if set(flags) - {"-m", "--multirun"}:
            return  # --help, --cfg, -c ...: Hydra's own business
    overrides = [a for a in argv if not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as e:
        raise SGNSError(str(e).strip().splitlines()[0]) from None
    plain = []
    for o in parsed:
        if o.is_hydra_override() or o.get_key_element().startswith("hydra"):
            continue
        if o.is_sweep_override():
            if not o.is_discrete_sweep():
                continue
            plain.extend(f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator())
        else:
            plain.append(o.input_line)
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            # Sweep values are checked one by one; other keys get their first value.
            seen_keys: Dict[str, List[str]] = {}
            for item in plain:
                seen_keys.setdefault(item.split("=", 1)[0], []).append(item)
            for key, items in seen_keys.items():
                for item in items:
                    others = [v[0] for k, v in seen_keys.items() if k != key]
                    check_composed(compose("train", overrides=[*others, item]))
            if not plain:
                check_composed(compose("train"))
    except SGNSError:
        raise
    except Exception as e:
        raise config_error(e) from None


def check_composed(cfg: DictConfig) -> None:
    """Every value resolves (but trainer.run_dir, which only Hydra's runtime knows) and is in range."""
    check_resolvable(cfg, skip=("trainer.run_dir",))
    validate(cfg)


def check_existing_run(argv: List[str]) -> None:
    """Refuse, before Hydra rewrites `.hydra/*.yaml` there, a hydra.run.dir that holds a different run, one in
    use, or checkpoints that trainer.resume=never would overwrite (single runs; sweeps get fresh dirs)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if any(a.startswith("-") for a in argv):
        return  # multirun, --help, --cfg ...
    try:
        parsed = OverridesParser.create().parse_overrides(list(argv))
    except Exception:
        return  # check_overrides reports it
    run_dir, plain = None, []
    for o in parsed:
        key = o.get_key_element()
        if key == "hydra.run.dir" and not o.is_sweep_override():
            run_dir = str(o.value())
        elif not (o.is_hydra_override() or key.startswith("hydra")):
            plain.append(o.input_line)
    if not run_dir or "${" in run_dir or not Path(run_dir).expanduser().is_dir():
        return
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=plain)
    check_run_dir(Path(run_dir).expanduser(), cfg, warn=lambda _: None, mmap=True)


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
    answer: tuple = (None, None)
    if cluster.rank == 0:  # resolves ${now:...} once, and refuses a run dir that holds another run
        try:
            check_existing_run(argv)
            answer = (str(cfg.hydra.run.dir), None)
        except SGNSError as e:
            answer = (None, str(e))
    run_dir, error = cluster.broadcast_object(answer, "agreeing on the run directory")
    if error is not None:
        raise SGNSError(error) if cluster.rank == 0 else FollowerExit(error)
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
        check_overrides(argv)
        if topology.distributed:
            sys.argv[1:] = prepare_distributed(argv)
        else:
            check_existing_run(argv)
    except FollowerExit:
        sys.exit(2)
    except SGNSError as e:
        if rank != 0 and not isinstance(e, PeerLost):
            sys.exit(2)  # the same line as rank 0's (the same arguments): said once
        exit_with_error("sgns-train", e)
    hydra_main()


if __name__ == "__main__":
    main()
