"""`sgns-train [overrides]` (also `python -m sgns.train`): the Hydra command line around sgns.train.train.

Before Hydra writes `.hydra/` into the run dir the config is composed and checked, and a run dir that holds a
different run, or one in use, is refused: both fail in one line, having written nothing. A plain run (no flag,
no sweep, not under torchrun) is composed once and handed to Hydra's own `run_job`, as `@hydra.main` would;
sweeps, torchrun and Hydra's flags go through `@hydra.main`. The Hydra entry point returns the objective, so
sweepers can optimise it; a failed job's metrics.json says so. `--help` is Hydra's app help, made without
importing torch. Start-up costs and what is imported when: docs/startup.md.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import string
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import hydra
from omegaconf import DictConfig

from sgns.cli.common import collect_again, defer_collection, exit_without_teardown
from sgns.config import CONFIG_DIR, check_resolvable, config_error, validate
from sgns.errors import SGNSError, exit_with_error
from sgns.train.metrics import mark_failed, objective

# The train loop (torch, numba, tensorboard) and sgns.distributed (torch) are imported where a run needs them,
# so that --help and a command line that fails its checks return without loading them.

log = logging.getLogger("sgns")
CONFIG_NAME = "train"
HELP_FLAGS = ("--help", "-h")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name=CONFIG_NAME)
def hydra_main(cfg: DictConfig) -> float:
    from sgns.distributed import FollowerExit, topology_from_env
    from sgns.train import train

    collect_again()  # the libraries are loaded (main deferred collection)
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


def parse_command_line(argv: List[str]) -> Tuple[List[str], List[Tuple[int, str]], Optional[str]]:
    """The overrides in `argv` as (the first job's overrides, (position in them, override) of every further
    sweep value, hydra.run.dir if the command line sets it); SGNSError for one that does not parse."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

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
    return first, others, run_dir


def check_command_line(argv: List[str]) -> None:
    """Before Hydra runs (and writes `.hydra/*.yaml` into the run dir), compose the config once (and once more
    per further value of a sweep) and check it, then refuse a hydra.run.dir that holds a different run, one in
    use, or checkpoints that trainer.resume=never would overwrite: each in one line, having written nothing."""
    from hydra import compose, initialize_config_dir

    flags = [a for a in argv if a.startswith("-")]
    if set(flags) - {"-m", "--multirun"}:
        return  # --help, --cfg, -c ...: Hydra's own business
    first, others, run_dir = parse_command_line(argv)
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose(CONFIG_NAME, overrides=first)
            check_composed(cfg)
            for at, value in others:
                check_composed(compose(CONFIG_NAME, overrides=[*first[:at], value, *first[at + 1 :]]))
    except SGNSError:
        raise
    except Exception as e:
        raise config_error(e) from None
    if not flags:
        check_run_dir_of(run_dir, cfg)  # sweeps get fresh dirs


def check_run_dir_of(run_dir: Optional[str], cfg: Mapping[str, Any] | DictConfig) -> None:
    """Refuse (SGNSError) a hydra.run.dir given on the command line that may not take this run."""
    if not run_dir or "${" in run_dir or not Path(run_dir).expanduser().is_dir():
        return  # a new run dir holds nothing to compare with
    from sgns.train.rundir import check_run_dir

    check_run_dir(Path(run_dir).expanduser(), cfg, warn=lambda _: None, mmap=True)


def check_composed(cfg: DictConfig) -> None:
    """Every value resolves (but trainer.run_dir, which only Hydra's runtime knows, and Hydra's own settings)
    and is in range."""
    check_resolvable(cfg, skip=("trainer.run_dir", "hydra"))
    validate(cfg)


def prepare_distributed(argv: List[str]) -> List[str]:
    """Under torchrun: join the process group, agree on one run dir (rank 0's), and keep the other ranks from
    writing Hydra's files into it. Returns the arguments Hydra gets on this rank."""
    from hydra import compose, initialize_config_dir

    from sgns.distributed import join_cluster

    if any(a in ("-m", "--multirun") for a in argv):
        raise SGNSError("a sweep (-m) cannot run under torchrun, which trains one model: sweep with a Hydra "
                        "launcher (hydra/launcher=slurm) instead")
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(CONFIG_NAME, overrides=[a for a in argv if not a.startswith("-")], return_hydra_config=True)
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
    """Console entry point: `sgns-train [overrides]`, also `torchrun ... -m sgns.train [overrides]`. Ends the
    process without the interpreter's teardown (sgns.cli.common.exit_without_teardown), except under torchrun."""
    distributed_run = "WORLD_SIZE" in os.environ
    defer_collection()  # until hydra_main has loaded torch, numba and the train loop
    with contextlib.nullcontext() if distributed_run else exit_without_teardown():
        try:
            run_command(sys.argv[1:])
        finally:
            distributed = sys.modules.get("sgns.distributed")
            if distributed is not None:  # under torchrun; a process that exits still in the group may abort in gloo
                distributed.leave_cluster()


def run_command(argv: List[str]) -> None:
    flags = [a for a in argv if a.startswith("-")]
    if len(flags) == 1 and flags[0] in HELP_FLAGS:
        print_help([a for a in argv if not a.startswith("-")])
        return
    rank = 0
    try:
        if "WORLD_SIZE" in os.environ:  # started by torchrun (or srun, mpirun with its variables)
            from sgns.distributed import topology_from_env

            topology = topology_from_env()
            rank = topology.rank
            check_command_line(argv)
            if topology.distributed:
                sys.argv[1:] = prepare_distributed(argv)
        elif flags or parse_command_line(argv)[1] or not run_once(argv):  # a sweep, or one of Hydra's flags
            check_command_line(argv)
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
    hydra_main()


