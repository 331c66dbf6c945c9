"""The standard benchmarks by name (sgns/benchmarks): the registry and its shipped files, names and suites in the
config, the English suite scored by default on real text (skipped where the corpus does not cover it), every
score with its coverage (metrics.json, TensorBoard, sgns-eval, WordVectors.evaluate, sgns-summarize), the same
numbers as gensim's evaluators on the shipped files, and objective=auto on quality."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import List, Tuple

import numpy as np
import pytest
import torch
from conftest import compose_cfg, zipf_text

from sgns.benchmarks import BENCHMARKS, GOOGLE_SECTIONS, SUITES, expand
from sgns.cli.eval import main as eval_main
from sgns.cli.summarize import describe, find_runs, summarize, table_rows
from sgns.config import EvalConfig
from sgns.errors import SGNSError
from sgns.evaluate import EvalSuite, load_analogies, load_pairs, prepare_analogies, score_analogies
from sgns.train import train
from sgns.train.metrics import LOSS_WARNING, objective, objective_key
from sgns.vectors import WordVectors, save_word2vec

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = [name for name, b in BENCHMARKS.items() if b.file]


def test_the_shipped_files_are_the_ones_the_registry_and_the_docs_record() -> None:
    page = (ROOT / "docs" / "evaluation.md").read_text()
    assert SHIPPED == ["google", "ws353", "simlex999"] and list(SUITES["english"]) == SHIPPED
    for b in BENCHMARKS.values():
        assert b.citation and b.licence and b.size and b.source, b.name
        assert f"`{b.name}`" in page, f"docs/evaluation.md does not describe {b.name}"
        if b.file:
            assert hashlib.sha256(b.path.read_bytes()).hexdigest() == b.sha256, b.name
            assert b.sha256 in page, f"docs/evaluation.md does not record {b.name}'s sha256"
    sections, malformed = load_analogies(BENCHMARKS["google"].path)
    assert tuple(name for name, _ in sections) == GOOGLE_SECTIONS and malformed == 0
    assert sum(len(qs) for _, qs in sections) == 19544
    assert [len(load_pairs(BENCHMARKS[n].path)[0]) for n in ("ws353", "simlex999")] == [353, 999]
    package_data = (ROOT / "pyproject.toml").read_text()
    assert all(f"benchmarks/*{Path(BENCHMARKS[n].file).suffix}" in package_data for n in SHIPPED)


def test_names_suites_and_paths_expand_in_order(tmp_path: Path) -> None:
    pairs = tmp_path / "mine.tsv"
    pairs.write_text("# a comment\ncat\tdog\t7.0\n")
    questions = tmp_path / "questions"
    questions.write_text(": s\na b c d\n")
    entries = expand(["english", str(pairs), str(questions), "google"])
    assert [(e.name, e.kind, e.by_name) for e in entries] == [
        ("google", "analogy", True), ("ws353", "similarity", True), ("simlex999", "similarity", True),
        ("mine", "similarity", False), ("questions", "analogy", False), ("google", "analogy", True)]
    assert entries[0].path == str(BENCHMARKS["google"].path)


def test_an_unknown_or_unshipped_name_is_one_clear_line() -> None:
    with pytest.raises(SGNSError, match=r"^unknown benchmark 'gogle': use a name \(english, google, ws353, "
                                        r"simlex999\) or the path of a benchmark file$"):
        expand(["gogle"])
    with pytest.raises(SGNSError, match=r"^benchmark 'men' \(MEN Test Collection\) is not shipped with sgns .*get "
                                        r"it from https://staff.fnwi.uva.nl/e.bruni/MEN .*eval.similarities=\[FILE\]"):
        expand(["men"])
    with pytest.raises(SGNSError, match="benchmark file not found: no/such.tsv"):
        expand(["no/such.tsv"])


@pytest.mark.parametrize("overrides, benchmarks, enabled", [
    ([], None, True),
    (["eval.benchmarks=[google,ws353,simlex999]"], ["google", "ws353", "simlex999"], True),
    (["eval=english"], ["english"], True),
    (["eval=none"], None, False),
])
def test_the_config_names_benchmarks_and_suites(tmp_path: Path, overrides: List[str], benchmarks, enabled) -> None:
    cfg = compose_cfg(tmp_path, overrides)
    assert (cfg.eval.benchmarks if cfg.eval.benchmarks is None else list(cfg.eval.benchmarks)) == benchmarks
    assert cfg.eval.enabled is enabled


# ------------------------------------------------------------------------- the suite scored while training


def english_text(path: Path, copies: int = 2) -> Path:
    """A small text that covers the Google analogies (each question a line, lowercased) and little of the
    similarity sets: their pairs are not in it, only the words the two files share."""
    questions = [line.lower() for line in BENCHMARKS["google"].path.read_text().splitlines()
                 if not line.startswith(":")]
    path.write_text("\n".join(questions * copies) + "\n")
    return path


def test_a_text_run_scores_the_english_suite_by_default_and_skips_what_its_vocabulary_misses(tmp_path: Path) -> None:
    run = tmp_path / "run"
    corpus = english_text(tmp_path / "english.txt")
    metrics = train(compose_cfg(run, ["corpus=text", f"corpus.path={corpus}", "data.min_count=1", "model.dim=16",
                                      "trainer.epochs=1"]))
    google = metrics["eval"]["google"]
    assert list(metrics["eval"]) == ["google"] and google["coverage"] == 1.0 and google["seen"] == 19544
    assert set(google["sections"]) == set(GOOGLE_SECTIONS) and "semantic_accuracy" in google
    skipped = metrics["eval_skipped"]
    assert set(skipped) == {"ws353", "simlex999"} and all(0 <= c < 0.1 for c in skipped.values())
    from test_tblog import scalars

    curves = scalars(run / "tb")
    assert [x for x, _ in curves["eval/google/accuracy"]][-1] == metrics["train_words"]
    assert "eval/google/semantic_accuracy" in curves and not any("ws353" in tag for tag in curves)
    assert metrics["objective"] == google["accuracy"]


def test_a_skipped_benchmark_says_its_coverage_in_one_log_line(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                                               ) -> None:
    corpus = zipf_text(tmp_path / "tiny.txt")  # w0 w1 ...: no English word at all
    with caplog.at_level(logging.INFO, logger="sgns"):
        metrics = train(compose_cfg(tmp_path / "run", ["corpus=text", f"corpus.path={corpus}", "trainer.epochs=1",
                                                       "model.dim=8"]))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("eval: ")]
    assert lines == [f"eval: {name} skipped: 0.0% of its {unit} are in the vocabulary, under eval.min_coverage=0.1 "
                     "(a non-English or differently normalised corpus?)"
                     for name, unit in (("google", "questions"), ("ws353", "pairs"), ("simlex999", "pairs"))]
    assert metrics["eval"] == {} and metrics["eval_skipped"] == {"google": 0.0, "ws353": 0.0, "simlex999": 0.0}
    # nothing scored: the objective is the loss, and the log says a sweep would rank by it
    assert metrics["objective"] == metrics["loss"]
    assert LOSS_WARNING in [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_eval_none_scores_nothing_not_even_the_planted_set(tmp_path: Path) -> None:
    metrics = train(compose_cfg(tmp_path / "run", ["eval=none", "corpus.synthetic.sentences=2000",
                                                   "trainer.epochs=1", "model.dim=8"]))
    assert metrics["eval"] == {} and "eval_skipped" not in metrics


def test_the_synthetic_corpus_scores_its_planted_set_first_and_names_on_request(tmp_path: Path) -> None:
    metrics = train(compose_cfg(tmp_path / "run", ["eval.benchmarks=[ws353]", "corpus.synthetic.sentences=2000",
                                                   "trainer.epochs=1", "model.dim=8", "eval.min_coverage=0"]))
    assert list(metrics["eval"]) == ["planted_analogies", "ws353"]
    assert metrics["eval"]["ws353"]["coverage"] == 0.0


# ------------------------------------------------------------------------- a point during training


def test_a_point_scores_a_fixed_sample_of_the_same_questions(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = BENCHMARKS["google"].path
    words = sorted({w.lower() for line in path.read_text().splitlines() if not line.startswith(":")
                    for w in line.split()})
    vectors = rng.normal(size=(len(words), 8)).astype(np.float32)
    prepared = prepare_analogies(words, path, 30000, sample=500)
    again = prepare_analogies(words, path, 30000, sample=500)
    assert len(prepared.sample) == 500 and np.array_equal(prepared.sample, again.sample)
    point = score_analogies(prepared, vectors, sampled=True)
    whole = score_analogies(prepared, vectors)
    assert point["seen"] == point["sampled"] == 500 and whole["seen"] == 19544 and "sampled" not in whole
    assert point["coverage"] == whole["coverage"] == 1.0
    # the sample's questions are scored as the whole file scores them
    only = prepare_analogies(words, path, 30000)
    only.ids, only.owner = only.ids[torch.from_numpy(prepared.sample)], only.owner[prepared.sample]
    assert score_analogies(only, vectors)["correct"] == point["correct"]


def test_the_default_run_keeps_at_least_ten_points(tmp_path: Path) -> None:
    """eval.points=15 while training ~3 s: each point of the planted set must cost under 1/150 of the run."""
    run = tmp_path / "run"
    metrics = train(compose_cfg(run, []))
    from test_tblog import scalars

    points = scalars(run / "tb")["eval/planted_analogies/accuracy"]
    assert len(points) >= 10, (len(points), metrics["eval_seconds"], metrics["train_seconds"])
    assert points[-1][1] == pytest.approx(metrics["eval"]["planted_analogies"]["accuracy"])


# ------------------------------------------------------------------------- the same numbers as gensim


@pytest.fixture(scope="module")
def benchmark_vectors(tmp_path_factory: pytest.TempPathFactory) -> Tuple[Path, WordVectors]:
    """gensim vectors trained on the shipped files' own lines (questions, pairs), so every benchmark is covered
    and scores are far from 0 and 1; written as a word2vec file, so both sides read the same values."""
    gensim_models = pytest.importorskip("gensim.models")
    sentences = []
    for name in SHIPPED:
        for line in BENCHMARKS[name].path.read_text().splitlines():
            if line and not line.startswith((":", "#")):
                sentences.append([w for w in line.split() if not w.replace(".", "").isdigit()])
    model = gensim_models.Word2Vec(sentences, vector_size=24, window=3, min_count=1, sg=1, negative=5, epochs=3,
                                   seed=1, workers=1)
    path = tmp_path_factory.mktemp("vec") / "vectors.bin"
    save_word2vec(path, list(model.wv.index_to_key), model.wv.vectors, binary=True)
    from sgns.load import load_vectors

    return path, load_vectors(path)


def test_the_english_suite_equals_gensims_evaluators(benchmark_vectors) -> None:
    gensim_models = pytest.importorskip("gensim.models")
    path, wv = benchmark_vectors
    kv = gensim_models.KeyedVectors.load_word2vec_format(str(path), binary=True)
    ours = wv.evaluate()  # no argument: the English suite
    assert list(ours) == SHIPPED
    score, sections = kv.evaluate_word_analogies(str(BENCHMARKS["google"].path), restrict_vocab=30000)
    google = ours["google"]
    assert google["correct"] > 100 and google["accuracy"] == pytest.approx(score, abs=1e-9)  # 206 when written
    by_name = {s["section"]: s for s in sections}
    for name, s in google["sections"].items():
        assert s["correct"] == len(by_name[name]["correct"]), name
        assert s["seen"] == len(by_name[name]["correct"]) + len(by_name[name]["incorrect"]), name
    for part, gensim_name in (("semantic", "Semantic"), ("syntactic", "Syntactic")):
        if gensim_name in by_name:
            s = by_name[gensim_name]
            assert google[f"{part}_correct"] == len(s["correct"])
            assert google[f"{part}_seen"] == len(s["correct"]) + len(s["incorrect"])
    for name in ("ws353", "simlex999"):
        pearson, spearman, oov = kv.evaluate_word_pairs(str(BENCHMARKS[name].path))
        assert ours[name]["spearman"] == pytest.approx(spearman[0], abs=1e-4), name  # float32 cosines
        assert ours[name]["pearson"] == pytest.approx(pearson[0], abs=1e-4), name
        assert 100 * (1 - ours[name]["coverage"]) == pytest.approx(oov, abs=1e-9), name


def test_sgns_eval_with_no_benchmark_prints_one_suite_table(benchmark_vectors, capsys: pytest.CaptureFixture) -> None:
    path, wv = benchmark_vectors
    eval_main([str(path)])
    out = capsys.readouterr().out.splitlines()
    report = json.loads(out[-1])
    expected = wv.evaluate()
    assert list(report["eval"]) == SHIPPED
    start = out.index(next(line for line in out if line.split()[:3] == ["benchmark", "score", "coverage"]))
    table = out[start : start + 4]
    assert "section" not in "\n".join(out[:-1])  # the one table, no per-section detail
    assert out[start + 4 :][:2] == ["", "nearest neighbours (cosine, top 8):"] and report["neighbours"]
    google = expected["google"]
    assert table[1].split()[:3] == ["google", "accuracy", f"{google['accuracy']:.4f}"]
    assert f"{100 * google['coverage']:.2f}% ({google['seen']:,} of 19,544 questions)" in table[1]
    for row, name in zip(table[2:], ("ws353", "simlex999"), strict=True):
        r = expected[name]
        assert row.split()[:3] == [name, "spearman", f"{r['spearman']:.4f}"]
        assert f"({r['pairs']:,} of {r['total']:,} pairs)" in row


def test_sgns_eval_takes_names_and_keeps_the_section_detail(benchmark_vectors, capsys: pytest.CaptureFixture) -> None:
    path, _ = benchmark_vectors
    eval_main([str(path), "--benchmarks", "google", "simlex999"])
    out = capsys.readouterr().out
    assert "gram9-plural-verbs" in out and list(json.loads(out.splitlines()[-1])["eval"]) == ["google", "simlex999"]


# ------------------------------------------------------------------------- objective=auto and sgns-summarize


def test_objective_auto_is_a_quality_score_whenever_a_benchmark_was_scored() -> None:
    analogy = {"accuracy": 0.3, "seen": 10}
    similarity = {"spearman": 0.4, "pairs": 20}
    assert objective_key("auto", {"eval": {"ws353": similarity, "google": analogy}}) == "eval.google.accuracy"
    assert objective_key("auto", {"eval": {"ws353": similarity}, "loss": 2.0}) == "eval.ws353.spearman"
    assert objective("auto", {"eval": {"ws353": similarity}, "loss": 2.0}) == 0.4
    unscored = {"google": {"accuracy": 0.0, "seen": 0}, "ws353": {"spearman": None, "pairs": 0}}
    assert objective_key("auto", {"eval": unscored, "loss": 2.0}) == "loss"


def write_run(path: Path, metrics: dict, overrides: List[str]) -> None:
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (path / "metrics.json").write_text(json.dumps({"status": "finished", **metrics}))


def test_summarize_shows_each_score_with_its_coverage_and_warns_when_it_ranks_by_loss(tmp_path: Path) -> None:
    for i, (acc, spearman) in enumerate([(0.2, 0.5), (0.4, 0.3)]):
        write_run(tmp_path / "sweep" / str(i), {"loss": 2.0 + i, "eval": {
            "google": {"accuracy": acc, "seen": 100, "coverage": 0.43},
            "ws353": {"spearman": spearman, "pairs": 300, "coverage": 0.91}}}, [f"data.negatives={5 + i}"])
    summary = summarize(find_runs(tmp_path / "sweep"))
    header, rows = table_rows(summary)
    assert summary.objective == "eval.google.accuracy" and [r.name for r in summary.runs] == ["1", "0"]
    for column in ("google.accuracy", "google.coverage", "ws353.spearman", "ws353.coverage"):
        assert column in header
    assert rows[0][header.index("google.coverage")] == "0.43" and "warning" not in describe(summary)
    for i in range(2):
        write_run(tmp_path / "by_loss" / str(i), {"loss": 2.0 + i, "eval": {}}, [f"data.negatives={5 + i}"])
    by_loss = summarize(find_runs(tmp_path / "by_loss"))
    assert by_loss.objective == "loss" and "warning: " + LOSS_WARNING in describe(by_loss).splitlines()


def test_the_suite_of_a_low_coverage_vocabulary_is_scored_when_asked_by_path(tmp_path: Path) -> None:
    """min_coverage skips only benchmarks chosen by name: a file the user names is scored whatever it covers."""
    words = ["king", "queen", "man", "woman"]
    cfg = EvalConfig(analogies=[], similarities=[str(BENCHMARKS["ws353"].path)], benchmarks=["ws353"],
                     min_coverage=0.5, restrict_vocab=30000, method="3cosadd")
    suite = EvalSuite(cfg, words)
    assert list(suite.prepared) == ["wordsim353"] and suite.skipped == {}  # the same bytes, scored once, by path
    cfg.similarities = []
    suite = EvalSuite(cfg, words)
    assert list(suite.prepared) == [] and list(suite.skipped) == ["ws353"]


def test_a_bad_name_in_the_config_fails_before_the_corpus_is_read(tmp_path: Path) -> None:
    cfg = compose_cfg(tmp_path / "run", ["corpus=text", f"corpus.path={tmp_path / 'never-read.txt'}",
                                         "eval.benchmarks=[google,men]"])
    with pytest.raises(SGNSError, match=r"^benchmark 'men' \(MEN Test Collection\) is not shipped"):
        train(cfg)
    assert not (tmp_path / "run").exists()
