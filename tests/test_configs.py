"""Every config group option, experiment, hparams_search and launcher config composes (sgns.hydra_app.compose, as
sgns-train and sgns.fit compose), packaged in sgns/conf or a recipe in the checkout's configs/, and none shadows
another."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

import sgns.config as config_module
from sgns import hydra_app
from sgns.config import CONFIG_DIR, validate

PACKAGED = Path(CONFIG_DIR)  # the options the code needs, in the wheel
RECIPES = Path(__file__).resolve().parent.parent / "configs"  # the checkout's recipes
# Plugin a config needs, by group: those configs are skipped (not failed) where the plugin is not installed.
PLUGIN_OF = {"hparams_search": "hydra_plugins.hydra_optuna_sweeper",
             "hydra/launcher/local_parallel": "hydra_plugins.hydra_joblib_launcher",
             "hydra/launcher/slurm": "hydra_plugins.hydra_submitit_launcher"}


def shipped(root: Path) -> List[str]:
    """`group/option` of every config in a folder of config groups, but the git-ignored configs/local/."""
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.yaml")
                  if p.parent != root and p.relative_to(root).parts[0] != "local")


def options(group: str) -> List[str]:
    return hydra_app.option_names(hydra_groups=True).get(group, [])


def all_group_options() -> List[Tuple[str, str]]:
    return [(g, o) for g, found in hydra_app.option_names().items() if g != "local" for o in found]


def config_file(group: str, option: str) -> Path:
    [path] = [p for p in (root / group / f"{option}.yaml" for root in (PACKAGED, RECIPES)) if p.is_file()]
    return path


def compose_train(overrides: List[str], hydra_config: bool = False) -> DictConfig:
    return hydra_app.compose(overrides, hydra_config=hydra_config)


def need_plugin(key: str) -> None:
    for prefix, module in PLUGIN_OF.items():
        if key.startswith(prefix):
            pytest.importorskip(module)


def test_recipes_live_in_configs_and_the_code_s_options_in_the_package() -> None:
    """Recipes (they need data the wheel does not carry, or a cluster) are in the checkout's configs/; what the
    code needs stays in sgns/conf, so an installed sgns-train composes without a checkout."""
    assert {"experiment/gutenberg_baseline", "experiment/text8", "hydra/launcher/local_parallel",
            "hydra/launcher/slurm"} <= set(shipped(RECIPES))
    packaged = set(shipped(PACKAGED))
    assert {"corpus/synthetic", "corpus/text", "corpus/hf", "data/default", "model/sgns", "optimizer/sgd",
            "trainer/default", "eval/default", "hparams_search/optuna_sgns"} <= packaged
    assert not any(name.startswith(("experiment/", "hydra/")) for name in packaged)
    assert hydra_app.checkout_configs() == RECIPES  # the tests run from the checkout: its recipes are found


def test_no_recipe_shadows_a_packaged_option() -> None:
    """The search path looks in sgns/conf first: a recipe of the same group and name would silently lose."""
    shadowing = set(shipped(RECIPES)) & set(shipped(PACKAGED))
    assert not shadowing, f"configs/ shadows packaged options: {sorted(shadowing)}"
    assert not (RECIPES / "train.yaml").exists(), "the primary config is packaged (sgns/conf/train.yaml)"


@pytest.mark.parametrize("name", shipped(PACKAGED) + shipped(RECIPES))
def test_every_shipped_config_composes(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    need_plugin(name)
    monkeypatch.setenv("SGNS_DATA_DIR", "data")  # gutenberg_baseline reads its files from there
    group, option = name.rsplit("/", 1)
    assert compose_train([f"{group}={option}"], hydra_config=True).hydra  # Hydra's node composes (a launcher's)
    cfg = compose_train([f"{group}={option}", "trainer.run_dir=run"])
    validate(cfg)
    assert OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves


def test_the_groups_have_the_expected_options() -> None:
    found = dict.fromkeys([g for g, _ in all_group_options()])
    assert {"corpus", "data", "model", "optimizer", "trainer", "eval", "experiment", "hparams_search"} <= set(found)
    assert {"gutenberg_baseline", "text8"} <= set(options("experiment"))
    assert options("hparams_search") == ["optuna_sgns"]
    assert {"local_parallel", "slurm"} <= set(options("hydra/launcher"))


@pytest.mark.parametrize(("group", "option"), all_group_options())
def test_every_group_option_composes_and_validates(group: str, option: str, monkeypatch: pytest.MonkeyPatch) -> None:
    need_plugin(f"{group}/{option}")
    monkeypatch.setenv("SGNS_DATA_DIR", "data")  # gutenberg_baseline reads its files from there
    cfg = compose_train([f"{group}={option}", "trainer.run_dir=run"])  # outside a Hydra job: no hydra:runtime
    validate(cfg)
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    compose_train([f"{group}={option}"], hydra_config=True)  # and so does the hydra node it may change
    if group == "experiment":
        assert cfg.experiment == option  # the run records which delta it got


def _leaves(node: Any, prefix: str = "") -> Dict[str, Any]:
    if isinstance(node, dict):
        out: Dict[str, Any] = {}
        for key, value in node.items():
            out.update(_leaves(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


@pytest.mark.parametrize("name", options("experiment"))
def test_experiments_hold_only_deltas(name: str) -> None:
    path = config_file("experiment", name)
    assert path.read_text().startswith("# @package _global_\n")
    raw = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    group_choices = [d for d in raw.pop("defaults", []) if isinstance(d, dict)]
    assert all(next(iter(d)).startswith("override /") for d in group_choices)
    base = compose_train([f"{next(iter(d)).removeprefix('override /')}={next(iter(d.values()))}"
                          for d in group_choices])
    base = OmegaConf.to_container(base, resolve=False)
    for key, value in _leaves(raw).items():
        if key == "experiment":
            continue
        default = OmegaConf.select(OmegaConf.create(base), key, throw_on_missing=False)
        assert value != default, f"{name}: {key}={value!r} restates the default; keep experiments to deltas"


@pytest.mark.parametrize(("group", "option"), [(g, o) for g, o in all_group_options()
                                               if g not in ("experiment", "hparams_search")])
def test_group_options_hold_only_what_differs_from_the_schema(group: str, option: str) -> None:
    path = config_file(group, option)
    raw = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    schema_class = typing.get_type_hints(config_module.Config)[group]
    if path.read_text().startswith("# @package _global_\n"):  # its keys from the root (model=subword sets data.*)
        schema_class = config_module.Config
    schema = OmegaConf.structured(schema_class)
    for key, value in _leaves(raw or {}).items():
        default = OmegaConf.select(schema, key, throw_on_missing=False)
        assert value != default, f"{group}/{option}.yaml: {key}={value!r} restates the default in sgns/config.py"


def test_every_setting_has_a_role_and_a_one_line_comment() -> None:
    source = Path(config_module.__file__).read_text().splitlines()
    schemas = [config_module.Config, config_module.SyntheticConfig,
               *[t for t in typing.get_type_hints(config_module.Config).values() if dataclasses.is_dataclass(t)]]
    for cls in schemas:
        for f in dataclasses.fields(cls):
            line = next(ln for ln in source if ln.strip().startswith(f"{f.name}: "))
            assert "  # " in line, f"{cls.__name__}.{f.name} has no comment on its line"
    roles = {key: config_module.setting_role(key) for key in ("data.window", "trainer.seed", "trainer.kernel",
                                                              "eval.analogies", "trainer.run_dir", "data.cache_dir")}
    assert roles == {"data.window": "result", "trainer.seed": "result", "trainer.kernel": "choice",
                     "eval.analogies": "choice", "trainer.run_dir": "bookkeeping", "data.cache_dir": "bookkeeping"}
    assert config_module.setting_role("data") is None and config_module.setting_role("data.nope") is None


def test_gutenberg_baseline_without_its_data_dir_fails_in_one_line_naming_it(monkeypatch: pytest.MonkeyPatch,
                                                                             tmp_path: Path) -> None:
    from conftest import compose_cfg

    from sgns.cli.train import check_command_line
    from sgns.errors import SGNSError
    from sgns.train import train

    monkeypatch.delenv("SGNS_DATA_DIR", raising=False)
    with pytest.raises(SGNSError, match="environment variable SGNS_DATA_DIR is not set, and corpus.path needs it"):
        check_command_line(["experiment=gutenberg_baseline"])
    with pytest.raises(SGNSError, match="SGNS_DATA_DIR is not set"):
        train(compose_cfg(tmp_path / "run", ["experiment=gutenberg_baseline"]))
    assert not (tmp_path / "run").exists()


def test_experiment_overrides_win_and_can_be_overridden() -> None:
    cfg = compose_train(["experiment=text8", "model.dim=64"])
    assert (cfg.corpus.kind, cfg.data.negatives, cfg.model.dim) == ("text", 25, 64)


def test_gutenberg_baseline_data_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SGNS_DATA_DIR", "/data/sgns")
    cfg = compose_train(["experiment=gutenberg_baseline"])
    assert cfg.corpus.path == "/data/sgns/corpora/gutenberg_dev.txt.gz"
    assert list(cfg.eval.analogies) == ["/data/sgns/eval/questions-words.txt"]
    assert [Path(p).name for p in cfg.eval.similarities] == ["wordsim353.tsv", "simlex999.txt"]


def test_optuna_search_space_names_real_keys_and_maximises_accuracy() -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    cfg = compose_train(["hparams_search=optuna_sgns"], hydra_config=True)
    sweeper = cfg.hydra.sweeper
    sweeper_class = get_class(sweeper._target_)  # the plugin's sweeper, resumable (hydra_plugins/sgns_optuna_resume)
    # by name: Hydra's plugin scan may load the plugin's module a second time, as a second class object
    assert [c.__name__ for c in sweeper_class.__mro__[:2]] == ["ResumableOptunaSweeper", "OptunaSweeper"]
    assert sweeper.direction == "maximize" and cfg.objective == "auto"  # auto: the first analogy accuracy
    params = dict(sweeper.params)
    assert set(params) == {"optimizer.lr", "data.negatives", "data.window", "data.subsample", "model.dim"}
    parser = OverridesParser.create()
    for key, space in params.items():
        assert OmegaConf.select(cfg, key) is not None, key
        assert parser.parse_override(f"{key}={space}").is_sweep_override(), key


@pytest.mark.parametrize("option", options("hydra/launcher"))
def test_launcher_configs_compose(option: str) -> None:
    need_plugin(f"hydra/launcher/{option}")
    cfg = compose_train([f"hydra/launcher={option}"], hydra_config=True)
    launcher = get_class(cfg.hydra.launcher._target_).__name__
    assert launcher == {"local_parallel": "JoblibLauncher", "slurm": "SlurmLauncher"}.get(option, launcher)
    if option == "local_parallel":
        assert cfg.hydra.launcher.n_jobs == 2
    elif option == "slurm":
        assert cfg.hydra.launcher.timeout_min == 240
        assert cfg.hydra.launcher.submitit_folder.endswith("/.submitit/%j")


def test_a_misspelled_launcher_key_fails_at_compose() -> None:
    need_plugin("hydra/launcher/slurm")
    with pytest.raises(Exception, match="partitoin"):
        compose_train(["hydra/launcher=slurm", "hydra.launcher.partitoin=gpu"], hydra_config=True)


def test_the_usual_learning_rates_are_the_option_defaults() -> None:
    """DivergenceGuard advises config.USUAL_LR: it must be what optimizer=sgd and optimizer=sparse_adam set."""
    for name, lr in config_module.USUAL_LR.items():
        assert compose_train([f"optimizer={name}"]).optimizer.lr == lr, name
