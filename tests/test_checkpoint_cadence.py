"""When a run writes checkpoints before its end: by default on this process's clock, or every N corpus words;
and the step size (what trainer.checkpoint_every and log_every count) shown in the resolved line and resolved.yaml."""

from __future__ import annotations

from pathlib import Path

import yaml
from conftest import compose_cfg, zipf_text

from sgns.config import TrainerConfig
from sgns.train import train
from sgns.train.checkpoint import list_checkpoints, load_checkpoint

# 40k words in 1000-word spans over 2 epochs: 80 steps, long enough for a clock of a few milliseconds
SMALL = ["model.dim=8", "trainer.epochs=2", "data.min_count=1", "data.span_tokens=1000", "trainer.kernel=numba",
         "trainer.device=cpu", "trainer.threads=1", "eval.every_words=0", "trainer.keep_checkpoints=1000"]


def steps_written(run: Path) -> list[int]:
    return [load_checkpoint(p)["progress"]["step"] for p in list_checkpoints(run)]


def test_checkpoints_are_written_by_default_on_the_clock(tmp_path: Path):
    assert TrainerConfig().checkpoint_minutes == 10  # the default: every 10 minutes, without asking
    corpus = zipf_text(tmp_path / "corpus.txt", words=40000)
    run = tmp_path / "run"
    metrics = train(compose_cfg(run, ["corpus=text", f"corpus.path={corpus}", *SMALL,
                                      "trainer.checkpoint_minutes=0.0001"]))
    steps = steps_written(run)
    assert steps[-1] == metrics["steps"] and len(steps) > 2, steps  # the end's and several during the run


def test_no_checkpoint_before_the_end_when_every_cadence_is_off(tmp_path: Path):
    corpus = zipf_text(tmp_path / "corpus.txt", words=40000)
    run = tmp_path / "run"
    metrics = train(compose_cfg(run, ["corpus=text", f"corpus.path={corpus}", *SMALL,
                                      "trainer.checkpoint_minutes=0"]))
    assert steps_written(run) == [metrics["steps"]]


def test_checkpoints_every_n_words(tmp_path: Path):
    corpus = zipf_text(tmp_path / "corpus.txt", words=40000)
    run = tmp_path / "run"
    metrics = train(compose_cfg(run, ["corpus=text", f"corpus.path={corpus}", *SMALL, "trainer.checkpoint_minutes=0",
                                      "trainer.checkpoint_every_words=10000"]))
    words = [load_checkpoint(p)["progress"]["words_done"] for p in list_checkpoints(run)]
    # every 10k of the 80k words trained (a span ends at or just past each mark), then the end
    assert len(words) == 8 and words[-1] == metrics["train_words"], words
    assert all(10000 * (i + 1) <= w < 10000 * (i + 1) + 1000 for i, w in enumerate(words[:-1])), words


def test_the_step_size_is_in_the_resolved_line_and_resolved_yaml(tmp_path: Path, caplog):
    corpus = zipf_text(tmp_path / "corpus.txt", words=5000)
    for kernel, step in (("numba", {"size": 1000, "unit": "words"}), ("torch", {"size": 256, "unit": "pairs"})):
        run = tmp_path / kernel
        with caplog.at_level("INFO", logger="sgns"):
            train(compose_cfg(run, ["corpus=text", f"corpus.path={corpus}", *SMALL, f"trainer.kernel={kernel}",
                                    "data.batch_size=256"]))
        assert yaml.safe_load((run / "resolved.yaml").read_text())["step"] == step
        resolved = [r.getMessage() for r in caplog.records if r.getMessage().startswith("resolved:")][-1]
        assert resolved.endswith(f"step={step['size']:,} {step['unit']}"), resolved
