"""fastText's .bin and .vec: what sgns writes is read by gensim and a maintained fastText package with the same
vectors, what fastText writes is read by sgns with fastText's own vectors; unseen words from n-grams everywhere
(run.wv, evaluation); model.init_from of a fastText model."""

from __future__ import annotations

import logging
import struct
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from sgns.config import ModelConfig
from sgns.errors import SGNSError
from sgns.evaluate import EvalSuite, standalone_config
from sgns.fasttext_format import (
    EOS,
    FastTextModel,
    fasttext_model,
    is_fasttext_bin,
    read_fasttext_bin,
    write_fasttext_bin,
)
from sgns.subwords import subword_table
from sgns.train.checkpoint import save_checkpoint
from sgns.train.init_from import start_from
from sgns.vectors import NgramVectors, NotInVocabulary, WordVectors, load_word2vec

gensim_fasttext = pytest.importorskip("gensim.models.fasttext")

MINN, MAXN, BUCKET, DIM = 3, 6, 5000, 16
WORDS = ["the", "where", "wherever", "here", "café", "naïve", "日本語", "слово", "a", "of", "x", EOS]


def unseen_words(count: int = 300) -> list:
    """Words outside WORDS: made-up, short (a single letter), non-ASCII, and a word with a known word inside."""
    rng = np.random.default_rng(1)
    letters = list("abcdefghijklmnopqrstuvwxyzéü")
    made = {"".join(rng.choice(letters, size=int(rng.integers(1, 12)))) for _ in range(count)}
    return sorted(made - set(WORDS)) + ["nowhere", "cafés", "日本", "z"]


def random_model(bucket: int = BUCKET, minn: int = MINN, maxn: int = MAXN) -> FastTextModel:
    """A subword table as model=subword leaves it (words' rows, then buckets), random like a trained one."""
    rng = np.random.default_rng(0)
    table = subword_table(WORDS, minn, maxn, bucket)
    input_table = rng.standard_normal((table.input_rows, DIM)).astype(np.float32)
    output_table = rng.standard_normal((len(WORDS), DIM)).astype(np.float32)
    counts = np.arange(len(WORDS), 0, -1) * 10
    return fasttext_model(WORDS, counts, input_table, output_table, minn, maxn, bucket, ws=5, epoch=1,
                          min_count=1, neg=5, subsample=1e-3)


def sgns_vectors(model: FastTextModel) -> WordVectors:
    """The vectors sgns gives for this table: each word's mean of rows, unseen words from the buckets."""
    table = subword_table(model.words, MINN, MAXN, model.args.bucket)
    means = np.stack([model.input[table.rows_of(i)].mean(0) for i in range(model.n_words)])
    return WordVectors(model.words, means, "test", NgramVectors(model.buckets, MINN, MAXN))


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    path = tmp_path_factory.mktemp("ft") / "model.bin"
    model = random_model()
    write_fasttext_bin(path, model)
    return path, model


