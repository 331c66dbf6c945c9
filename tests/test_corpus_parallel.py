"""Reading on every core: the same token ids, counts, sentence offsets and cache bytes for 1, 2 or 3 workers,
equal to a one-shot single-thread reference (decode everything, lines on "\\n", str.split, first-seen ids)."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_corpus_fuzz import fuzz_bytes, reference

from sgns.corpus import encode, file_ranges, iter_chunks, text_source, tokenise

HARD_TIMEOUT_S = 180  # multi-process reads run in a child process killed after this: a hang fails the test
ROOT = Path(__file__).resolve().parents[1]


def edge_case_corpus(path: Path, lines: int = 3000) -> Path:
    """Many small pieces' worth of text with what breaks parallel readers near every cut."""
    rng = np.random.default_rng(5)
    words = ["the", "Σίσυφος", "ΟΔΟΣ", "naïve", "€uro", "😀x", "a\u00a0b", "x\u2028y", "İstanbul", "w1", "w2"]
    out = []
    for i in range(lines):
        k = int(rng.integers(0, 30))
        line = " ".join(words[j] for j in rng.integers(0, len(words), size=k))
        kind = i % 11
        if kind == 0:
            line += "\r"  # CRLF
        elif kind == 1:
            line = ""  # empty line
        elif kind == 2:
            line = line + " " + " ".join(f"long{j % 7}" for j in range(int(rng.integers(20, 90))))  # > max_len
        elif kind == 3:
            line = "\t \x0b "  # whitespace only
        out.append(line.encode())
        if kind == 4:
            out[-1] += b" bad\xff\xfebytes \xe2\x82 cut\xc3"  # undecodable bytes, a cut multi-byte character
        if kind == 5:
            out[-1] += b" nul\x00inside"
    path.write_bytes(b"\n".join(out) + b"\nno final newline \xce\xa3")
    return path


def expected_encoding(data: bytes, max_len: int, lowercase: bool) -> Tuple[List[str], np.ndarray, np.ndarray, int]:
    sentences, replaced = reference(data, max_len, lowercase)
    index: dict = {}
    ids = [index.setdefault(w, len(index)) for s in sentences for w in s]
    offsets = np.concatenate(([0], np.cumsum([len(s) for s in sentences]))).astype(np.int64)
    return list(index), np.asarray(ids, dtype=np.int32), offsets, replaced


ENCODE = """
import sys
from sgns.corpus import encode, text_source
path, cache, workers, max_len, lowercase, chunk = sys.argv[1:]
source = text_source(path, int(max_len), lowercase == "1", int(workers), int(chunk))
encode(source, cache, log=lambda _: None)
"""


def encode_in_child(path: Path, cache: Path, workers: int, max_len: int, lowercase: bool, chunk: int) -> Path:
    """encode() in a fresh interpreter under a hard timeout; the cache entry folder it wrote."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    subprocess.run([sys.executable, "-c", ENCODE, str(path), str(cache), str(workers), str(max_len),
                    "1" if lowercase else "0", str(chunk)], check=True, timeout=HARD_TIMEOUT_S, env=env)
    (folder,) = [p for p in cache.iterdir() if p.name.startswith("tokens-")]
    return folder


@pytest.mark.parametrize("lowercase", [False, True])
def test_any_worker_count_gives_the_reference_ids_and_identical_cache_files(tmp_path: Path, lowercase: bool):
    corpus = edge_case_corpus(tmp_path / "c.txt")
    data = corpus.read_bytes()
    chunk = 1000  # ~100 pieces, cut at line ends, inside long lines and next to multi-byte characters
    words, ids, offsets, replaced = expected_encoding(data, 16, lowercase)
    files = {}
    for workers in (1, 2, 3):
        folder = encode_in_child(corpus, tmp_path / f"cache{workers}", workers, 16, lowercase, chunk)
        files[workers] = {p.name: p.read_bytes() for p in folder.iterdir() if p.name != "meta.json"}
        meta = json.loads((folder / "meta.json").read_text())
        assert meta["replaced_bytes"] == replaced > 0
        assert (folder / "words.txt").read_text(encoding="utf-8").split("\n")[:-1] == words
        assert np.array_equal(np.fromfile(folder / "ids.bin", dtype=np.int32), ids)
        assert np.array_equal(np.load(folder / "offsets.npy"), offsets)
        assert np.array_equal(np.load(folder / "counts.npy"), np.bincount(ids, minlength=len(words)))
    assert files[1] == files[2] == files[3]


def test_compressed_file_gives_the_same_cache_as_the_plain_one(tmp_path: Path):
    corpus = edge_case_corpus(tmp_path / "c.txt", lines=800)
    plain = encode_in_child(corpus, tmp_path / "plain", 2, 10, False, 700)
    for opener, suffix in ((gzip.open, ".gz"), (bz2.open, ".bz2")):
        packed = tmp_path / f"c.txt{suffix}"
        with opener(packed, "wb") as f:
            f.write(corpus.read_bytes())
        folder = encode_in_child(packed, tmp_path / f"cache{suffix}", 2, 10, False, 700)
        for name in ("ids.bin", "offsets.npy", "counts.npy", "words.txt"):
            assert (folder / name).read_bytes() == (plain / name).read_bytes(), (suffix, name)


@settings(max_examples=300, deadline=None)
@given(data=fuzz_bytes, chunk=st.integers(4, 24), max_token=st.integers(1, 40))
def test_file_ranges_cut_where_the_stream_is_cut(tmp_path_factory, data: bytes, chunk: int, max_token: int):
    """Workers reading byte ranges of a plain file get exactly the pieces a decompressing stream yields."""
    path = tmp_path_factory.mktemp("ranges") / "c.txt"
    path.write_bytes(data)
    pieces = list(iter_chunks(io.BytesIO(data), chunk, max_token))
    ranges = list(file_ranges(path, len(data), chunk, max_token))
    assert [data[a:b] for a, b in ranges] == pieces
    assert b"".join(pieces) == data and all(pieces)


@settings(max_examples=100, deadline=None)
@given(data=fuzz_bytes, chunk=st.integers(4, 24), max_len=st.integers(1, 5), lowercase=st.booleans())
def test_in_process_encode_matches_reference_for_any_piece_size(tmp_path_factory, data: bytes, chunk: int,
                                                                 max_len: int, lowercase: bool):
    if data.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")):
        return  # compressed magic: a different reader (test_faults.py)
    folder = tmp_path_factory.mktemp("enc")
    path = folder / "c.txt"
    path.write_bytes(data)
    corpus = encode(text_source(path, max_len, lowercase, 1, chunk), folder / "cache", log=lambda _: None)
    words, ids, offsets, replaced = expected_encoding(data, max_len, lowercase)
    assert corpus.words == words and corpus.replaced_bytes == replaced
    assert np.array_equal(np.asarray(corpus.ids), ids) and np.array_equal(corpus.offsets, offsets)


def test_tokenise_keeps_nul_as_a_word_character_in_dataset_text():
    piece = tokenise("a\x00b c\n\nd", lowercase=False)
    assert [piece.words[i] for i in piece.ids] == ["a\x00b", "c", "d"]
    assert piece.lines.tolist() == [2, 0, 1]


def test_hugging_face_rows_read_by_parallel_map_match_the_reference(tmp_path: Path):
    pytest.importorskip("datasets")
    texts = [f"Row {i} ΣΑΣ word{i % 13}\nsecond line {i % 5}\r\n" if i % 4 else "" for i in range(2500)]
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    data = "\n".join(t for t in texts if t).encode()
    expected = expected_encoding(data, 3, True)
    script = f"""