def run_once(argv: List[str]) -> bool:
    """Run a plain command line (overrides only, no sweep) as `@hydra.main` does (Hydra's run: compose, callbacks,
    `run_job`, which writes `.hydra/` and the log), but composed once instead of three times (our check, Hydra's
    get_mode, Hydra's run), checked between composing and `run_job`. False, having run nothing, if the composed
    config asks for a multirun (hydra.mode=MULTIRUN), which `@hydra.main` then runs."""
    from hydra._internal.callbacks import Callbacks
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.utils import run_job
    from hydra.types import HydraContext, RunMode
    from omegaconf import open_dict, read_write

    app = make_hydra()
    try:
        try:
            cfg = app.compose_config(CONFIG_NAME, list(argv), run_mode=RunMode.RUN, with_log_configuration=True)
        except Exception as e:
            raise config_error(e) from None
        if cfg.hydra.mode == RunMode.MULTIRUN:
            return False
        if cfg.hydra.mode is None:  # what Hydra's `hydra.mode=RUN` override, added when no config sets it, does
            with read_write(cfg.hydra), open_dict(cfg.hydra):
                cfg.hydra.mode = RunMode.RUN
                cfg.hydra.overrides.hydra.append("hydra.mode=RUN")
        try:
            check_composed(cfg)
        except SGNSError:
            raise
        except Exception as e:
            raise config_error(e) from None
        check_run_dir_of(parse_command_line(argv)[2], {key: cfg[key] for key in cfg if key != "hydra"})

        def run() -> None:  # Hydra.run after its compose
            callbacks = Callbacks(cfg)
            callbacks.on_run_start(config=cfg, config_name=CONFIG_NAME)
            job = run_job(hydra_context=HydraContext(config_loader=app.config_loader, callbacks=callbacks),
                          task_function=hydra_main.__wrapped__, config=cfg, job_dir_key="hydra.run.dir",
                          job_subdir_key=None, configure_logging=True)
            callbacks.on_run_end(config=cfg, config_name=CONFIG_NAME, job_return=job)
            _ = job.return_value  # raises the job's exception, as Hydra.run does

        from hydra._internal.utils import run_and_report

        run_and_report(run)
        return True
    finally:
        GlobalHydra.instance().clear()


def make_hydra() -> Any:
    """Hydra's application object for sgns-train, set up as `@hydra.main` on `hydra_main` sets it up."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import (
        create_automatic_config_search_path,
        detect_calling_file_or_module_from_task_function,
        detect_task_name,
        run_and_report,
    )

    calling_file, calling_module = detect_calling_file_or_module_from_task_function(hydra_main)
    search_path = create_automatic_config_search_path(calling_file, calling_module, CONFIG_DIR)
    return run_and_report(lambda: Hydra.create_main_hydra2(task_name=detect_task_name(calling_file, calling_module),
                                                           config_search_path=search_path))


def print_help(overrides: List[str]) -> None:
    """`sgns-train --help [overrides]`: Hydra's app help (its help template, the config groups, the composed config),
    without listing Hydra's own config groups unless the template shows them (Hydra's help lists every group twice,
    whatever the template: most of its time) and without importing torch."""
    from hydra._internal.utils import get_args_parser
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    app = make_hydra()
    try:
        try:
            cfg = app.compose_config(CONFIG_NAME, overrides, run_mode=RunMode.RUN, with_log_configuration=True)
        except Exception as e:
            exit_with_error("sgns-train", config_error(e))
        HydraConfig.instance().set_config(cfg)
        template = str(cfg.hydra.help.template)
        groups = ("".join(f"{group}: {', '.join(sorted(options))}\n"
                          for group, options in sorted(app_config_groups(app.config_loader).items())))
        hydra_groups = ""
        if "HYDRA_CONFIG_GROUPS" in template:
            hydra_groups = app.format_config_groups(lambda group: group == "hydra" or group.startswith("hydra/"))
        print(string.Template(template).substitute(
            FLAGS_HELP=app.format_args_help(get_args_parser()), HYDRA_CONFIG_GROUPS=hydra_groups,
            APP_CONFIG_GROUPS=groups,
            CONFIG=OmegaConf.to_yaml(app.get_sanitized_cfg(copy.deepcopy(cfg), "job"), resolve=False)))
    finally:
        GlobalHydra.instance().clear()


def app_config_groups(loader: Any, parent: str = "") -> Dict[str, List[str]]:
    """group -> its options, for every config group under `parent` but Hydra's own (`hydra`, `hydra/...`)."""
    from hydra.core.object_type import ObjectType

    found: Dict[str, List[str]] = {}
    for child in loader.list_groups(parent):
        group = f"{parent}/{child}" if parent else child
        if group == "hydra":
            continue
        options = loader.get_group_options(group, ObjectType.CONFIG)
        if options:
            found[group] = options
        if loader.get_group_options(group, ObjectType.GROUP):
            found.update(app_config_groups(loader, group))
    return found


if __name__ == "__main__":
    main()
