"""word2vec text/binary files: gensim reads ours unchanged, we read gensim's, damaged files fail clearly."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path
from typing import List

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sgns.errors import SGNSError
from sgns.vectors import WordVectors, load_word2vec, load_word_vectors, save_word2vec
from sgns.vocab import WordList

KeyedVectors = pytest.importorskip("gensim.models").KeyedVectors

WORDS = ["the", "café", "naïve", "Ñandú", "日本語", "слово", "emoji🙂", "a\u00a0b", "line\u2028sep", "x"]


def sample_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.normal(0, 1, (n, dim)).astype(np.float32)
    v[0, 0] = 1e-30  # tiny, huge and negative values must survive text round trips too
    v[1, 1] = -3.4e38
    return v


@pytest.mark.parametrize("binary", [True, False])
def test_gensim_loads_ours_unchanged(tmp_path: Path, binary: bool) -> None:
    vectors = sample_vectors(len(WORDS), 7)
    path = tmp_path / ("v.bin" if binary else "v.txt")
    save_word2vec(path, WORDS, vectors, binary=binary)
    kv = KeyedVectors.load_word2vec_format(str(path), binary=binary)
    assert kv.index_to_key == WORDS
    assert kv.vectors.dtype == np.float32
    np.testing.assert_array_equal(kv.vectors, vectors)  # bit-exact, text included (9 significant digits)


@pytest.mark.parametrize("binary", [True, False])
def test_we_load_gensim_files(tmp_path: Path, binary: bool) -> None:
    vectors = sample_vectors(len(WORDS), 5, seed=1)
    kv = KeyedVectors(5)
    kv.add_vectors(WORDS, vectors)
    path = tmp_path / ("g.bin" if binary else "g.txt")
    kv.save_word2vec_format(str(path), binary=binary)
    words, loaded = load_word2vec(path)
    assert words == WORDS
    np.testing.assert_array_equal(loaded, vectors)  # text too: gensim writes a round-tripping repr


def test_format_detected_with_short_text_rows(tmp_path: Path) -> None:
    """Text rows shorter than 4*dim bytes (e.g. zeros) followed by a non-ASCII word are still text."""
    path = tmp_path / "zeros.txt"
    path.write_text("2 4\nzero 0 0 0 0\nÜber 1 0 0 0\n", encoding="utf-8")
    words, vectors = load_word2vec(path)
    assert words == ["zero", "Über"]
    np.testing.assert_array_equal(vectors, [[0, 0, 0, 0], [1, 0, 0, 0]])


def test_c_tool_binary_and_dim_one(tmp_path: Path) -> None:
    """The C tool ends binary rows with a newline; a float whose bytes hold '\\n' or ' ' must not confuse rows."""
    tricky = np.frombuffer(b"\n\n \n", dtype="<f4")[0]  # bytes 0a 0a 20 0a
    vectors = np.array([[tricky], [1.5], [tricky]], dtype=np.float32)
    path = tmp_path / "c.bin"
    save_word2vec(path, ["a", "b", "c"], vectors, binary=True)
    words, loaded = load_word2vec(path)
    assert words == ["a", "b", "c"]
    np.testing.assert_array_equal(loaded, vectors)
    kv = KeyedVectors.load_word2vec_format(str(path), binary=True)
    np.testing.assert_array_equal(kv.vectors, vectors)


@pytest.mark.parametrize("binary", [True, False])
def test_truncated_file_is_a_clear_error(tmp_path: Path, binary: bool) -> None:
    path = tmp_path / "v"
    save_word2vec(path, WORDS, sample_vectors(len(WORDS), 6), binary=binary)
    data = path.read_bytes()
    for cut in (len(data) - 3, len(data) // 2):
        path.write_bytes(data[:cut])
        with pytest.raises(SGNSError, match="truncated"):
            load_word2vec(path)


@pytest.mark.parametrize("content", [b"", b"hello world\nthis is text\n", b"\x89PNG\r\n\x1a\n\x00\x00",
                                     b"3\nabc\n", b"-1 5\n", b"2 0\n"])
def test_not_a_word2vec_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad"
    path.write_bytes(content)
    with pytest.raises(SGNSError, match="not a word2vec file"):
        load_word2vec(path)


def test_a_binary_junk_file_gets_a_short_line(tmp_path: Path) -> None:
    """Random bytes with no newline: the error quotes a few bytes, not a screenful of escapes."""
    path = tmp_path / "junk.bin"
    path.write_bytes(bytes(range(128, 256)) * 4)
    with pytest.raises(SGNSError, match="not a word2vec file") as caught:
        load_word2vec(path)
    assert len(str(caught.value)) < len(str(path)) + 200


def test_text_row_with_a_bad_number(tmp_path: Path) -> None:
    path = tmp_path / "v.txt"
    path.write_text("2 2\na 1 2\nb 1 x\n")
    with pytest.raises(SGNSError, match="line 3"):
        load_word2vec(path)


def test_missing_file_and_unwritable_words(tmp_path: Path) -> None:
    with pytest.raises(SGNSError, match="not found"):
        load_word2vec(tmp_path / "none.bin")
    with pytest.raises(SGNSError, match="space or newline"):
        save_word2vec(tmp_path / "v.bin", ["two words"], np.zeros((1, 2), np.float32))
    assert not (tmp_path / "v.bin").exists()


words_strategy = st.lists(
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters=" \n\r\t\x0b\x0c\x1c\x1d\x1e\x85"),
            min_size=1, max_size=8),
    min_size=1, max_size=12, unique=True)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(words=words_strategy, dim=st.integers(1, 6), binary=st.booleans(), seed=st.integers(0, 1000))
def test_round_trip_property(tmp_path: Path, words: List[str], dim: int, binary: bool, seed: int) -> None:
    vectors = np.random.default_rng(seed).normal(0, 10, (len(words), dim)).astype(np.float32)
    path = tmp_path / "rt"
    save_word2vec(path, words, vectors, binary=binary)
    loaded_words, loaded = load_word2vec(path)
    assert loaded_words == words
    np.testing.assert_array_equal(loaded, vectors)


def test_word_vectors_lookup_and_nearest(tmp_path: Path) -> None:
    path = tmp_path / "v.bin"
    vectors = np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
    save_word2vec(path, ["king", "queen", "man", "woman"], vectors)
    wv = load_word_vectors(path)
    assert isinstance(wv, WordVectors) and len(wv) == 4 and wv.dim == 3 and "queen" in wv
    np.testing.assert_array_equal(wv["man"], vectors[2])
    assert wv.nearest("king", topn=1)[0][0] == "queen"
    assert [w for w, _ in wv.nearest(["queen", "woman"], "man", topn=3)] == ["king"]  # inputs never returned
    with pytest.raises(SGNSError, match="not in vocabulary"):
        wv["prince"]


# ---------------------------------------------------------------- gensim's KeyedVectors surface on WordVectors


@pytest.fixture(scope="module")
def both() -> tuple:
    """The same random vectors as WordVectors and as gensim KeyedVectors (wv.to_gensim())."""
    vectors = np.random.default_rng(3).normal(0, 0.1, (300, 24)).astype(np.float32)
    wv = WordVectors([f"w{i}" for i in range(300)], vectors, "random")
    return wv, wv.to_gensim()


def same_neighbours(ours: list, gensims: list) -> None:
    assert [w for w, _ in ours] == [w for w, _ in gensims]
    np.testing.assert_allclose([s for _, s in ours], [s for _, s in gensims], rtol=1e-5, atol=1e-6)
    assert all(type(s) is float for _, s in ours)


@pytest.mark.parametrize("args, kwargs", [
    (("w3",), {}),
    (("w3",), {"topn": 3}),
    ((["w1", "w2"], ["w3"]), {"topn": 5}),
    ((), {"positive": ["w1", "w2"], "negative": ["w3"]}),
    ((), {"positive": ["w5", "w7"], "negative": "w9", "restrict_vocab": 50}),
    ((), {"positive": "w3", "clip_start": 10, "clip_end": 60}),
    ((), {"positive": [("w1", 0.5), ("w2", 2.0)], "negative": [("w3", 1.0)]}),  # the weight replaces the sign
    ((), {"positive": [0, 4]}),  # row numbers are keys too
    ((), {"negative": ["w4"]}),
    ((), {"positive": ["w3"], "topn": 0}),
    ((), {"positive": ["w3"], "topn": 500}),  # more than there are words
], ids=lambda x: repr(x)[:40])
def test_most_similar_of_words_matches_gensim(both: tuple, args: tuple, kwargs: dict) -> None:
    wv, kv = both
    same_neighbours(wv.most_similar(*args, **kwargs), kv.most_similar(*args, **kwargs))


def test_most_similar_of_vectors_matches_gensim(both: tuple) -> None:
    wv, kv = both
    vector = wv["w3"] * 7  # any length: only its direction counts
    for args, kwargs in [((vector,), {}), ((), {"positive": [vector]}), ((), {"positive": [vector, "w5"],
                                                                              "negative": [wv["w8"]]}),
                         ((np.stack([wv["w3"], wv["w9"]]),), {"restrict_vocab": 100})]:
        ours = wv.most_similar(*args, **kwargs)
        same_neighbours(ours, kv.most_similar(*args, **kwargs))
    assert wv.most_similar(vector)[0] == ("w3", pytest.approx(1.0))  # a vector's own word is not left out
    same_neighbours(wv.similar_by_vector(vector, topn=4), kv.similar_by_vector(vector, topn=4))
    same_neighbours(wv.similar_by_word("w3", restrict_vocab=40), kv.similar_by_word("w3", restrict_vocab=40))
    same_neighbours(wv.similar_by_key(5, topn=3), kv.similar_by_key(5, topn=3))
    everything = wv.most_similar("w3", topn=None)
    assert everything.shape == (300,) and everything.dtype == np.float32
    np.testing.assert_allclose(everything, kv.most_similar("w3", topn=None), atol=1e-6)
    with pytest.raises(SGNSError, match=r"a query vector must have shape \(24,\), not \(3,\)"):
        wv.most_similar(np.ones(3, np.float32))
    with pytest.raises(SGNSError, match="to_gensim"):
        wv.most_similar("w3", indexer=object())


@pytest.mark.filterwarnings("ignore:Call to deprecated `init_sims`:DeprecationWarning")  # gensim's own call
def test_most_similar_cosmul_matches_gensim(both: tuple) -> None:
    wv, kv = both
    for args in [(["w1", "w2"], ["w3"]), ("w4",), ("w4", "w5"), ([wv.get_vector("w6", norm=True), "w7"],)]:
        same_neighbours(wv.most_similar_cosmul(*args), kv.most_similar_cosmul(*args))
    np.testing.assert_allclose(wv.most_similar_cosmul(["w1", "w2"], ["w3"], topn=None),
                               kv.most_similar_cosmul(["w1", "w2"], ["w3"], topn=None), rtol=1e-5)
    # gensim 4.4 ignores restrict_vocab here; ours searches the first N words, as most_similar does
    scores = kv.most_similar_cosmul(["w1", "w2"], ["w3"], topn=None)[:60]
    expected = [(f"w{i}", scores[i]) for i in np.argsort(-scores) if i not in (1, 2, 3)][:10]
    same_neighbours(wv.most_similar_cosmul(["w1", "w2"], ["w3"], restrict_vocab=60), expected)
    # a vector counts by its direction (gensim uses its length too): the same as its unit vector
    same_neighbours(wv.most_similar_cosmul([wv["w6"] * 5, "w7"]),
                    kv.most_similar_cosmul([wv.get_vector("w6", norm=True), "w7"]))


def test_similarities_distances_and_ranks_match_gensim(both: tuple) -> None:
    wv, kv = both
    words = ["w10", "w11", "w12", "w13", "w14"]
    assert wv.doesnt_match(words) == kv.doesnt_match(words)
    assert wv.doesnt_match([*words, "unknown"]) == kv.doesnt_match([*words, "unknown"])  # skipped, as gensim does
    ours, gensims = wv.rank_by_centrality(words), kv.rank_by_centrality(words)
    assert [w for _, w in ours] == [w for _, w in gensims]
    np.testing.assert_allclose([s for s, _ in ours], [s for s, _ in gensims], rtol=1e-5)
    for a, b in [("w1", "w2"), ("w5", "w5"), (3, "w40")]:
        assert wv.similarity(a, b) == pytest.approx(float(kv.similarity(a, b)), abs=1e-6)
        assert wv.distance(a, b) == pytest.approx(float(kv.distance(a, b)), abs=1e-6)
    assert wv.n_similarity(["w1", "w2"], ["w3", "w4", "w5"]) == \
        pytest.approx(float(kv.n_similarity(["w1", "w2"], ["w3", "w4", "w5"])), abs=1e-6)
    for args in [("w1",), ("w1", ["w2", "w7"]), (wv["w9"],), (wv["w9"], ["w0"])]:
        np.testing.assert_allclose(wv.distances(*args), kv.distances(*args), atol=1e-6)
    for a, b in [("w1", "w2"), ("w7", "w100"), ("w50", "w50")]:
        assert wv.closer_than(a, b) == kv.closer_than(a, b)
        assert wv.words_closer_than(a, b) == kv.closer_than(a, b)
        assert wv.rank(a, b) == kv.rank(a, b)
    assert wv.most_similar_to_given("w1", ["w2", "w3", "w4"]) == kv.most_similar_to_given("w1", ["w2", "w3", "w4"])
    assert wv.relative_cosine_similarity("w1", "w2") == \
        pytest.approx(kv.relative_cosine_similarity("w1", "w2"), rel=1e-5)
    np.testing.assert_allclose(wv.get_vector("w3", norm=True), kv.get_vector("w3", norm=True), rtol=1e-6)
    np.testing.assert_array_equal(wv.get_vector("w3"), kv.get_vector("w3"))
    np.testing.assert_allclose(wv.get_normed_vectors(), kv.get_normed_vectors(), rtol=1e-6)
    for keys, kwargs in [(["w1", "w2"], {}), (["w1", wv["w2"], "unknown"], {"weights": [1.0, -2.0, 3.0]}),
                         (["w1", "w2"], {"pre_normalize": False, "post_normalize": True})]:
        np.testing.assert_allclose(wv.get_mean_vector(keys, **kwargs), kv.get_mean_vector(keys, **kwargs), atol=1e-6)
    np.testing.assert_allclose(wv.cosine_similarities(wv["w1"], wv.vectors[:5]),
                               kv.cosine_similarities(wv["w1"], wv.vectors[:5]), rtol=1e-6)


def test_lookups_indexing_and_iteration_match_gensim(both: tuple, tmp_path: Path) -> None:
    wv, kv = both
    assert wv.index_to_key == kv.index_to_key and wv.key_to_index == kv.key_to_index
    np.testing.assert_array_equal(wv.vectors, kv.vectors)
    assert wv.vector_size == kv.vector_size == 24 and len(wv) == len(kv) == 300
    for key in ["w3", 0, 299, np.int64(7)]:
        np.testing.assert_array_equal(wv[key], kv[key])
        assert wv.get_index(key) == kv.get_index(key) and key in wv and wv.has_index_for(key)
    np.testing.assert_array_equal(wv[[0, "w2", np.int64(5)]], kv[[0, "w2", np.int64(5)]])
    np.testing.assert_array_equal(wv[np.arange(3)], kv[np.arange(3)])
    for key in ["unknown", 300, -1, 2.0, None]:
        assert (key in wv) == (key in kv) is False and not wv.has_index_for(key)
        assert wv.get_index(key, default=-5) == kv.get_index(key, default=-5) == -5
    # gensim iterates by wv[0], wv[1], ...: the vectors in order (then a KeyError); ours stops after the last
    rows = list(wv)
    assert len(rows) == 300
    np.testing.assert_array_equal(np.stack(rows), np.stack(list(itertools.islice(iter(kv), 300))))
    np.testing.assert_array_equal(np.asarray(wv), wv.vectors)
    wv.save_word2vec_format(tmp_path / "v.txt")  # gensim's default: text
    assert KeyedVectors.load_word2vec_format(str(tmp_path / "v.txt"), binary=False).index_to_key == wv.words
    assert repr(wv) == "WordVectors<300 words, dim 24 from random>" and len(str(wv)) < 100


def test_an_unknown_word_is_a_key_error_of_one_plain_line(both: tuple) -> None:
    wv, _ = both
    queries = [("word not in vocabulary: 'prince'", lambda: wv["prince"]),
               ("word not in vocabulary: 'prince'", lambda: wv.get_vector("prince")),
               ("word not in vocabulary: 'prince'", lambda: wv[["w1", "prince"]]),
               ("word not in vocabulary: 'prince'", lambda: wv.most_similar(positive=["w1"], negative=["prince"])),
               ("word not in vocabulary: 'prince'", lambda: wv.most_similar_cosmul("prince")),
               ("word not in vocabulary: 'prince'", lambda: wv.similarity("w1", "prince")),
               ("word not in vocabulary: 'prince'", lambda: wv.nearest("prince")),
               ("row 300 is out of range: the vocabulary has 300 words, rows 0 to 299", lambda: wv[300]),
               ("row -1 is out of range: the vocabulary has 300 words, rows 0 to 299", lambda: wv[-1]),
               ("1.5 is not a word or a row number (give a str, an int or a list of them)", lambda: wv[1.5])]
    for message, query in queries:
        with pytest.raises(KeyError) as caught:
            query()
        assert isinstance(caught.value, SGNSError) and str(caught.value) == message  # not quoted, as KeyError's is
    try:
        wv["prince"]
    except SGNSError as e:  # the command line's handler prints it as its one line
        assert str(e) == "word not in vocabulary: 'prince'"


def gensim_public_names() -> set:
    kv = KeyedVectors(vector_size=2)
    kv.add_lifecycle_event("created")  # an attribute gensim sets on use
    return {n for n in set(dir(KeyedVectors)) | set(vars(kv)) if not n.startswith("_")}


def test_the_rest_of_keyedvectors_answers_with_to_gensim(both: tuple) -> None:
    from sgns.vectors import GENSIM_3_NAMES, GENSIM_ONLY

    wv, kv = both
    missing = {n for n in gensim_public_names() if not hasattr(wv, n)}
    assert missing == GENSIM_ONLY  # the static list (sgns does not import gensim) is gensim's surface minus ours
    assert {"most_similar_cosmul", "doesnt_match", "get_vector", "n_similarity"}.isdisjoint(missing)
    for name in missing:
        with pytest.raises(AttributeError) as caught:
            getattr(wv, name)
        message = str(caught.value)
        assert "\n" not in message and (f"wv.to_gensim().{name}" in message if name not in GENSIM_3_NAMES
                                        else "gensim 4 has none either" in message), message
    with pytest.raises(AttributeError, match=r"evaluate_word_analogies.*wv.evaluate\(analogies=FILE\)"):
        wv.evaluate_word_analogies("questions-words.txt")
    with pytest.raises(AttributeError, match=r"^WordVectors has no vocab \(gensim 4 has none either\): use "
                                             r"key_to_index and index_to_key$"):
        _ = wv.vocab
    with pytest.raises(AttributeError, match=r"^'WordVectors' object has no attribute 'no_such_thing'$"):
        _ = wv.no_such_thing
    assert kv.wmdistance is not None  # the pointer is right: gensim has it


def test_pointers_to_gensim_do_not_import_it() -> None:
    code = ("import sys, numpy as np; from sgns.vectors import WordVectors; wv = WordVectors(['a'], np.ones((1, 2)))\n"
            "try: wv.wmdistance\nexcept AttributeError as e: print(e)\nprint('gensim' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert out.stdout.splitlines() == ["WordVectors has no wmdistance, gensim's KeyedVectors has: "
                                       "wv.to_gensim().wmdistance on a gensim copy of these vectors", "False"], \
        out.stdout + out.stderr


def test_a_compact_word_list_writes_the_same_files_and_refuses_the_same_words(tmp_path: Path) -> None:
    """A run's vocabulary (sgns.vocab.WordList) is written from its bytes, in blocks: the files equal the list's."""
    words = [f"w{i}" for i in range(70_000)] + ["né", "日本"]  # more than one block of BINARY_BLOCK_ROWS
    vectors = np.random.default_rng(0).standard_normal((len(words), 3)).astype(np.float32)
    for binary, name in ((True, "vectors.bin"), (False, "vectors.txt")):
        save_word2vec(tmp_path / f"list-{name}", words, vectors, binary=binary)
        save_word2vec(tmp_path / f"compact-{name}", WordList.from_strings(words), vectors, binary=binary)
        assert (tmp_path / f"list-{name}").read_bytes() == (tmp_path / f"compact-{name}").read_bytes()
    for bad, shown in ((["a", "b c", "", "d"], "'b c'"), (["a", "", "b c"], "''"), (["a", "b\nc"], "'b\\\\nc'")):
        with pytest.raises(SGNSError, match=f"word {shown} is empty"):
            save_word2vec(tmp_path / "bad.bin", WordList.from_strings(bad), np.zeros((len(bad), 3), np.float32))