import sys, json, numpy as np
from sgns.config import CorpusConfig
from sgns.corpus import encode, hf_source
cfg = CorpusConfig(kind="hf", data_files=[{str(rows)!r}], max_sentence_len=3, lowercase=True,
                   read_workers=int(sys.argv[1]))
c = encode(hf_source(cfg), sys.argv[2], log=lambda _: None)
np.save(sys.argv[2] + "/ids.npy", np.asarray(c.ids)); np.save(sys.argv[2] + "/offsets.npy", c.offsets)
print(json.dumps(c.words))
"""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "HF_DATASETS_CACHE": str(tmp_path / "hf")}
    for workers in (1, 2):
        out = tmp_path / f"out{workers}"
        done = subprocess.run([sys.executable, "-c", script, str(workers), str(out)], check=True, env=env,
                              timeout=HARD_TIMEOUT_S, capture_output=True, text=True)
        assert json.loads(done.stdout.strip().splitlines()[-1]) == expected[0]
        assert np.array_equal(np.load(out / "ids.npy"), expected[1])
        assert np.array_equal(np.load(out / "offsets.npy"), expected[2])


spaces = "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2005\u200a\u2028\u2029\u202f\u205f\u3000"
texts = st.text(alphabet=st.sampled_from(list(spaces) + list("aAbΣσς\x00\ufffdé€😀\u200b\u180e")), max_size=200)


@settings(max_examples=1000, deadline=None)
@given(text=texts, lowercase=st.booleans())
def test_compiled_scanner_gives_the_same_piece_as_str_split(text: str, lowercase: bool):
    """sgns.corpus.scan (used for big pieces) against the dict-and-str.split path, whitespace of every kind."""
    slow, fast = tokenise(text, lowercase, compiled=False), tokenise(text, lowercase, compiled=True)
    assert fast.words == slow.words
    assert fast.ids.tolist() == slow.ids.tolist() and fast.lines.tolist() == slow.lines.tolist()
    assert [slow.words[i] for i in slow.ids] == (text.lower() if lowercase else text).split()


def test_counting_with_a_cap_on_distinct_words_prunes_rare_ones_as_gensim_does(tmp_path: Path):
    """corpus.max_distinct_words: at most that many words held; the frequent ones keep exact counts, pruned ids
    keep count 0 (never in a vocabulary), and the result is the same for any worker count."""
    rng = np.random.default_rng(2)
    ranks = np.minimum(rng.zipf(1.3, size=60_000), 50_000)
    corpus = tmp_path / "z.txt"
    corpus.write_text("\n".join(" ".join(f"t{r}" for r in ranks[i : i + 20]) for i in range(0, len(ranks), 20)))
    full = encode(text_source(corpus, 10000, False, 1, 4096), tmp_path / "full", log=lambda _: None)
    capped_source = text_source(corpus, 10000, False, 1, 4096)
    capped_source.max_distinct = 500
    capped = encode(capped_source, tmp_path / "capped", log=lambda _: None)
    assert len(full.words) > 2000 and capped.total_tokens == full.total_tokens
    assert len(capped.words) > len(full.words)  # pruned ids stay, words seen again get new ids
    exact = dict(zip(full.words, full.counts.tolist(), strict=True))
    kept = {w: c for w, c in zip(capped.words, capped.counts.tolist(), strict=True) if c}
    assert len(kept) < len(full.words)
    for w in ("t1", "t2", "t3", "t10"):
        assert kept[w] == exact[w]  # frequent words are never pruned
    assert all(c <= exact[w] for w, c in kept.items())
    assert all(capped.counts[i] == 0 for i, w in enumerate(capped.words) if w == "")
    assert int(capped.counts.sum()) == sum(kept.values())
