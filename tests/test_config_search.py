"""Where configs are found (sgns/hydra_app.py): the packaged options from anywhere, the checkout's recipes
(configs/) whatever the working directory, for one run, a sweep and sgns.fit, and a user's folder (-cd DIR,
fit(config_dir=DIR))."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

import pytest
from conftest import zipf_text
from omegaconf import OmegaConf

import sgns
from sgns.errors import SGNSError

REPO = Path(__file__).resolve().parents[1]
TINY = ["model.dim=8", "trainer.epochs=1", "trainer.progress=false", "trainer.threads=1"]
SEARCHED = [("main", str(REPO / "sgns" / "conf")), ("sgns-checkout", str(REPO / "configs"))]  # packaged, recipes
MINE = "# @package _global_\nexperiment: mine\ndata:\n  window: 3\n  negatives: 2\n"  # a user's experiment


def train(args: List[str], cwd: Path, pythonpath: Optional[Path] = None) -> subprocess.CompletedProcess:
    """`python -m sgns.train ARGS` in `cwd`, importing sgns from `pythonpath` (default: this checkout)."""
    env = {**os.environ, "PYTHONPATH": str(pythonpath or REPO)}
    return subprocess.run([sys.executable, "-m", "sgns.train", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=env)


def config_sources(run_dir: Path) -> List[tuple]:
    """(provider, path) of the folders Hydra searched for a run's configs, from its .hydra/hydra.yaml."""
    hydra_cfg = OmegaConf.load(run_dir / ".hydra" / "hydra.yaml").hydra
    return [(s.provider, s.path) for s in hydra_cfg.runtime.config_sources if s.schema == "file"]


def user_folder(root: Path) -> Path:
    (root / "experiment").mkdir(parents=True)
    (root / "experiment" / "mine.yaml").write_text(MINE)
    return root


