"""Real multiruns through the `sgns-train -m` command line on a tiny generated corpus, then `sgns-summarize`."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
from conftest import compose_cfg, zipf_text
from omegaconf import OmegaConf

from sgns.train.tblog import flat_hyperparameters, log_hparams

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Tiny and quick: one epoch of 20k words, small batches so the loss curve has several points.
TINY = ["trainer.epochs=1", "trainer.progress=false", "trainer.threads=1", "data.batch_size=512",
        "trainer.log_every=4"]


def cli(name: str, args: List[str], cwd: Path) -> subprocess.CompletedProcess:
    exe = shutil.which(name)
    command = [exe] if exe else [sys.executable, "-m", {"sgns-train": "sgns.train",
                                                        "sgns-summarize": "sgns.cli.summarize"}[name]]
    return subprocess.run([*command, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def similarity_file(path: Path, pairs: int = 40, vocab: int = 300, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    lines = [f"w{a}\tw{b}\t{rng.uniform(0, 10):.2f}" for a, b in rng.integers(0, vocab // 4, size=(pairs, 2))]
    path.write_text("\n".join(lines) + "\n")
    return path


def session_hparams(tb_dir: Path) -> Dict[str, object]:
    """The hyperparameters TensorBoard's HParams plugin reads from a run's event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata

    accumulator = EventAccumulator(str(tb_dir))
    accumulator.Reload()
    content = accumulator.PluginTagToContent(metadata.PLUGIN_NAME)
    assert metadata.EXPERIMENT_TAG not in content  # TensorBoard builds the experiment from all sessions
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    end = metadata.parse_session_end_info_plugin_data(content[metadata.SESSION_END_INFO_TAG])
    assert end.status == 1  # STATUS_SUCCESS
    values = {}
    for key, value in start.hparams.items():
        values[key] = value.number_value if value.HasField("number_value") else value.string_value
    return values


def session_scalars(tb_dir: Path, tag: str) -> List[tuple]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(tb_dir))
    accumulator.Reload()
    return [(e.step, e.value) for e in accumulator.Scalars(tag)]


def hparams_table(logdir: Path) -> Dict[str, Dict[str, float]]:
    """The rows of TensorBoard's HParams table for `tensorboard --logdir logdir`: the HParams plugin's own
    backend lists the session groups, each with its metric columns (tag -> value)."""
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import api_pb2, backend_context, list_session_groups

    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, str(logdir))
    backend = backend_context.Context(base_plugin.TBContext(logdir=str(logdir), multiplexer=multiplexer,
                                                            data_provider=provider))
    request = api_pb2.ListSessionGroupsRequest(start_index=0, slice_size=1000, allowed_statuses=[
        api_pb2.STATUS_UNKNOWN, api_pb2.STATUS_SUCCESS, api_pb2.STATUS_FAILURE, api_pb2.STATUS_RUNNING])
    response = list_session_groups.Handler(context.RequestContext(), backend, "", request).run()
    rows = {}
    for group in response.session_groups:
        assert len(group.sessions) == 1, group.name  # one row per run
        rows[group.sessions[0].name] = {m.name.tag: m.value for m in group.metric_values}
    return rows


