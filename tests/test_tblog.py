"""What TensorBoard shows: curves only (no counts as scalar cards), against corpus words, evaluated periodically
by default; and when the loop evaluates (sgns.train.eval_schedule)."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest
from conftest import compose_cfg, zipf_text

from sgns.config import as_record
from sgns.evaluate import evaluate_analogies, evaluate_similarity
from sgns.train import train
from sgns.train.eval_schedule import AUTO_MAX_OVERHEAD, EvalSchedule
from sgns.train.tblog import NullTBLog, TBLog, eval_curves, evaluation_table

CURVE_METRICS = {"loss", "lr", "words_per_sec", "accuracy", "semantic_accuracy", "syntactic_accuracy", "spearman"}


def scalars(tb_dir: Path) -> Dict[str, List[Tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, TENSORS, EventAccumulator

    events = EventAccumulator(str(tb_dir), size_guidance={SCALARS: 0, TENSORS: 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def text_summaries(tb_dir: Path) -> Dict[str, str]:
    from tensorboard.backend.event_processing.event_accumulator import TENSORS, EventAccumulator

    events = EventAccumulator(str(tb_dir), size_guidance={TENSORS: 0})
    events.Reload()
    return {tag: events.Tensors(tag)[-1].tensor_proto.string_val[0].decode() for tag in events.Tags()["tensors"]}


def test_default_run_shows_accuracy_rising_against_corpus_words(tmp_path: Path) -> None:
    """The default config (planted corpus, smaller) evaluates during training with no eval option given."""
    run = tmp_path / "run"
    metrics = train(compose_cfg(run, ["corpus.synthetic.sentences=10000"]))
    curves = scalars(run / "tb")
    accuracy = curves["eval/planted_analogies/accuracy"]
    assert 2 <= len(accuracy) <= 15  # eval.points=15, fewer only where they would cost over 10% of training
    words = [x for x, _ in accuracy]
    assert words == sorted(set(words)) and words[-1] == metrics["train_words"]  # x: corpus words trained
    assert words[0] <= metrics["train_words"] / 15 * 1.05  # the first point at 1/15 of the run
    assert accuracy[-1][1] == pytest.approx(metrics["eval"]["planted_analogies"]["accuracy"])
    assert accuracy[-1][1] > accuracy[0][1] + 0.1  # learning shows (0.00 -> 0.39 when measured)
    assert curves["train/loss"][-1][0] == metrics["train_words"]
    assert metrics["eval_seconds"] > 0


def analogy_file(path: Path, words: List[str], sections: Dict[str, int], seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    lines = []
    for name, n in sections.items():
        lines.append(f": {name}")
        lines += [" ".join(rng.choice(words, 4, replace=False)) for _ in range(n)]
    lines.append("a malformed line")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_no_count_type_metric_becomes_a_scalar_card(tmp_path: Path) -> None:
    corpus = zipf_text(tmp_path / "tiny.txt")
    known = [f"w{i}" for i in range(60)]
    google = analogy_file(tmp_path / "google.txt", known + ["nosuchword"], {"capitals": 30, "gram1-plural": 30})
    semantic_only = analogy_file(tmp_path / "planted.txt", known, {"relation_0": 20})
    unknown = analogy_file(tmp_path / "unknown.txt", ["xa", "xb", "xc", "xd"], {"nowhere": 5})
    pairs = tmp_path / "sim.tsv"
    pairs.write_text("\n".join(f"w{i}\tw{i + 1}\t{i % 7}" for i in range(40)) + "\n")
    run = tmp_path / "run"
    metrics = train(compose_cfg(run, ["corpus=text", f"corpus.path={corpus}", "model.dim=16", "trainer.epochs=2",
                                      "data.min_count=2", "data.batch_size=512", "trainer.log_every=5",
                                      f"eval.analogies=[{google},{semantic_only},{unknown}]",
                                      f"eval.similarities=[{pairs}]", "eval.every_words=8000"]))
    curves = scalars(run / "tb")
    assert set(curves) == {"train/loss", "train/lr", "train/words_per_sec", "eval/google/accuracy",
                           "eval/google/semantic_accuracy", "eval/google/syntactic_accuracy",
                           "eval/planted/accuracy", "eval/sim/spearman"}
    assert all(tag.rsplit("/", 1)[1] in CURVE_METRICS for tag in curves)
    xs = [x for x, _ in curves["eval/google/accuracy"]]  # every 8000 words (the first batch past), and the end
    assert len(xs) == 5 and xs[-1] == 40000 and all(8000 * k <= x < 8000 * k + 1000 for k, x in enumerate(xs, 1))
    # the counts are in metrics.json and in the one text table
    google_metrics = metrics["eval"]["google"]
    assert google_metrics["malformed_lines"] == 1 and 0 < google_metrics["coverage"] < 1
    assert metrics["eval"]["unknown"]["seen"] == 0
    [table] = text_summaries(run / "tb").values()
    assert f"{google_metrics['seen']:,} of 60 questions" in table and "| unknown |" in table


def test_eval_curves_keep_scores_and_drop_counts(tmp_path: Path) -> None:
    words = [f"w{i}" for i in range(50)]
    vectors = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    both = evaluate_analogies(words, vectors, analogy_file(tmp_path / "a.txt", words, {"family": 9, "gram2-x": 9}))
    one = evaluate_analogies(words, vectors, analogy_file(tmp_path / "b.txt", words, {"family": 9}))
    none = evaluate_analogies(words, vectors, analogy_file(tmp_path / "c.txt", ["q", "r", "s", "t"], {"x": 3}))
    (tmp_path / "s.tsv").write_text("w1\tw2\t1.0\nw3\tw4\t2.0\nw5\tw9\t0.5\n")
    (tmp_path / "t.tsv").write_text("w1\tzz\t1.0\n")
    sim = evaluate_similarity(words, vectors, tmp_path / "s.tsv")
    empty_sim = evaluate_similarity(words, vectors, tmp_path / "t.tsv")
    curves = eval_curves({"both": both, "one": one, "none": none, "sim": sim, "empty": empty_sim})
    assert curves == {"eval/both/accuracy": both["accuracy"], "eval/both/semantic_accuracy": both["semantic_accuracy"],
                      "eval/both/syntactic_accuracy": both["syntactic_accuracy"], "eval/one/accuracy": one["accuracy"],
                      "eval/sim/spearman": sim["spearman"]}
    table = evaluation_table({"none": none, "empty": empty_sim})
    assert "| none | accuracy 0.0000 | 0 of 3 questions | 0.0% | 1 |" in table
    assert "| empty | Spearman n/a | 0 of 1 pairs | 0.0% | 0 |" in table


class FakeClock:
    """perf_counter for EvalSchedule.run: each evaluation takes `cost` seconds."""

    def __init__(self, cost: float) -> None:
        self.now, self.cost, self.started = 0.0, cost, False

    def __call__(self) -> float:
        if self.started:
            self.now += self.cost
        self.started = not self.started
        return self.now


def simulate(schedule: EvalSchedule, total: int, batch_words: int, words_per_sec: float,
             start: int = 0) -> List[int]:
    """Feed the schedule a run's batches; the word counts where it evaluated."""
    evaluated = []
    for words in range(start + batch_words, total + 1, batch_words):
        if schedule.due(words, words / words_per_sec):
            schedule.run(lambda: None)
            evaluated.append(words)
    return evaluated