def test_a_copy_of_the_package_alone_composes_but_has_no_recipes(tmp_path: Path) -> None:
    """An installed sgns (the package without a checkout around it) composes its packaged options from any
    directory; naming a recipe then fails in one line (Hydra alone would take experiment=NAME for the value of
    the key `experiment` and train the default config)."""
    site = tmp_path / "site"
    shutil.copytree(REPO / "sgns", site / "sgns", ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc"))
    work = tmp_path / "work"
    work.mkdir()
    shown = train(["--cfg", "job", "model.dim=7"], work, site)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert OmegaConf.create(shown.stdout).model.dim == 7
    missing = train(["experiment=text8", f"hydra.run.dir={work / 'run'}"], work, site)
    assert missing.returncode == 2, missing.stderr[-2000:]
    assert missing.stderr.strip().splitlines() == [
        "sgns-train: error: experiment=text8: no experiments are found here: they are recipes in a checkout's "
        "configs/experiment/ (run sgns from a checkout) or in your own folder (-cd DIR, config_dir=DIR)"]
    assert not (work / "run").exists()


def test_recipes_are_found_from_the_checkout_whatever_the_working_directory(tmp_path: Path) -> None:
    corpus = zipf_text(tmp_path / "corpus.txt", words=3000)
    work = tmp_path / "elsewhere"  # outside the checkout
    work.mkdir()
    shown = train(["--cfg", "job", "experiment=text8"], work)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert OmegaConf.create(shown.stdout).data.negatives == 25
    run = train(["experiment=text8", f"corpus.path={corpus}", *TINY, "hydra.run.dir=run"], work)
    assert run.returncode == 0, run.stderr[-2000:]
    cfg = OmegaConf.load(work / "run" / ".hydra" / "config.yaml")
    assert (cfg.experiment, cfg.data.negatives, cfg.model.dim) == ("text8", 25, 8)
    assert (work / "run" / "vectors.bin").is_file()
    assert config_sources(work / "run") == SEARCHED


def test_a_sweep_finds_the_recipes_and_the_user_folder(tmp_path: Path) -> None:
    corpus = zipf_text(tmp_path / "corpus.txt", words=3000)
    mine = user_folder(tmp_path / "mine")
    work = tmp_path / "elsewhere"
    work.mkdir()
    swept = train(["-cd", str(mine), "-m", "experiment=text8,mine", "corpus=text", f"corpus.path={corpus}", *TINY,
                   "hydra.sweep.dir=sweep"], work)
    assert swept.returncode == 0, swept.stderr[-2000:]
    jobs = [OmegaConf.load(work / "sweep" / str(n) / ".hydra" / "config.yaml") for n in (0, 1)]
    assert [(c.experiment, c.data.negatives) for c in jobs] == [("text8", 25), ("mine", 2)]
    assert config_sources(work / "sweep" / "1") == [*SEARCHED, ("command-line", str(mine))]


def test_cd_adds_a_folder_to_a_single_run(tmp_path: Path) -> None:
    mine = user_folder(tmp_path / "mine")
    run = train(["-cd", str(mine), "experiment=mine", "corpus.synthetic.sentences=300", *TINY,
                 f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    cfg = OmegaConf.load(tmp_path / "run" / ".hydra" / "config.yaml")
    assert (cfg.experiment, cfg.data.window) == ("mine", 3)
    assert config_sources(tmp_path / "run")[-1] == ("command-line", str(mine))
    missing = train(["-cd", str(tmp_path / "nope"), "experiment=mine", f"hydra.run.dir={tmp_path / 'x'}"], tmp_path)
    assert missing.returncode == 2 and missing.stderr.strip().splitlines() == [
        f"sgns-train: error: config directory {tmp_path / 'nope'} not found: give a folder of config groups "
        f"(e.g. DIR/experiment/NAME.yaml)"], missing.stderr[-2000:]
    assert not (tmp_path / "x").exists()


def test_fit_finds_the_recipes_and_a_config_dir(tmp_path: Path) -> None:
    corpus = zipf_text(tmp_path / "corpus.txt", words=3000)
    settings = {"dim": 8, "epochs": 1, "threads": 1, "progress": False}
    run = sgns.fit(corpus, tmp_path / "text8", experiment="text8", **settings)
    cfg = OmegaConf.load(run.dir / ".hydra" / "config.yaml")
    assert (cfg.experiment, cfg.data.negatives, cfg.model.dim) == ("text8", 25, 8)
    assert ("sgns-checkout", str(REPO / "configs")) in config_sources(run.dir)  # Hydra's own hydra.yaml
    mine = user_folder(tmp_path / "mine")
    run = sgns.fit(corpus, tmp_path / "mine-run", config_dir=mine, experiment="mine", **settings)
    assert OmegaConf.load(run.dir / ".hydra" / "config.yaml").data.window == 3
    assert "done:" in (run.dir / "train.log").read_text()
    with pytest.raises(SGNSError, match="config directory .*nope not found"):
        sgns.fit(corpus, tmp_path / "x", config_dir=tmp_path / "nope", **settings)
    assert not (tmp_path / "x").exists()


def test_a_local_default_applies_to_every_run_and_configs_local_is_ignored_by_git(tmp_path: Path) -> None:
    """`local/default.yaml` (the checkout's configs/local/, git-ignored) is an optional default of train.yaml:
    applied where one is found, here in a user's folder, nothing where none is."""
    from sgns.hydra_app import compose

    if (REPO / "configs" / "local" / "default.yaml").is_file():
        pytest.skip("this checkout has its own configs/local/default.yaml, which would win")
    ignored = subprocess.run(["git", "check-ignore", "-q", "configs/local/default.yaml"], cwd=REPO)
    assert ignored.returncode == 0, "configs/local/ must be git-ignored"
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "default.yaml").write_text("# @package _global_\ntrainer:\n  seed: 7\n")
    assert compose(config_dir=tmp_path).trainer.seed == 7
    assert compose().trainer.seed == 1
