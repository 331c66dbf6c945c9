"""The one place sgns meets Hydra: composing the train config, running it once, help, and Hydra's run files.

`sgns-train` (sgns/cli/train.py) and `sgns.fit` (sgns/api.py) both go through here, so a run from Python and one
from the command line get the same config, the same one-line errors and the same run directory: `.hydra/`
(config.yaml, overrides.yaml, hydra.yaml) and the log file are written by Hydra's own `run_job`, as `@hydra.main`
does. Sweeps, torchrun and Hydra's other flags run through `@hydra.main` itself (`run_with_hydra`). Hydra's
private modules (`hydra._internal`) are used in this module only.

Where configs are found (Hydra's search path; the first folder holding a config wins):
1. `sgns/conf/`, package data: the options the code needs (train.yaml, corpus, data, model, ...); the wheel
   carries them, so sgns-train works from anywhere.
2. `configs/` beside the package, in a checkout: recipes (experiment/, hydra/launcher/) and the user's own,
   git-ignored `configs/local/` (its `default.yaml`, where present, applies to every run). Added by the
   `CheckoutConfigs` search-path plugin, registered here: Hydra's plugin scan misses an editable install.
3. A user's folder: `sgns-train -cd DIR` and `sgns.fit(config_dir=DIR)`, where Hydra puts `--config-dir`.
A recipe never shadows a packaged option (tests/test_configs.py), so 1 and 2 never compete.

Help and key suggestions can be made here without composing: `option_names` reads every group's options from
the folders, and sgns.config holds every key with its comment.
"""

from __future__ import annotations

import contextlib
import copy
import os
import string
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from hydra.core.config_search_path import ConfigSearchPath, SearchPathQuery
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import DictConfig

from sgns.config import CONFIG_DIR, check_resolvable, config_error, validate
from sgns.errors import SGNSError

CONFIG_NAME = "train"  # sgns/conf/train.yaml, the primary config
TASK_NAME = "train"  # Hydra's job name: names the log file (train.log)
CHECKOUT = Path(CONFIG_DIR).parent.parent  # the checkout's root when sgns is imported from one
RECIPES_DIR = CHECKOUT / "configs"  # the recipes and the user's configs of a checkout
CHECKOUT_MARKER = "pyproject.toml"  # beside configs/ only in a checkout (site-packages holds no pyproject.toml)
HYDRA_GROUP = "hydra"  # Hydra's own config groups (hydra/launcher, ...) live under it
RECIPE_GROUP = "experiment"  # a group of recipes only, and also the key recording which one a run applied
VERSION_BASE = "1.3"  # Hydra's defaults of this version (no chdir into the run dir, ...)


def checkout_configs() -> Optional[Path]:
    """The checkout's `configs/` folder, or None when sgns is not imported from a checkout (an installed wheel)."""
    if RECIPES_DIR.is_dir() and (CHECKOUT / CHECKOUT_MARKER).is_file():
        return RECIPES_DIR
    return None


class CheckoutConfigs(SearchPathPlugin):
    """Adds the checkout's `configs/` to Hydra's search path, after the packaged options."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        found = checkout_configs()
        if found is not None:
            search_path.append(provider="sgns-checkout", path=f"file://{found}")


def _register_plugin() -> None:
    """Make CheckoutConfigs known to Hydra (idempotent): before Hydra builds its search path, everywhere."""
    from hydra.core.plugins import Plugins

    Plugins.instance().register(CheckoutConfigs)


def config_folder(config_dir: str | os.PathLike) -> str:
    """A user's config folder as an absolute path; SGNSError when it is no folder."""
    path = Path(config_dir).expanduser().absolute()
    if not path.is_dir():
        raise SGNSError(f"config directory {path} not found: give a folder of config groups (e.g. DIR/experiment/"
                        f"NAME.yaml)")
    return str(path)


def config_roots(config_dir: Optional[str | os.PathLike] = None) -> List[Path]:
    """The folders configs are found in, in the search path's order: packaged, checkout, the user's."""
    roots = [Path(CONFIG_DIR)]
    found = checkout_configs()
    if found is not None:
        roots.append(found)
    if config_dir is not None:
        roots.append(Path(config_folder(config_dir)))
    return roots


