"""Fuzzing the streamed reader and tokenizer: any bytes, any block size, same tokens as a one-shot reference.

The reference decodes the whole input at once (invalid UTF-8 -> U+FFFD), turns NUL into whitespace,
splits lines on "\\n" and tokens on whitespace, cuts lines into max_len pieces. The streamed reader must
agree exactly, whatever block boundaries cut through (multi-byte characters, lines, tokens), and count
the replaced bytes exactly.
"""

from __future__ import annotations

import codecs
import io
from typing import List, Tuple

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sgns.corpus import ReadStats, encode, iter_sentences, text_source

_counted = [0]


def _count(exc: UnicodeDecodeError) -> Tuple[str, int]:
    _counted[0] += exc.end - exc.start
    return "\ufffd", exc.end


codecs.register_error("test-count", _count)


def reference(data: bytes, max_len: int, lowercase: bool) -> Tuple[List[List[str]], int]:
    _counted[0] = 0
    text = data.decode("utf-8", errors="test-count").replace("\x00", " ")
    out = []
    for line in text.split("\n"):
        tokens = line.lower().split() if lowercase else line.split()
        out.extend(tokens[i : i + max_len] for i in range(0, len(tokens), max_len))
    return out, _counted[0]


def streamed(data: bytes, max_len: int, lowercase: bool, block: int, max_token: int = 10**9):
    stats = ReadStats()
    out = list(iter_sentences(io.BytesIO(data), max_len, lowercase, stats, block_bytes=block,
                              max_token_bytes=max_token))
    return out, stats


# Bytes biased towards what breaks readers: newlines, whitespace of several kinds, NUL, multi-byte UTF-8
# (whole and cut), invalid bytes, Greek capital sigma (context-sensitive lowercase).
pieces = st.sampled_from([b"\n", b" ", b"\t", b"\r\n", b"\x00", b"\x0b", b"\xc2\x85", b"\xe2\x80\xa8", b"a", b"bc",
                          b"\xc3\xa9", b"\xe2\x82\xac", b"\xf0\x9f\x98\x80", b"\xe2\x82", b"\xff", b"\x80",
                          b"\xce\xa3", b"\xce\x91", b"word", b"\xed\xa0\x80"])
fuzz_bytes = st.one_of(st.binary(max_size=300), st.lists(pieces, max_size=120).map(b"".join))


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=fuzz_bytes, max_len=st.integers(1, 6), lowercase=st.booleans(), block=st.integers(1, 16))
def test_streamed_reader_matches_one_shot_reference(data: bytes, max_len: int, lowercase: bool, block: int):
    expected, replaced = reference(data, max_len, lowercase)
    got, stats = streamed(data, max_len, lowercase, block)
    assert got == expected
    assert stats.replaced_bytes == replaced
    assert stats.lines == len(expected) and stats.tokens == sum(map(len, expected))


@settings(max_examples=500, deadline=None)
@given(data=fuzz_bytes, block=st.integers(1, 8), max_token=st.integers(1, 12))
def test_giant_tokens_are_cut_but_no_character_is_lost(data: bytes, block: int, max_token: int):
    """With a small token cap, long tokens are cut (bounded memory) yet all text survives, in order."""
    expected, _ = reference(data, 10**9, False)
    got, _ = streamed(data, 10**9, False, block, max_token)
    assert "".join("".join(s) for s in got) == "".join("".join(s) for s in expected)
    longest_allowed = max_token + 4 * block + 4  # cap plus at most one block decoded past it
    assert all(len(w) <= max(longest_allowed, 1) for s in got for w in s)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=fuzz_bytes)
def test_encode_never_crashes_and_counts_tokens(data: bytes, tmp_path_factory):
    """Whole corpus stage on arbitrary bytes: token ids and counts agree with the reference tokens."""
    assume(not data.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")))  # compressed: see test_faults.py
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / "corpus.txt"
    path.write_bytes(data)
    corpus = encode(text_source(path, 7, False), folder / "cache", log=lambda _: None)
    expected, replaced = reference(data, 7, False)
    tokens = [w for s in expected for w in s]
    assert corpus.total_tokens == len(tokens)
    assert corpus.replaced_bytes == replaced
    assert [corpus.words[i] for i in corpus.ids] == tokens
    assert int(corpus.counts.sum()) == len(tokens)
