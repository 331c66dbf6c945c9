"""model=subword end to end: a run's outputs (vectors = each word's mean of rows, checkpoints whose input table
reads back whole), its read-back (sgns.load, the finished run's rewritten vectors), `model.init_from` in and out of
subword runs, and the refusals of a resume or init_from with other minn/maxn/bucket."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_cfg, zipf_text

from sgns.errors import SGNSError
from sgns.hydra_app import compose
from sgns.load import load_model
from sgns.model import SubwordSGNS
from sgns.subwords import subword_table
from sgns.train import train
from sgns.train.checkpoint import list_checkpoints, load_checkpoint
from sgns.vectors import load_word2vec, save_word2vec
from sgns.vocab import checkpoint_words

SUBWORD = ["model=subword", "model.dim=16", "model.bucket=500", "data.min_count=1", "trainer.epochs=1",
           "trainer.device=cpu", "trainer.threads=1", "eval=none"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return zipf_text(tmp_path_factory.mktemp("subword") / "corpus.txt", words=6000, vocab=150)


def run(path: Path, corpus: Path, *extra: str) -> dict:
    return train(compose_cfg(path, ["corpus=text", f"corpus.path={corpus}", *SUBWORD, *extra]))


def final_checkpoint(path: Path) -> dict:
    return load_checkpoint(list_checkpoints(path)[-1])


def mean_rows(state: dict, words: list, minn: int = 3, maxn: int = 6, bucket: int = 500) -> np.ndarray:
    table = subword_table(words, minn, maxn, bucket)
    weight = state["model"]["input.weight"].numpy()
    return np.stack([weight[table.rows_of(i)].mean(0) for i in range(len(words))])


def test_a_subword_run_writes_each_words_mean_of_rows_and_checkpoints_the_whole_table(tmp_path: Path, corpus: Path):
    metrics = run(tmp_path / "run", corpus)
    assert metrics["status"] == "finished" and metrics["pairs"] > 0
    state = final_checkpoint(tmp_path / "run")
    words = list(checkpoint_words(state["vocab"]))
    assert state["model"]["input.weight"].shape == (len(words) + 500, 16)
    assert state["model"]["output.weight"].shape == (len(words), 16)
    settings = {key: state["config"]["model"][key] for key in ("name", "minn", "maxn", "bucket")}
    assert settings == {"name": "subword", "minn": 3, "maxn": 6, "bucket": 500}
    written_words, vectors = load_word2vec(tmp_path / "run" / "vectors.bin")
    assert written_words == words
    assert np.allclose(vectors, mean_rows(state, words), atol=1e-6)
    assert not np.allclose(vectors, state["model"]["input.weight"].numpy()[: len(words)], atol=1e-4)  # not own rows
    assert (state["model"]["input.weight"][len(words):] != 0).any()  # the n-gram rows trained (or kept their init)

    model = load_model(tmp_path / "run")  # the module back, its n-gram rows rebuilt from the vocabulary
    assert isinstance(model, SubwordSGNS) and np.allclose(model.word_vectors().numpy(), vectors, atol=1e-6)

    (tmp_path / "run" / "vectors.bin").unlink()  # a finished run rewrites deleted vectors from its final checkpoint
    run(tmp_path / "run", corpus)
    assert np.allclose(load_word2vec(tmp_path / "run" / "vectors.bin")[1], vectors, atol=1e-6)


def test_negatives_and_corpus_order_follow_fasttexts_and_sgns_keeps_word2vecs(tmp_path: Path, corpus: Path):
    """fastText draws negatives from counts^0.5 (its src/loss.cc), word2vec from counts^0.75, and its threads
    train their parts of the corpus side by side: model=subword trains with fastText's exponent and two streams
    (docs/subwords.md, "Quality against fastText's C++ trainer"), plain SGNS keeps word2vec's and gensim's, an
    override wins."""
    run(tmp_path / "run", corpus)
    data = final_checkpoint(tmp_path / "run")["config"]["data"]
    assert data["ns_exponent"] == 0.5 and data["streams"] == 2
    assert compose(["model=subword", "experiment=text8"]).data.ns_exponent == 0.5
    assert compose(["model=subword", "experiment=text8"]).data.streams == 2
    assert compose(["model=subword", "data.ns_exponent=0.75"]).data.ns_exponent == 0.75
    assert compose(["model=subword", "data.streams=1"]).data.streams == 1
    assert compose([]).data.ns_exponent == compose(["model=full_softmax"]).data.ns_exponent == 0.75
    assert compose([]).data.streams == compose(["model=full_softmax"]).data.streams == 1


def test_a_resume_with_other_ngram_settings_is_refused_in_one_line(tmp_path: Path, corpus: Path):
    run(tmp_path / "run", corpus)
    for change in ("model.minn=2", "model.maxn=5", "model.bucket=400"):
        with pytest.raises(SGNSError, match=f"belongs to a run with other settings: {change.replace('=', '=.*')}"
                           ) as error:
            run(tmp_path / "run", corpus, change)
        assert "\n" not in str(error.value)


def test_init_from_a_subword_run_starts_every_shared_word_and_bucket_from_it(tmp_path: Path, corpus: Path):
    run(tmp_path / "source", corpus)
    source = final_checkpoint(tmp_path / "source")
    words = list(checkpoint_words(source["vocab"]))
    # One step at a tiny lr: the tables barely move, so the new run's tables are the source's within that step.
    run(tmp_path / "next", corpus, f"model.init_from={tmp_path / 'source'}", "optimizer.lr=1e-9")
    state = final_checkpoint(tmp_path / "next")
    assert list(checkpoint_words(state["vocab"])) == words
    assert torch.allclose(state["model"]["input.weight"], source["model"]["input.weight"], atol=1e-6)
    assert torch.allclose(state["model"]["output.weight"], source["model"]["output.weight"], atol=1e-6)

    with pytest.raises(SGNSError, match=r"was trained with model.minn=3, model.maxn=6, model.bucket=500; this run "
                                        r"has model.minn=3, model.maxn=6, model.bucket=400: use the same") as error:
        run(tmp_path / "other", corpus, f"model.init_from={tmp_path / 'source'}", "model.bucket=400")
    assert "\n" not in str(error.value)

    # into plain SGNS: each word starts from its mean of rows there
    train(compose_cfg(tmp_path / "sgns", ["corpus=text", f"corpus.path={corpus}", "model.dim=16", "data.min_count=1",
                                          "trainer.epochs=1", "trainer.device=cpu", "trainer.kernel=torch",
                                          "eval=none", f"model.init_from={tmp_path / 'source'}", "optimizer.lr=1e-9"]))
    plain = final_checkpoint(tmp_path / "sgns")
    assert np.allclose(plain["model"]["input.weight"].numpy(), mean_rows(source, words), atol=1e-6)


def test_init_from_a_word2vec_file_fills_the_words_own_rows(tmp_path: Path, corpus: Path):
    vectors = np.random.default_rng(0).normal(size=(3, 16)).astype(np.float32)
    save_word2vec(tmp_path / "w2v.txt", ["w0", "w1", "nowhere"], vectors, binary=False)
    run(tmp_path / "run", corpus, f"model.init_from={tmp_path / 'w2v.txt'}", "optimizer.lr=1e-9",
        "model.freeze_init=true")
    state = final_checkpoint(tmp_path / "run")
    words = list(checkpoint_words(state["vocab"]))
    weight = state["model"]["input.weight"].numpy()
    assert np.array_equal(weight[words.index("w0")], vectors[0]) and np.array_equal(weight[words.index("w1")],
                                                                                      vectors[1])


def test_a_checkpoint_from_before_the_subword_keys_resumes_as_sgns(tmp_path: Path):
    """Runs written before model.minn/maxn/bucket existed lack them in their record: they count as the defaults."""
    from sgns.config import as_record
    from sgns.train.rundir import settings_differences

    record = as_record(compose_cfg(tmp_path))
    older = {**record, "model": {k: v for k, v in record["model"].items() if k not in ("minn", "maxn", "bucket")}}
    assert settings_differences(older, record) == []
    assert settings_differences(older, as_record(compose_cfg(tmp_path, ["model.bucket=10"]))) == [
        "model.bucket=2000000 (this command: 10)"]


def test_a_subword_run_from_before_two_streams_resumes_only_with_one(tmp_path: Path):
    """A model=subword run recorded before data.streams existed trained one stream: today's default (2) is a changed
    result setting for it, data.streams=1 continues it."""
    from sgns.config import as_record
    from sgns.train.rundir import settings_differences

    record = as_record(compose_cfg(tmp_path, ["model=subword"]))
    older = {**record, "data": {k: v for k, v in record["data"].items() if k != "streams"}}
    assert settings_differences(older, record) == ["data.streams=1 (this command: 2)"]
    assert settings_differences(older, as_record(compose_cfg(tmp_path, ["model=subword", "data.streams=1"]))) == []


def test_a_checkpoint_stores_the_rows_words_have_and_an_imported_table_whole(tmp_path: Path, corpus: Path):
    """With more buckets than the words' n-grams reach, a checkpoint file holds only the input rows words have
    (loading restores the rest from the initial fill: the vectors still match); after init_from imported another
    run's buckets, the whole table."""
    run(tmp_path / "run", corpus, "model.bucket=20000")
    path = list_checkpoints(tmp_path / "run")[-1]
    raw = torch.load(path, weights_only=True)
    words = list(checkpoint_words(raw["vocab"]))
    assert raw["input_fill"]["rows"] == len(words) + 20000
    assert len(raw["model"]["input.weight"]) == len(raw["model"]["input.rows"]) < (len(words) + 20000) // 2
    state = load_checkpoint(path)
    assert state["model"]["input.weight"].shape == (len(words) + 20000, 16)
    written_words, vectors = load_word2vec(tmp_path / "run" / "vectors.bin")
    assert np.allclose(vectors, mean_rows(state, words, bucket=20000), atol=1e-6)
    run(tmp_path / "again", corpus, "model.bucket=20000", f"model.init_from={tmp_path / 'run'}")
    again = torch.load(list_checkpoints(tmp_path / "again")[-1], weights_only=True)
    assert "input_fill" not in again and again["model"]["input.weight"].shape == (len(words) + 20000, 16)
