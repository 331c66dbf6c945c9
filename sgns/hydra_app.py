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

import ast
import contextlib
import dataclasses
import difflib
import functools
import io
import os
import shutil
import tokenize
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from hydra.core.config_search_path import ConfigSearchPath, SearchPathQuery
from hydra.errors import CompactHydraException
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import DictConfig

from sgns import config as schema
from sgns.config import CONFIG_DIR, check_resolvable, config_error, setting_keys, validate
from sgns.errors import SGNSError

CONFIG_NAME = "train"  # sgns/conf/train.yaml, the primary config
TASK_NAME = "train"  # Hydra's job name: names the log file (train.log)
CHECKOUT = Path(CONFIG_DIR).parent.parent  # the checkout's root when sgns is imported from one
RECIPES_DIR = CHECKOUT / "configs"  # the recipes and the user's configs of a checkout
CHECKOUT_MARKER = "pyproject.toml"  # beside configs/ only in a checkout (site-packages holds no pyproject.toml)
HYDRA_GROUP = "hydra"  # Hydra's own config groups (hydra/launcher, ...) live under it
RECIPE_GROUP = "experiment"  # a group of recipes only, and also the key recording which one a run applied
VERSION_BASE = "1.3"  # Hydra's defaults of this version (no chdir into the run dir, ...)
# What a run dir holds once Hydra has started the job and the loop has locked it, before anything is trained
RUN_FILES = {".hydra", f"{TASK_NAME}.log", ".sgns.lock"}  # .sgns.lock: sgns.train.rundir.LOCK_NAME
KEY_WIDTH = 36  # help: `key=default` padded to this, the comment after it
NEAR = 0.1  # suggestions score within this of the best one
SUGGESTIONS = 3  # nearest keys or options named for a misspelled one


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


def _nearest(name: str, candidates: Sequence[str]) -> List[str]:
    """The candidates closest to a misspelled `name` (difflib's ratio, on the whole key or on its last part:
    `dimm` -> model.dim), those within NEAR of the best, at most SUGGESTIONS."""
    last = name.rsplit(".", 1)[-1]

    def score(candidate: str) -> float:
        whole = difflib.SequenceMatcher(None, name, candidate).ratio()
        return max(whole, difflib.SequenceMatcher(None, last, candidate.rsplit(".", 1)[-1]).ratio() - 0.05)

    scored = sorted(((score(c), c) for c in candidates), reverse=True)
    if not scored or scored[0][0] < 0.6:
        return []
    return [c for s, c in scored[:SUGGESTIONS] if s >= scored[0][0] - NEAR]


def _did_you_mean(found: List[str]) -> str:
    return f": did you mean {' or '.join(found)}?" if found else ""