def test_auto_cadence_is_evenly_spaced_with_the_final_evaluation_as_the_last_point() -> None:
    schedule = EvalSchedule(None, 15, 1_500_000, 0.0, True, clock=FakeClock(0.001))
    assert simulate(schedule, 1_500_000, 1000, 1e5) == [100_000 * k for k in range(1, 15)]
    resumed = EvalSchedule(None, 15, 1_500_000, 730_000.0, True, clock=FakeClock(0.001))
    assert simulate(resumed, 1_500_000, 1000, 1e5, start=730_000) == [100_000 * k for k in range(8, 15)]
    # big batches: the first batch past each grid point (250, 500, 750) evaluates
    assert simulate(EvalSchedule(None, 4, 1000, 0.0, True, clock=FakeClock(0.0)), 1000, 300, 1e5) == [300, 600, 900]


def test_auto_cadence_skips_points_that_would_cost_over_the_overhead_share() -> None:
    # 20 s of training, evaluations of 0.5 s: at most 10% -> about 4 of the 14 periodic points
    clock = FakeClock(0.5)
    schedule = EvalSchedule(None, 15, 1_500_000, 0.0, True, clock=clock)
    evaluated = simulate(schedule, 1_500_000, 1000, 75_000)
    assert 3 <= len(evaluated) <= 5 and evaluated[0] == 100_000
    assert schedule.seconds <= AUTO_MAX_OVERHEAD * 20 + 0.5
    # an explicit cadence is kept whatever it costs
    explicit = EvalSchedule(100_000, 15, 1_500_000, 0.0, True, clock=FakeClock(0.5))
    assert len(simulate(explicit, 1_500_000, 1000, 75_000)) == 14


@pytest.mark.parametrize("every,points,benchmarks", [(0, 15, True), (None, 15, False), (10_000, 15, False)])
def test_no_periodic_evaluation(every, points, benchmarks) -> None:
    assert simulate(EvalSchedule(every, points, 100_000, 0.0, benchmarks), 100_000, 500, 1e5) == []


def test_metrics_json_records_the_evaluation_time(tmp_path: Path) -> None:
    corpus = zipf_text(tmp_path / "tiny.txt")
    pairs = tmp_path / "sim.tsv"
    pairs.write_text("\n".join(f"w{i}\tw{i + 3}\t{i % 5}" for i in range(30)) + "\n")
    run = tmp_path / "run"
    train(compose_cfg(run, ["corpus=text", f"corpus.path={corpus}", "model.dim=8", "trainer.epochs=1",
                            "data.min_count=2", f"eval.similarities=[{pairs}]", "eval.every_words=0"]))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["eval_seconds"] > 0
    assert [x for x, _ in scalars(run / "tb")["eval/sim/spearman"]] == [20000]  # eval.every_words=0: the end only


def test_the_null_log_of_other_ranks_has_every_call_of_the_real_one_and_writes_nothing(tmp_path: Path) -> None:
    public = [name for name, _ in inspect.getmembers(TBLog, inspect.isfunction) if not name.startswith("_")]
    assert {"train_point", "evaluation", "flush", "close"} <= set(public)
    for name in public:  # an inherited method would reach for a SummaryWriter the null log does not have
        assert name in vars(NullTBLog), f"NullTBLog does not override TBLog.{name}"
        assert inspect.signature(getattr(NullTBLog, name)) == inspect.signature(getattr(TBLog, name))
    cfg = compose_cfg(tmp_path / "run")
    null = NullTBLog()
    null.train_point(10, 1.0, 0.025, 100.0)
    null.final_loss(10, 1.0)
    null.evaluation({}, 10)
    null.evaluation_summary({}, 10)
    null.projector(["a"], np.zeros((1, 2), dtype=np.float32), [1], 1, 10)
    null.hparams(as_record(cfg), 10)
    null.flush()
    null.close()
    assert not list(tmp_path.iterdir())