def test_gensim_reads_the_bin_with_sgns_vectors_for_known_and_unseen_words(written) -> None:
    path, model = written
    wv = sgns_vectors(model)
    loaded = gensim_fasttext.load_facebook_model(str(path))
    vectors = gensim_fasttext.load_facebook_vectors(str(path))
    assert loaded.wv.index_to_key == WORDS and loaded.wv.bucket == BUCKET and loaded.wv.min_n == MINN
    assert loaded.sg == 1 and loaded.negative == 5
    np.testing.assert_allclose(loaded.syn1neg, model.output)  # the output table, for continued training
    for word in WORDS:
        if word != EOS:  # gensim composes </s> from its n-grams, fastText does not (docs/subwords.md)
            np.testing.assert_allclose(loaded.wv[word], wv[word], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(vectors[word], wv[word], rtol=1e-5, atol=1e-6)
    unseen = unseen_words()
    assert len(unseen) > 250
    for word in unseen:
        assert word not in wv
        np.testing.assert_allclose(vectors[word], wv[word], rtol=1e-5, atol=1e-6)


def test_fasttext_reads_the_bin_with_sgns_vectors(written) -> None:
    fasttext = pytest.importorskip("fasttext")
    path, model = written
    wv = sgns_vectors(model)
    loaded = fasttext.load_model(str(path))
    assert loaded.words == WORDS and loaded.get_dimension() == DIM
    np.testing.assert_array_equal(loaded.get_input_matrix(), model.input)
    np.testing.assert_array_equal(loaded.get_output_matrix(), model.output)
    for word in WORDS[:-1] + unseen_words():
        np.testing.assert_allclose(loaded.get_word_vector(word), wv[word], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loaded.get_word_vector(EOS), model.input[WORDS.index(EOS)])  # its own row only


TRAIN_WITH_FASTTEXT = """
import sys, fasttext, numpy as np
corpus, out, words = sys.argv[1], sys.argv[2], sys.argv[3:]
for attempt in range(20):  # fasttext-modern 0.10.0 stops some runs this small with "Encountered NaN"
    try:
        trained = fasttext.train_unsupervised(corpus, model="skipgram", dim=10, lr=0.05, minCount=1, bucket=1000,
                                              epoch=1, thread=1, verbose=0, minn=2, maxn=4)
        break
    except RuntimeError:
        pass
trained.save_model(out)
np.save(out + ".npy", np.stack([trained.get_word_vector(w) for w in trained.words + words]))
print("\\n".join(trained.words))
"""


def test_a_model_trained_by_fasttext_reads_back_with_fasttexts_vectors(tmp_path: Path) -> None:
    pytest.importorskip("fasttext")
    rng = np.random.default_rng(0)
    vocabulary = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "théta", "kappa", "lambda", "omega"]
    corpus = tmp_path / "tiny.txt"
    corpus.write_text("\n".join(" ".join(rng.choice(vocabulary, 12)) for _ in range(300)) + "\n", encoding="utf-8")
    unseen = ["alphabet", "unseen", "ω", "é", "gammas", "x"]
    # in a process of its own: fasttext-modern 0.10.0's training always fails ("Encountered NaN") once a process
    # has loaded a model, as the tests above do
    done = subprocess.run([sys.executable, "-c", TRAIN_WITH_FASTTEXT, str(corpus), str(tmp_path / "trained.bin"),
                           *unseen], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    words = done.stdout.split("\n")[: len(vocabulary) + 1]
    expected = np.load(tmp_path / "trained.bin.npy")
    model = read_fasttext_bin(tmp_path / "trained.bin")
    assert model.words == words and EOS in model.words
    assert (model.args.minn, model.args.maxn, model.args.bucket, model.args.dim) == (2, 4, 1000, 10)
    np.testing.assert_allclose(model.word_vectors(), expected[: len(words)], rtol=1e-5, atol=1e-7)
    for word, vector in zip(words + unseen, expected, strict=True):
        np.testing.assert_allclose(model.word_vector(word), vector, rtol=1e-5, atol=1e-7)
    write_fasttext_bin(tmp_path / "again.bin", model)
    assert (tmp_path / "again.bin").read_bytes() == (tmp_path / "trained.bin").read_bytes()


def test_the_files_header_is_fasttexts(written) -> None:
    path, _ = written
    data = path.read_bytes()
    assert struct.unpack_from("<2i", data) == (793712314, 12) and is_fasttext_bin(path)
    dim, ws, epoch, min_count, neg, word_ngrams, loss, model, bucket, minn, maxn, rate = \
        struct.unpack_from("<12i", data, 8)
    assert (dim, loss, model, bucket, minn, maxn, word_ngrams) == (DIM, 2, 2, BUCKET, MINN, MAXN, 1)
    size, nwords, nlabels, ntokens, pruned = struct.unpack_from("<3i2q", data, 8 + 56)
    assert (size, nwords, nlabels, pruned) == (len(WORDS), len(WORDS), 0, -1)


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[:-3], "truncated"),
    (lambda b: b + b"\0", "bytes after its output matrix"),
    (lambda b: b[:100], "truncated"),
    (lambda b: b"\0\0\0\0" + b[4:], "not a fastText .bin model"),
    (lambda b: b[:4] + struct.pack("<i", 13) + b[8:], "format version 13"),
    (lambda b: b[:8 + 28] + struct.pack("<i", 3) + b[8 + 32:], "supervised"),
])
def test_a_damaged_or_other_file_is_one_error_line(written, tmp_path: Path, damage, message) -> None:
    path, _ = written
    bad = tmp_path / "bad.bin"
    bad.write_bytes(damage(path.read_bytes()))
    with pytest.raises(SGNSError, match=message) as error:
        read_fasttext_bin(bad)
    assert "\n" not in str(error.value)