def option_names(config_dir: Optional[str | os.PathLike] = None, hydra_groups: bool = False) -> Dict[str, List[str]]:
    """group -> its options (`experiment` -> [gutenberg_baseline, text8]), read from the folders, without
    composing; Hydra's own groups (`hydra/...`) only with `hydra_groups`."""
    found: Dict[str, set] = {}
    for root in config_roots(config_dir):
        for path in root.rglob("*.yaml"):
            group = path.parent.relative_to(root).as_posix()
            if group == "." or (not hydra_groups and (group == HYDRA_GROUP or group.startswith(HYDRA_GROUP + "/"))):
                continue
            found.setdefault(group, set()).add(path.stem)
    return {group: sorted(options) for group, options in sorted(found.items())}


def check_recipes_found(overrides: Sequence[str], config_dir: Optional[str | os.PathLike] = None) -> None:
    """SGNSError for `experiment=NAME` where no experiment folder is found (an installed sgns, no checkout, no
    -cd): Hydra would take it as the value of the `experiment` key and train without the recipe."""
    named = next((o for o in overrides if o.split("=", 1)[0].lstrip("+~") == RECIPE_GROUP), None)
    if named is not None and RECIPE_GROUP not in option_names(config_dir):
        raise SGNSError(f"{named}: no experiments are found here: they are recipes in a checkout's configs/"
                        f"{RECIPE_GROUP}/ (run sgns from a checkout) or in your own folder (-cd DIR, config_dir=DIR)")


@contextlib.contextmanager
def hydra_app(config_dir: Optional[str | os.PathLike] = None) -> Iterator[Any]:
    """Hydra's application object for the train config, its search path as `@hydra.main` builds it (with
    CheckoutConfigs, and `config_dir` where `--config-dir` goes); Hydra's global state is cleared afterwards."""
    from hydra import version
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():  # e.g. sgns.fit inside an @hydra.main app's job
        raise SGNSError("Hydra is already running in this process (an @hydra.main app?), and one process runs one "
                        "Hydra app at a time: run sgns-train, or pass your composed config to sgns.train.train(cfg)")
    version.setbase(VERSION_BASE)  # as @hydra.main and Hydra's compose API set it
    folder = config_folder(config_dir) if config_dir is not None else None
    _register_plugin()
    search_path = create_config_search_path(CONFIG_DIR)
    if folder is not None:
        search_path.prepend(provider="command-line", path=f"file://{folder}", anchor=SearchPathQuery(provider="schema"))
    app = Hydra.create_main_hydra2(task_name=TASK_NAME, config_search_path=search_path)
    try:
        yield app
    finally:
        GlobalHydra.instance().clear()


def compose(overrides: Sequence[str] = (), *, config_dir: Optional[str | os.PathLike] = None,
            hydra_config: bool = False, check: bool = False) -> DictConfig:
    """The train config composed with `overrides` (as Hydra's compose API does: no sweeps; the `hydra` node only
    with `hydra_config`); with `check`, also checked as a command line is (`check_composed`). Every error is one
    line (SGNSError)."""
    from hydra.types import RunMode
    from omegaconf import open_dict

    check_recipes_found(overrides, config_dir)
    with hydra_app(config_dir) as app:
        try:
            cfg = app.compose_config(CONFIG_NAME, list(overrides), run_mode=RunMode.RUN, from_shell=False)
        except Exception as e:  # Hydra's override, search and schema errors
            raise config_error(e) from None
    if not hydra_config:
        with open_dict(cfg):
            del cfg[HYDRA_GROUP]
    if check:
        check_composed(cfg)
    return cfg


def check_composed(cfg: DictConfig) -> None:
    """Every value resolves (but trainer.run_dir, which only Hydra's runtime knows, and Hydra's own settings)
    and is in range; SGNSError naming the key otherwise."""
    try:
        check_resolvable(cfg, skip=("trainer.run_dir", HYDRA_GROUP))
        validate(cfg)
    except SGNSError:
        raise
    except Exception as e:  # a value of the wrong type met by a check
        raise config_error(e) from None


