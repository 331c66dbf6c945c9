"""word2vec text/binary files: gensim reads ours unchanged, we read gensim's, damaged files fail clearly."""

from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sgns.errors import SGNSError
from sgns.vectors import WordVectors, load_word2vec, load_word_vectors, save_word2vec

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