def check_overrides(overrides: Sequence[str], config_dir: Optional[str | os.PathLike] = None) -> None:
    """SGNSError, before composing, for an override whose key is no setting of the schema (`model.dimm=10`, and
    `+model.dimm=10`, which Hydra would add and training would ignore), naming the nearest keys; and for a group
    option that does not exist (`corpus=txt`), listing every option. Hydra's own keys (hydra.*, hydra/...) are
    left to Hydra; an override that does not parse too (compose reports it)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except Exception:
        return
    keys = setting_keys()
    groups: Optional[Dict[str, List[str]]] = None
    for o in parsed:
        if o.is_hydra_override():
            continue
        key = o.key_or_group
        if groups is None:
            groups = option_names(config_dir)
        if key in groups and o.package is None:
            if o.is_delete():
                continue
            values = list(o.sweep_string_iterator()) if o.is_discrete_sweep() else [o.value()]
            for value in values:
                if isinstance(value, str) and value not in groups[key]:
                    options = groups[key]
                    raise SGNSError(f"{key}={value}: there is no {key} option {value!r}"
                                    f"{_did_you_mean([f'{key}={n}' for n in _nearest(value, options)])} "
                                    f"({key} options: {', '.join(options)})")
            continue
        if key in keys or any(key.startswith(k + ".") or k.startswith(key + ".") for k in keys):
            continue  # a setting, an item of a list setting, or a group of settings (`corpus.synthetic={...}`)
        near = _nearest(key, keys if "." in key else keys + list(groups))  # a group is named without a dot
        raise SGNSError(f"{key} is not a setting{_did_you_mean(near)} (sgns-train --help lists every key and "
                        f"group)")


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

    check_overrides(overrides, config_dir)
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

    check_overrides(overrides, config_dir)
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
        try:  # resolved once (`${now:...}`), so that the dir checked below is the one run_job makes
            run_dir = Path(str(cfg.hydra.run.dir))
        except Exception as e:
            raise config_error(e, "hydra.run.dir") from None
        check_run_dir_writable(run_dir)
        with read_write(cfg.hydra), open_dict(cfg.hydra):
            cfg.hydra.run.dir = str(run_dir)
        made_here = not run_dir.exists()
        if made_here:
            MADE_RUN_DIRS.add(run_dir.absolute())

        def run() -> Any:  # Hydra.run after its compose
            callbacks = Callbacks(cfg)
            callbacks.on_run_start(config=cfg, config_name=CONFIG_NAME)
            job = run_job(hydra_context=HydraContext(config_loader=app.config_loader, callbacks=callbacks),
                          task_function=task, config=cfg, job_dir_key="hydra.run.dir", job_subdir_key=None,
                          configure_logging=True)
            callbacks.on_run_end(config=cfg, config_name=CONFIG_NAME, job_return=job)
            return job.return_value  # raises the job's exception, as Hydra.run does

        try:
            return True, (run_and_report(run) if report else run())
        except KeyboardInterrupt:  # in start-up, before or after the loop's Stopped (discard_unstarted_run_dir)
            discard_unstarted_run_dir(run_dir)
            raise


def check_run_dir_writable(run_dir: str | os.PathLike) -> None:
    """SGNSError for a hydra.run.dir that cannot become a run directory (it, or a folder above it, is a file) or
    cannot be written (a read-only file system, no permission): said before Hydra makes it, not by its traceback."""
    run_dir = Path(run_dir).expanduser()
    nearest = run_dir  # the run dir itself, or the nearest folder above it that exists (where it would be made)
    while not nearest.exists() and nearest != nearest.parent:
        nearest = nearest.parent
    if not nearest.is_dir():
        raise SGNSError(f"cannot use hydra.run.dir={run_dir}; {nearest} is a file, not a folder: choose another "
                        f"hydra.run.dir")
    if not os.access(nearest, os.W_OK | os.X_OK):
        read_only = bool(os.statvfs(nearest).f_flag & os.ST_RDONLY)
        raise SGNSError(f"cannot write hydra.run.dir={run_dir}; {nearest} is "
                        f"{'on a read-only file system' if read_only else 'not writable: permission denied'}: "
                        f"choose another hydra.run.dir")


MADE_RUN_DIRS: set = set()  # the run dirs run_once made in this process (absolute paths)


def discard_unstarted_run_dir(run_dir: str | os.PathLike) -> bool:
    """Remove a run dir that run_once made in this process and that holds nothing but Hydra's files, the log and
    the run's lock (a run interrupted before it trained or wrote anything): it would only be a half run among the
    others. Never a dir that existed before. True if removed."""
    run_dir = Path(run_dir).absolute()
    try:
        if run_dir not in MADE_RUN_DIRS or not run_dir.is_dir() or not {p.name for p in run_dir.iterdir()} <= RUN_FILES:
            return False
        for logger, handler in _log_handlers():
            if Path(getattr(handler, "baseFilename", "/")).parent == run_dir:
                # detached, not only closed: a closed FileHandler reopens its file for the next record (torch logs
                # from an atexit handler when interrupted mid-import), and the dir is gone
                logger.removeHandler(handler)
                handler.close()
        shutil.rmtree(run_dir)
        return True
    except OSError:
        return False


def _log_handlers() -> List[Tuple[Any, Any]]:
    """(logger, handler) for each handler of the loggers Hydra's logging config sets up, and sgns's."""
    import logging

    loggers = (logging.getLogger(), logging.getLogger("sgns"), logging.getLogger("hydra"))
    return [(logger, handler) for logger in loggers for handler in list(logger.handlers)]


class FailedJob(CompactHydraException):
    """A sweep job that failed with an SGNSError, raised to Hydra's sweeper, which raises the first one at the
    sweep's end and prints a CompactHydraException as its message alone. Its message lists every job that failed
    in this process by then (jobs a launcher ran elsewhere: its own), one line each."""

    failed: List[str] = []  # "job N (overrides): error" of every job failed in this process

    def __init__(self, line: str) -> None:
        super().__init__(line)
        self.line = line
        FailedJob.failed.append(line)

    def __str__(self) -> str:
        lines = FailedJob.failed if self.line in FailedJob.failed else [self.line]
        return "\n".join(f"sgns-train: error: {line}" for line in lines)


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


COMMANDS = (  # the commands, in the order a run uses them: shown by sgns-train --help
    ("sgns-train [overrides]", "train word vectors; writes a run dir (outputs/DATE/TIME)"),
    ("sgns-eval PATH", "score a run, checkpoint or word2vec file on benchmarks, or show neighbours"),
    ("sgns-export CHECKPOINT OUT", "a checkpoint's (or run dir's) vectors as a word2vec file"),
    ("sgns-summarize DIR", "compare the runs of a folder or a sweep in one table"),
)
EXAMPLES = (
    "sgns-train corpus=text corpus.path=FILE model.dim=300 trainer.epochs=3",
    "sgns-train experiment=text8                 # a recipe of configs/experiment/",
    "sgns-train -m data.window=2,5,10            # a sweep: one run per value",
    "sgns-train --cfg job [overrides]            # print the config a run would use, without training",
)


@functools.cache
def schema_comments() -> Dict[str, str]:
    """Every schema field's one-line comment, by `Class.field` (`DataConfig.window`), read once from the source
    of sgns/config.py, where each comment stands beside its field (the one place a setting is described)."""
    source = Path(schema.__file__).read_text(encoding="utf-8")
    comment_at = {tok.start[0]: tok.string.lstrip("#").strip()
                  for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT}
    found: Dict[str, str] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    line = item.end_lineno or item.lineno
                    found[f"{node.name}.{item.target.id}"] = comment_at.get(line, "")
    return found


def schema_help() -> List[Tuple[str, str, List[Tuple[str, str, str]]]]:
    """(group, its comment, [(key, default, comment)]) for every group of the schema, in its order; a nested
    group's keys (corpus.synthetic.*) under its group."""
    comments = schema_comments()
    groups: List[Tuple[str, str, List[Tuple[str, str, str]]]] = []

    def default_of(f: dataclasses.Field) -> str:
        if f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            return "???"
        return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)

    def walk(node: type, prefix: str, rows: List[Tuple[str, str, str]]) -> None:
        hints = schema.field_types(node)
        for f in dataclasses.fields(node):
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], f"{prefix}{f.name}.", rows)
            else:
                rows.append((f"{prefix}{f.name}", default_of(f), comments.get(f"{node.__name__}.{f.name}", "")))

    top: List[Tuple[str, str, str]] = []
    hints = schema.field_types(schema.Config)
    for f in dataclasses.fields(schema.Config):
        if dataclasses.is_dataclass(hints[f.name]):
            rows: List[Tuple[str, str, str]] = []
            walk(hints[f.name], f"{f.name}.", rows)
            groups.append((f.name, comments.get(f"Config.{f.name}", ""), rows))
        else:
            top.append((f.name, default_of(f), comments.get(f"Config.{f.name}", "")))
    groups.append(("other", "top-level keys", top))
    return groups