def test_a_quantised_model_is_refused(written, tmp_path: Path) -> None:
    path, model = written
    data = bytearray(path.read_bytes())
    flag = len(data) - 4 * model.input.size - 4 * model.output.size - 2 * 17  # the input matrix's flag byte
    assert data[flag] == 0
    data[flag] = 1
    (tmp_path / "q.bin").write_bytes(bytes(data))
    with pytest.raises(SGNSError, match="quantised"):
        read_fasttext_bin(tmp_path / "q.bin")


def test_to_gensim_of_subword_vectors_answers_unseen_words_as_gensim(tmp_path: Path) -> None:
    """to_gensim() of a subword run's vectors is gensim's FastTextKeyedVectors: the same vocabulary vectors, the
    same unseen-word vectors, each word's own row as written, and it saves and loads as gensim's own."""
    from gensim.models.fasttext import FastTextKeyedVectors

    model = random_model()
    wv = sgns_vectors(model)
    kv = wv.to_gensim()
    assert isinstance(kv, FastTextKeyedVectors) and kv.index_to_key == list(WORDS)
    assert np.array_equal(kv.vectors, wv.vectors)
    for word in unseen_words():
        np.testing.assert_allclose(kv[word], wv[word], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(kv.vectors_vocab, model.input[: len(WORDS)], atol=1e-5)
    composed = kv.vectors.copy()
    kv.adjust_vectors()  # gensim's own composition from the rows it was given
    np.testing.assert_allclose(kv.vectors, composed, atol=1e-6)
    kv.save(str(tmp_path / "kv"))
    np.testing.assert_allclose(FastTextKeyedVectors.load(str(tmp_path / "kv"))["nowhere"], wv["nowhere"], rtol=1e-5)


def test_sgns_minn_0_is_written_as_fasttexts_maxn_0(tmp_path: Path) -> None:
    model = random_model(minn=0, maxn=6)
    write_fasttext_bin(tmp_path / "m.bin", model)
    read = read_fasttext_bin(tmp_path / "m.bin")
    assert (read.args.minn, read.args.maxn) == (0, 0) and read.args.ngram_range == (0, 0)
    np.testing.assert_allclose(read.word_vectors(), model.input[: len(WORDS)])  # each word its own row


def test_unseen_words_from_ngrams_and_gensims_zeros_for_none(caplog: pytest.LogCaptureFixture) -> None:
    model = random_model()
    wv = sgns_vectors(model)
    assert "nowhere" not in wv and wv.has_vector("nowhere") and wv.from_ngrams("nowhere")
    rows = wv.ngrams.rows("nowhere")
    np.testing.assert_allclose(wv["nowhere"], model.buckets[rows].mean(0), rtol=1e-6)
    np.testing.assert_allclose(wv[["where", "nowhere"]][1], wv["nowhere"])
    assert -1 <= wv.similarity("nowhere", "where") <= 1
    assert "nowhere" not in dict(wv.most_similar("nowhere", topn=len(WORDS)))  # searched: the vocabulary
    short = WordVectors(wv.words, wv.vectors, "test", NgramVectors(model.buckets, 4, 6))
    with caplog.at_level(logging.WARNING, logger="sgns"):
        assert not short["z"].any() and not short.from_ngrams("z")  # "<z>" has 3 characters, under minn 4
    assert "zeros" in caplog.text
    with pytest.raises(NotInVocabulary, match="not in vocabulary"):
        WordVectors(wv.words, wv.vectors)["nowhere"]  # without n-grams: gensim's KeyError


def test_evaluation_answers_unseen_benchmark_words_from_ngrams_and_counts_them(tmp_path: Path) -> None:
    model = random_model()
    wv = sgns_vectors(model)
    pairs = tmp_path / "pairs.txt"
    rows = [("where", "here", 5.0), ("nowhere", "where", 8.0), ("Cafés", "café", 9.0), ("the", "of", 1.0),
            ("wherever", "x", 2.0), ("a", "nowhere", 3.0), ("z", "the", 0.5)]
    pairs.write_text("".join(f"{a}\t{b}\t{s}\n" for a, b, s in rows), encoding="utf-8")
    analogies = tmp_path / "analogies.txt"
    analogies.write_text(": toy\nwhere here nowhere the\nthe of a x\nsomewhere where here the\n", encoding="utf-8")
    settings = standalone_config([str(analogies)], [str(pairs)], [], 30000, "3cosadd")
    logged = []
    suite = EvalSuite(settings, wv.words, log=logged.append, ngrams=(MINN, MAXN, BUCKET))
    results = suite.score(wv.vectors, ngram_table=model.buckets)
    sim = results["pairs"]
    assert sim["pairs"] == 7 and sim["ngram_words"] == 3  # nowhere, cafés (lowercased vocabulary), z
    cosines = [wv.similarity(a.lower(), b) for a, b, _ in rows]
    from sgns.evaluate import _average_ranks, _pearson

    gold = np.array([s for _, _, s in rows])
    assert sim["spearman"] == pytest.approx(_pearson(_average_ranks(gold), _average_ranks(np.array(cosines))))
    analogy = results["analogies"]
    assert analogy["seen"] == 3 and analogy["ngram_words"] == 2  # nowhere, somewhere
    plain = EvalSuite(settings, wv.words).score(wv.vectors)
    assert plain["pairs"]["pairs"] == 3 and "ngram_words" not in plain["pairs"] and plain["analogies"]["seen"] == 1
    assert any("answered from their n-grams" in line and "pairs 3" in line for line in logged)
    from sgns.train.tblog import eval_curves, evaluation_table

    assert set(eval_curves(results)) == {"eval/analogies/accuracy", "eval/pairs/spearman"}  # a count is no curve
    assert "7 of 7 pairs, 3 words from n-grams" in evaluation_table(results)


def subword_checkpoint(run_dir: Path, model: FastTextModel, name: str = "subword") -> Path:
    """A checkpoint as model=subword writes it (the contract: input.weight = words' rows then buckets)."""
    state = {"progress": {"step": 1, "finished": True},
             "model": {"input.weight": torch.from_numpy(np.array(model.input)),
                       "output.weight": torch.from_numpy(np.array(model.output))},
             "vocab": {"words": list(model.words), "counts": torch.from_numpy(np.array(model.counts))},
             "config": {"model": {"name": name, "dim": DIM, "minn": MINN, "maxn": MAXN, "bucket": model.args.bucket},
                        "data": {"window": 5, "min_count": 1, "negatives": 5, "subsample": 1e-3},
                        "trainer": {"epochs": 1}}}
    return save_checkpoint(state, run_dir, 1, 1)


def test_sgns_export_fasttext_writes_bin_and_vec_that_gensim_reads(tmp_path: Path) -> None:
    model = random_model()
    checkpoint = subword_checkpoint(tmp_path / "run", model)
    out = tmp_path / "model.bin"
    done = subprocess.run([sys.executable, "-m", "sgns.cli.export", str(checkpoint), str(out), "--fasttext"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "fastText .bin" in done.stdout
    wv = sgns_vectors(model)
    vectors = gensim_fasttext.load_facebook_vectors(str(out))
    for word in WORDS[:-1] + unseen_words(50):
        np.testing.assert_allclose(vectors[word], wv[word], rtol=1e-5, atol=1e-6)
    words, vec = load_word2vec(tmp_path / "model.vec")
    assert words == WORDS
    np.testing.assert_allclose(vec[:-1], wv.vectors[:-1], rtol=1e-5, atol=1e-6)

    from sgns.load import load_vectors  # sgns-eval's reader: the checkpoint's composed vectors and its n-grams

    loaded = load_vectors(checkpoint)
    np.testing.assert_allclose(loaded.vectors, wv.vectors, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loaded["nowhere"], wv["nowhere"], rtol=1e-5, atol=1e-6)


def test_sgns_export_fasttext_of_a_plain_sgns_run_says_why_not(tmp_path: Path) -> None:
    model = random_model(bucket=1)
    plain = fasttext_model(WORDS, model.counts, model.input[: len(WORDS)], model.output, 0, 0, 0)
    checkpoint = subword_checkpoint(tmp_path / "run", plain, name="sgns")
    done = subprocess.run([sys.executable, "-m", "sgns.cli.export", str(checkpoint), str(tmp_path / "m.bin"),
                           "--fasttext"], capture_output=True, text=True)
    assert done.returncode == 2 and "not a subword run" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m.bin").exists()


def test_init_from_a_fasttext_bin(written) -> None:
    path, model = written
    words = ["where", "new", "café", "the"]  # a new vocabulary sharing three words
    ours = subword_table(words, MINN, MAXN, BUCKET)
    subword = SimpleNamespace(input=torch.nn.Embedding(ours.input_rows, DIM), output=torch.nn.Embedding(4, DIM),
                              table=ours)
    cfg = ModelConfig(init_from=str(path), freeze_init=False, name="subword", minn=MINN, maxn=MAXN, bucket=BUCKET)
    rows = start_from(cfg, subword, words, resumed=False, log=lambda _: None)
    weight = subword.input.weight.detach().numpy()
    for row, word in enumerate(words):
        if word in WORDS:  # the word's own row, so with the buckets its vector is fastText's
            np.testing.assert_array_equal(weight[row], model.input[WORDS.index(word)])
            np.testing.assert_array_equal(subword.output.weight.detach().numpy()[row],
                                          model.output[WORDS.index(word)])
            np.testing.assert_allclose(weight[ours.rows_of(row)].mean(0), model.word_vector(word), atol=1e-6)
    np.testing.assert_array_equal(weight[4:], model.buckets)
    assert len(rows) == 3  # freeze_init keeps the words' own rows; n-gram rows train (docs/subwords.md)

    other_table = subword_table(words, MINN, 5, BUCKET)
    other = SimpleNamespace(input=torch.nn.Embedding(ours.input_rows, DIM), output=torch.nn.Embedding(4, DIM),
                            table=other_table)
    with pytest.raises(SGNSError, match="trained with model.minn=3, model.maxn=6, model.bucket=5000; this run has "
                                        "model.minn=3, model.maxn=5"):
        start_from(cfg, other, words, resumed=False, log=lambda _: None)

    plain = SimpleNamespace(input=torch.nn.Embedding(4, DIM), output=torch.nn.Embedding(4, DIM))
    start_from(ModelConfig(init_from=str(path), freeze_init=False, name="sgns"), plain, words, False,
               log=lambda _: None)
    np.testing.assert_allclose(plain.input.weight.detach().numpy()[0], model.word_vector("where"), rtol=1e-5)


def test_sgns_eval_of_a_subword_checkpoint_answers_unseen_words_from_ngrams(tmp_path: Path) -> None:
    import json

    model = random_model()
    checkpoint = subword_checkpoint(tmp_path / "run", model)
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("where\there\t5\nnowhere\twhere\t8\ncafés\tcafé\t9\nthe\tof\t1\n", encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "sgns.cli.eval", str(checkpoint), "--similarities", str(pairs),
                           "--words", "where", "nowhere", "--query", "nowhere - here + where", "--device", "cpu"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["eval"]["pairs"]["pairs"] == 4 and report["eval"]["pairs"]["ngram_words"] == 2
    assert "2 words from n-grams" in done.stdout and "nowhere (from n-grams):" in done.stdout
    wv = sgns_vectors(model)
    assert [w for w, _ in report["neighbours"]["nowhere"]] == [w for w, _ in wv.most_similar("nowhere", topn=8)]
    assert [w for w, _ in report["queries"]["nowhere - here + where"]] == \
        [w for w, _ in wv.most_similar(["nowhere", "where"], ["here"], topn=8)]  # a query's unseen word too


def test_run_wv_of_a_subword_run_gives_unseen_words_from_its_final_checkpoint(tmp_path: Path) -> None:
    from sgns.train.runs import Run
    from sgns.vectors import save_word2vec

    model = random_model()
    wv = sgns_vectors(model)
    run_dir = tmp_path / "run"
    subword_checkpoint(run_dir, model)
    save_word2vec(run_dir / "vectors.bin", wv.words, wv.vectors)
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "config.yaml").write_text(f"model:\n  name: subword\n  minn: {MINN}\n  maxn: {MAXN}\n"
                                                  f"  bucket: {BUCKET}\n")
    run = Run.read(run_dir)
    assert run.wv.ngrams is not None and "nowhere" not in run.wv
    np.testing.assert_allclose(run.wv["nowhere"], wv["nowhere"], rtol=1e-6)
    np.testing.assert_array_equal(run.wv["where"], wv["where"])
    (run_dir / ".hydra" / "config.yaml").write_text("model:\n  name: sgns\n")
    with pytest.raises(NotInVocabulary):
        Run.read(run_dir).wv["nowhere"]  # a plain run: no vector for an unseen word


def test_a_subword_run_end_to_end_unseen_words_evaluation_fasttext_files_and_init_from(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A real model=subword run: evaluation answers unseen benchmark words from n-grams and counts them, run.wv
    gives unseen words gensim's vectors of the exported .bin, and a new run starts from that .bin."""
    import json

    from conftest import compose_cfg, zipf_text

    from sgns.cli.export import export_main
    from sgns.train import train
    from sgns.train.runs import Run

    corpus = zipf_text(tmp_path / "corpus.txt", words=6000, vocab=150)
    pairs = tmp_path / "pairs.txt"  # w1000 and w2000 never occur: answered from their n-grams
    pairs.write_text("w1\tw2\t5\nw3\tw1000\t3\nw2000\tw5\t1\nw7\tw8\t4\nw10\tw11\t2\n")
    settings = ["corpus=text", f"corpus.path={corpus}", "model=subword", "model.dim=16", "model.bucket=500",
                "data.min_count=1", "trainer.epochs=1", "trainer.device=cpu", "trainer.threads=1",
                f"eval.similarities=[{pairs}]", f"data.cache_dir={tmp_path / 'cache'}"]
    metrics = train(compose_cfg(tmp_path / "run", settings))
    assert metrics["eval"]["pairs"]["pairs"] == 5 and metrics["eval"]["pairs"]["ngram_words"] == 2
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["eval"]["pairs"]["ngram_words"] == 2

    run = Run.load(tmp_path / "run")
    assert "w1000" not in run.wv and run.wv.from_ngrams("w1000")
    export_main([str(tmp_path / "run"), str(tmp_path / "model.bin"), "--fasttext"])
    vectors = gensim_fasttext.load_facebook_vectors(str(tmp_path / "model.bin"))
    for word in run.wv.words[:20] + ["w1000", "w2000", "unseen", "w"]:
        np.testing.assert_allclose(vectors[word], run.wv[word], rtol=1e-4, atol=1e-6)

    with caplog.at_level(logging.INFO, logger="sgns"):
        again = train(compose_cfg(tmp_path / "again", [*settings, f"model.init_from={tmp_path / 'model.bin'}",
                                                       "eval=none"]))
    assert again["status"] == "finished"
    assert "500 n-gram bucket rows start from" in caplog.text
    assert "150 of 150 vocabulary words start from" in caplog.text