def read_csv(path: Path) -> List[Dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def assert_png(path: Path) -> None:
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_MAGIC, path
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert pixels[..., :3].std() > 0.01  # something is drawn on it


def test_two_by_two_multirun_then_summarize(tmp_path: Path) -> None:
    corpus = zipf_text(tmp_path / "tiny.txt")
    similarities = similarity_file(tmp_path / "pairs.tsv")
    sweep = tmp_path / "sweep"
    result = cli("sgns-train", ["-m", "data.negatives=2,5", "model.dim=8,16", "corpus=text", f"corpus.path={corpus}",
                                f"eval.similarities=[{similarities}]", *TINY,
                                f"hydra.sweep.dir={sweep}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]

    from gensim.models import KeyedVectors

    combos = set()
    for job in range(4):
        run = sweep / str(job)
        for name in (".hydra/config.yaml", ".hydra/overrides.yaml", "train.log", "vectors.bin", "metrics.json"):
            assert (run / name).is_file(), run / name
        assert list((run / "tb").glob("events.out.tfevents.*")), run
        assert list((run / "checkpoints").glob("step-*.pt")), run
        cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
        negatives, dim = cfg.data.negatives, cfg.model.dim
        combos.add((negatives, dim))
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["status"] == "finished" and metrics["train_words"] == 20000
        # issue 27: objective=auto is a quality score whenever a benchmark was scored (the loss before)
        assert metrics["objective"] == metrics["eval"]["pairs"]["spearman"]
        assert KeyedVectors.load_word2vec_format(run / "vectors.bin", binary=True).vector_size == dim
        hparams = session_hparams(run / "tb")
        assert (hparams["data.negatives"], hparams["model.dim"]) == (negatives, dim)
        assert hparams["corpus.path"] == str(corpus) and hparams["trainer.seed"] == 1
        assert "trainer.run_dir" not in hparams and "data.cache_dir" not in hparams
    assert combos == {(2, 8), (2, 16), (5, 8), (5, 16)}

    # TensorBoard's HParams tab: one row per job, its final loss and Spearman as columns; the curves behind them
    # hold more than one evaluation (the default cadence)
    rows = hparams_table(sweep)
    assert sorted(rows) == [f"{job}/tb" for job in range(4)]
    for job in range(4):
        metrics = json.loads((sweep / str(job) / "metrics.json").read_text())
        row = rows[f"{job}/tb"]
        assert set(row) == {"train/loss", "train/lr", "train/words_per_sec", "eval/pairs/spearman"}
        assert row["train/loss"] == pytest.approx(metrics["loss"], rel=1e-6)
        assert row["eval/pairs/spearman"] == pytest.approx(metrics["eval"]["pairs"]["spearman"], rel=1e-6)
        curve = session_scalars(sweep / str(job) / "tb", "eval/pairs/spearman")
        assert len(curve) > 1 and curve[-1][0] == metrics["train_words"]

    summary = cli("sgns-summarize", [str(sweep)], tmp_path)
    assert summary.returncode == 0, summary.stderr
    assert "4 runs (4 finished); sorted by objective eval.pairs.spearman (higher is better)" in summary.stdout
    assert "warning" not in summary.stdout
    table = [line for line in summary.stdout.splitlines() if line.startswith("| ")]
    assert len(table) == 2 + 4 and "data.negatives" in table[0] and "model.dim" in table[0]
    assert "pairs.spearman" in table[0]

    rows = read_csv(sweep / "summary.csv")
    assert {(r["data.negatives"], r["model.dim"]) for r in rows} == {("2", "8"), ("2", "16"), ("5", "8"), ("5", "16")}
    assert all(r["status"] == "finished" and r["corpus.path"] == str(corpus) for r in rows)
    objectives = [float(r["objective"]) for r in rows]
    assert objectives == sorted(objectives, reverse=True)  # the Spearman: highest first
    for r in rows:
        metrics = json.loads((sweep / r["run"] / "metrics.json").read_text())
        assert float(r["objective"]) == metrics["eval"]["pairs"]["spearman"]
    assert (sweep / "summary.md").read_text().count("| finished |") == 4
    assert_png(sweep / "objective_vs_hparams.png")
    assert_png(sweep / "curves.png")


def test_one_failing_job_does_not_stop_the_others(tmp_path: Path) -> None:
    corpus = zipf_text(tmp_path / "tiny.txt")
    missing = tmp_path / "missing.txt"
    sweep = tmp_path / "sweep"
    result = cli("sgns-train", ["-m", f"corpus.path={missing},{corpus}", "corpus=text", *TINY,
                                f"hydra.sweep.dir={sweep}"], tmp_path)
    assert result.returncode != 0  # Hydra reports the failed job at the end...
    assert "missing.txt" in result.stderr
    assert json.loads((sweep / "1" / "metrics.json").read_text())["status"] == "finished"  # ...after the rest ran
    failed = json.loads((sweep / "0" / "metrics.json").read_text())
    assert failed["status"] == "failed" and "corpus file not found" in failed["error"]

    summary = cli("sgns-summarize", [str(sweep), "--no-plots"], tmp_path)
    assert summary.returncode == 0, summary.stderr
    assert "2 runs (1 finished, 1 failed)" in summary.stdout
    rows = read_csv(sweep / "summary.csv")
    assert [r["status"] for r in rows] == ["finished", "failed"]
    assert "corpus file not found" in rows[1]["error"]


def test_optuna_search_runs_trials_and_maximises_the_analogy_accuracy(tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    sweep = tmp_path / "search"
    small_synthetic = ["corpus.synthetic.sentences=3000", "corpus.synthetic.filler_words=200",
                       "corpus.synthetic.pairs=6", "corpus.synthetic.relations=2"]
    result = cli("sgns-train", ["-m", "hparams_search=optuna_sgns", "hydra.sweeper.n_trials=2",
                                "model.dim=choice(8,16)", *small_synthetic, *TINY,
                                f"hydra.sweep.dir={sweep}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Directions: ['maximize']" in result.stdout + result.stderr
    best = OmegaConf.load(sweep / "optimization_results.yaml")
    assert set(best.best_params) == {"optimizer.lr", "data.negatives", "data.window", "data.subsample", "model.dim"}
    accuracies = []
    for job in range(2):
        metrics = json.loads((sweep / str(job) / "metrics.json").read_text())
        accuracies.append(metrics["eval"]["planted_analogies"]["accuracy"])
        assert metrics["objective"] == accuracies[-1]
        trial = dict(o.split("=", 1) for o in OmegaConf.load(sweep / str(job) / ".hydra" / "overrides.yaml"))
        assert trial["model.dim"] in ("8", "16")  # the command line narrowed the search space
        assert 0.005 <= float(trial["optimizer.lr"]) <= 0.1 and 2 <= int(trial["data.negatives"]) <= 20
    assert best.best_value == max(accuracies)  # Optuna was told to maximise

    summary = cli("sgns-summarize", [str(sweep), "--no-plots"], tmp_path)
    assert "sorted by objective eval.planted_analogies.accuracy (higher is better)" in summary.stdout


def test_joblib_launcher_runs_jobs_in_parallel_processes(tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    corpus = zipf_text(tmp_path / "tiny.txt", words=6000)
    sweep = tmp_path / "sweep"
    result = cli("sgns-train", ["-m", "hydra/launcher=local_parallel", "data.negatives=2,3", "corpus=text",
                                f"corpus.path={corpus}", *TINY, f"hydra.sweep.dir={sweep}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in result.stdout + result.stderr
    for job in range(2):
        assert json.loads((sweep / str(job) / "metrics.json").read_text())["status"] == "finished"


def test_hparams_are_the_resolved_config_minus_bookkeeping(tmp_path: Path) -> None:
    cfg = compose_cfg(tmp_path / "run", ["eval.similarities=[a.tsv,b.tsv]", "data.max_vocab_size=null"])
    flat = flat_hyperparameters(cfg)
    assert flat["data.negatives"] == 5 and flat["optimizer.lr"] == 0.025 and flat["model.dim"] == 100
    assert flat["eval.similarities"] == "a.tsv,b.tsv" and flat["corpus.lowercase"] == "false"
    assert "data.max_vocab_size" not in flat  # None: nothing to compare
    assert "corpus.synthetic.sentences" in flat  # the synthetic corpus's settings are its hyperparameters
    assert not {"trainer.run_dir", "data.cache_dir", "trainer.progress", "trainer.resume"} & set(flat)
    text = flat_hyperparameters(compose_cfg(tmp_path / "run", ["corpus=text", "corpus.path=x.txt"]))
    assert not any(k.startswith("corpus.synthetic") for k in text)

    assert "corpus.split" not in text and "corpus.column" not in text  # Hugging Face settings: corpus=hf only
    assert flat_hyperparameters(compose_cfg(tmp_path / "run", ["corpus=hf", "corpus.name=x"]))["corpus.split"]

    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path / "tb"))
    log_hparams(writer, cfg, step=7)
    writer.close()
    assert session_hparams(tmp_path / "tb")["model.dim"] == 100
