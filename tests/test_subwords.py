"""fastText's n-grams and hash, checked against gensim's implementation of them (gensim reads fastText's files)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sgns.subwords import fasttext_hash, ngrams, subword_table

fasttext_inner = pytest.importorskip("gensim.models.fasttext_inner")

WORDS = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40))
def test_the_hash_is_fasttexts(data: bytes) -> None:
    assert fasttext_hash(data) == fasttext_inner.ft_hash_bytes(data)


def test_a_byte_above_127_is_sign_extended_as_fasttext_does() -> None:
    # FNV-1a on the unsigned byte would give 0x050c5d7e for b"\xe9"; fastText xors 0xffffffe9
    assert fasttext_hash(b"\xe9") == fasttext_inner.ft_hash_bytes(b"\xe9") != 0x050C5D7E


@settings(max_examples=300, deadline=None)
@given(WORDS, st.integers(1, 4), st.integers(0, 4))
def test_the_ngrams_are_fasttexts(word: str, minn: int, extra: int) -> None:
    maxn = minn + extra
    assert ngrams(word, minn, maxn) == fasttext_inner.compute_ngrams_bytes(word, minn, maxn)


@settings(max_examples=50, deadline=None)
@given(st.lists(WORDS, min_size=1, max_size=30, unique=True), st.integers(1, 3), st.integers(0, 4),
       st.integers(1, 5000))
def test_the_compiled_table_matches_the_reference(words, minn, extra, bucket) -> None:
    maxn = minn + extra
    table = subword_table(words, minn, maxn, bucket)
    for i, word in enumerate(words):
        want = [i] + [len(words) + fasttext_hash(g) % bucket for g in ngrams(word, minn, maxn)]
        assert table.rows_of(i).tolist() == want
        assert table.unknown_word_rows(word).tolist() == want[1:]
    assert table.rows.dtype == np.int32 and table.input_rows == len(words) + bucket


def test_minn_zero_turns_ngrams_off() -> None:
    table = subword_table(["where", "here"], 0, 6, 100)
    assert table.rows.tolist() == [0, 1] and table.unknown_word_rows("there").size == 0


def test_where_has_the_ngrams_fasttexts_paper_lists() -> None:
    assert [g.decode() for g in ngrams("where", 3, 3)] == ["<wh", "whe", "her", "ere", "re>"]