def default_options() -> Dict[str, str]:
    """group -> the option train.yaml's defaults list picks (`corpus` -> synthetic)."""
    from omegaconf import OmegaConf

    chosen: Dict[str, str] = {}
    for entry in OmegaConf.load(Path(CONFIG_DIR) / f"{CONFIG_NAME}.yaml").defaults:
        if isinstance(entry, DictConfig):
            for group, option in entry.items():
                if isinstance(option, str):
                    chosen[str(group).split(" ")[-1]] = option
    return chosen


def _flags_help() -> str:
    rows = []
    for action in args_parser()._actions:
        if action.option_strings and action.dest != "help":
            rows.append(f"  {', '.join(action.option_strings):<24} {str(action.help or '').strip().splitlines()[0]}")
    return "\n".join(rows)


def help_text(overrides: Sequence[str], config_dir: Optional[str | os.PathLike] = None) -> str:
    """`sgns-train --help [overrides]`: the commands, how to pick group options (option_names), and every key of
    the schema with its default and its one-line comment, by group; with overrides, each key's value is the one
    they compose to. Made from the schema and the config folders, without importing torch."""
    values: Dict[str, str] = {}
    if overrides:  # the values these overrides give (a recipe's, an option's)
        from omegaconf import OmegaConf

        cfg = compose(overrides, config_dir=config_dir)
        flat = OmegaConf.to_container(cfg, resolve=False)
        for key in setting_keys():
            node: Any = flat
            for part in key.split("."):
                node = node[part]
            values[key] = "null" if node is None else str(node).lower() if isinstance(node, bool) else str(node)
    out = ["sgns-train: train word2vec skip-gram with negative sampling; each run writes its own directory.", "",
           "Commands:"]
    out += [f"  {command:<28} {what}" for command, what in COMMANDS]
    out += ["", "Usage: sgns-train [group=option ...] [group.key=value ...] [flags]", "Examples:"]
    out += [f"  {example}" for example in EXAMPLES]
    out += ["", "Groups: pick one option with group=option (e.g. corpus=text)"]
    chosen = default_options()
    for group, options in option_names(config_dir).items():
        out.append(f"  {group}: {', '.join(o + (' (default)' if chosen.get(group) == o else '') for o in options)}")
    title = "Settings (group.key=value" + (f"; values with {' '.join(overrides)}" if overrides else "; defaults") + ")"
    out += ["", title]
    for group, comment, rows in schema_help():
        out.append(f"{group}: {comment}")
        width = min(KEY_WIDTH, max(len(f"{key}={values.get(key, default)}") for key, default, _ in rows))
        for key, default, what in rows:
            out.append(f"  {f'{key}={values.get(key, default)}':<{width}}  {what}")
    out += ["", "Flags (Hydra's):", _flags_help(), "",
            "More: README.md and docs/ (sweeps: docs/sweeps.md, where configs are found: sgns/hydra_app.py)"]
    return "\n".join(out)
