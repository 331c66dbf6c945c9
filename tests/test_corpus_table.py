"""The compiled path end to end: pieces that come as one UTF-8 buffer (the scanner's) are numbered by the parent's
compiled word table (`scan.WordTable`), mixed with pieces that come as strings, with and without pruning.
The threshold that picks the compiled scanner is lowered so small texts take that path; the cache files must be
byte-identical to the all-strings path and equal the one-shot reference."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_corpus_fuzz import fuzz_bytes
from test_corpus_parallel import HARD_TIMEOUT_S, ROOT, edge_case_corpus, expected_encoding

import sgns.corpus.reading
from sgns.corpus import encode, text_source
from sgns.corpus.scan import WordTable

CACHE_FILES = ("ids.bin", "offsets.npy", "counts.npy", "words.txt")


def cache_files(folder: Path) -> dict:
    return {name: (folder / name).read_bytes() for name in CACHE_FILES}


def encode_files(path: Path, cache: Path, max_len: int, lowercase: bool, chunk: int, max_distinct=None) -> dict:
    source = text_source(path, max_len, lowercase, 1, chunk)
    source.max_distinct = max_distinct
    corpus = encode(source, cache, log=lambda _: None)
    return cache_files(corpus.path)


@settings(max_examples=150, deadline=None)
@given(data=fuzz_bytes, chunk=st.integers(4, 24), max_len=st.integers(1, 5), lowercase=st.booleans(),
       threshold=st.integers(1, 12), max_distinct=st.sampled_from([None, None, 1, 3]))
def test_compiled_pieces_mixed_with_string_pieces_match_the_reference(tmp_path_factory, data: bytes, chunk: int,
                                                                      max_len: int, lowercase: bool,
                                                                      threshold: int, max_distinct):
    """Any mix of compiled and string pieces (the dict hands over to the table mid-corpus, pruned words
    included) writes the all-strings path's files."""
    if data.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")):
        return  # compressed magic: a different reader (test_faults.py)
    folder = tmp_path_factory.mktemp("table")
    path = folder / "c.txt"
    path.write_bytes(data)
    plain = encode_files(path, folder / "strings", max_len, lowercase, chunk, max_distinct)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sgns.corpus.reading, "COMPILED_MIN_CHARS", threshold)  # pieces of `threshold` chars or more
        mixed = encode_files(path, folder / "mixed", max_len, lowercase, chunk, max_distinct)
    assert mixed == plain
    if max_distinct is not None:
        return
    words, ids, offsets, _ = expected_encoding(data, max_len, lowercase)
    assert mixed["words.txt"].decode("utf-8").split("\n")[:-1] == words
    assert np.array_equal(np.frombuffer(mixed["ids.bin"], dtype=np.int32), ids)


def test_pruning_in_the_compiled_table_forgets_the_same_words_as_the_dict(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch):
    rng = np.random.default_rng(3)
    ranks = np.minimum(rng.zipf(1.3, size=60_000), 50_000)
    corpus = tmp_path / "z.txt"
    corpus.write_text("\n".join(" ".join(f"t{r}" for r in ranks[i : i + 20]) for i in range(0, len(ranks), 20)))
    plain = encode_files(corpus, tmp_path / "strings", 10000, False, 4096, max_distinct=500)
    monkeypatch.setattr(sgns.corpus.reading, "COMPILED_MIN_CHARS", 3000)  # most pieces compiled, the last one not
    compiled = encode_files(corpus, tmp_path / "compiled", 10000, False, 4096, max_distinct=500)
    assert compiled == plain
    assert b"\n\n" in plain["words.txt"]  # pruned ids are empty lines: the test saw pruning


words_strategy = st.lists(st.lists(st.text(alphabet=st.sampled_from(list("ab\x00é€😀Σ")), min_size=1, max_size=6),
                                   max_size=30), max_size=8)


@settings(max_examples=300, deadline=None)
@given(pieces=words_strategy)
def test_word_table_numbers_words_as_a_dict_does(pieces):
    """First-seen ids over pieces, exact for words that share prefixes, lengths or bytes."""
    table, index = WordTable(), {}
    for words in pieces:
        distinct = list(dict.fromkeys(words))
        got = table.add(np.frombuffer("".join(w + "\n" for w in distinct).encode(), dtype=np.uint8))
        assert got.tolist() == [index.setdefault(w, len(index)) for w in distinct]
    assert table.words_utf8().decode().split("\n")[:-1] == list(index)


def test_word_table_keeps_every_word_apart_through_rebuilds():
    """200k distinct words (the table is rebuilt several times): every id exact, every word found again."""
    words = [f"w{i}" for i in range(200_000)]
    table = WordTable()
    first = table.add(np.frombuffer("".join(w + "\n" for w in words).encode(), dtype=np.uint8))
    assert first.tolist() == list(range(len(words)))
    again = table.add(np.frombuffer("".join(w + "\n" for w in reversed(words)).encode(), dtype=np.uint8))
    assert again.tolist() == list(range(len(words)))[::-1] and table.ids == len(words)


ENCODE_COMPILED = """
import sys
import sgns.corpus.reading
from sgns.corpus import encode, text_source
sgns.corpus.reading.COMPILED_MIN_CHARS = 400
path, cache, workers, lowercase = sys.argv[1:]
encode(text_source(path, 16, lowercase == "1", int(workers), 1000), cache, log=lambda _: None)
"""


@pytest.mark.parametrize("lowercase", [False, True])
def test_compiled_pieces_from_any_worker_count_give_identical_cache_files(tmp_path: Path, lowercase: bool):
    """Workers send UTF-8 buffers (pieces of 1000 bytes, compiled from 400 characters) through the process pool;
    1, 2 and 3 workers write the same files as the all-strings reader."""
    corpus = edge_case_corpus(tmp_path / "c.txt")
    plain = encode_files(corpus, tmp_path / "strings", 16, lowercase, 1000)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    for workers in (1, 2, 3):
        cache = tmp_path / f"cache{workers}"
        subprocess.run([sys.executable, "-c", ENCODE_COMPILED, str(corpus), str(cache), str(workers),
                        "1" if lowercase else "0"], check=True, timeout=HARD_TIMEOUT_S, env=env)
        (folder,) = [p for p in cache.iterdir() if p.name.startswith("tokens-")]
        assert cache_files(folder) == plain, workers