def run_once(task: Callable[[DictConfig], Any], overrides: Sequence[str], *,
             config_dir: Optional[str | os.PathLike] = None,
             check: Optional[Callable[[Mapping[str, Any]], None]] = None, report: bool = False) -> Tuple[bool, Any]:
    """Run `task` on the config of `overrides` (no sweep) as `@hydra.main` runs a job, composed once: compose,
    check (`check_composed`, then `check` with the job's part of the config: nothing is written before), then
    Hydra's callbacks and `run_job`, which makes the run dir (`hydra.run.dir`), writes `.hydra/` and sets up
    logging (the log file). Returns (True, what `task` returned); (False, None), having run nothing, when the
    config asks for a multirun (hydra.mode=MULTIRUN), which `run_with_hydra` then runs. An exception of `task`
    propagates, or with `report` (a command) is printed as Hydra prints it, with exit status 1."""
    from hydra._internal.callbacks import Callbacks
    from hydra._internal.utils import run_and_report
    from hydra.core.utils import run_job
    from hydra.types import HydraContext, RunMode
    from omegaconf import open_dict, read_write

    check_recipes_found(overrides, config_dir)
    with hydra_app(config_dir) as app:
        try:
            cfg = app.compose_config(CONFIG_NAME, list(overrides), run_mode=RunMode.RUN, with_log_configuration=True)
        except Exception as e:
            raise config_error(e) from None
        if cfg.hydra.mode == RunMode.MULTIRUN:
            return False, None
        if cfg.hydra.mode is None:  # what Hydra's `hydra.mode=RUN` override, added when no config sets it, does
            with read_write(cfg.hydra), open_dict(cfg.hydra):
                cfg.hydra.mode = RunMode.RUN
                cfg.hydra.overrides.hydra.append("hydra.mode=RUN")
        check_composed(cfg)
        if check is not None:
            check({key: cfg[key] for key in cfg if key != HYDRA_GROUP})

        def run() -> Any:  # Hydra.run after its compose
            callbacks = Callbacks(cfg)
            callbacks.on_run_start(config=cfg, config_name=CONFIG_NAME)
            job = run_job(hydra_context=HydraContext(config_loader=app.config_loader, callbacks=callbacks),
                          task_function=task, config=cfg, job_dir_key="hydra.run.dir", job_subdir_key=None,
                          configure_logging=True)
            callbacks.on_run_end(config=cfg, config_name=CONFIG_NAME, job_return=job)
            return job.return_value  # raises the job's exception, as Hydra.run does

        return True, (run_and_report(run) if report else run())


def run_with_hydra(task: Callable[[DictConfig], Any]) -> Any:
    """Run `task` through `@hydra.main` on the process's command line (sys.argv): sweeps (`-m`), torchrun and
    Hydra's flags (--cfg, --info, -cd, ...), with the checkout's configs on the search path."""
    import hydra

    _register_plugin()
    return hydra.main(version_base=VERSION_BASE, config_path=CONFIG_DIR, config_name=CONFIG_NAME)(task)()


def args_parser() -> Any:
    """Hydra's own command-line parser: the flags `sgns-train` takes (argparse)."""
    from hydra._internal.utils import get_args_parser

    return get_args_parser()


def help_text(overrides: Sequence[str], config_dir: Optional[str | os.PathLike] = None) -> str:
    """`sgns-train --help [overrides]`: Hydra's app help (its help template, the config groups, the composed config),
    without listing Hydra's own config groups unless the template shows them (Hydra's help lists every group
    twice, whatever the template: most of its time) and without importing torch."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    with hydra_app(config_dir) as app:
        try:
            cfg = app.compose_config(CONFIG_NAME, list(overrides), run_mode=RunMode.RUN, with_log_configuration=True)
        except Exception as e:
            raise config_error(e) from None
        HydraConfig.instance().set_config(cfg)
        template = str(cfg.hydra.help.template)
        groups = "".join(f"{group}: {', '.join(options)}\n" for group, options in option_names(config_dir).items())
        hydra_groups = ""
        if "HYDRA_CONFIG_GROUPS" in template:
            hydra_groups = app.format_config_groups(lambda g: g == HYDRA_GROUP or g.startswith(HYDRA_GROUP + "/"))
        return string.Template(template).substitute(
            FLAGS_HELP=app.format_args_help(args_parser()), HYDRA_CONFIG_GROUPS=hydra_groups, APP_CONFIG_GROUPS=groups,
            CONFIG=OmegaConf.to_yaml(app.get_sanitized_cfg(copy.deepcopy(cfg), "job"), resolve=False))
