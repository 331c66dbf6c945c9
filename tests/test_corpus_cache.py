"""The token, phrase and synthetic caches' names and layout are pinned: an entry written by an earlier version of
sgns must still be found (a changed key silently re-reads every corpus, a changed layout breaks old entries).
Change a pinned value only together with CACHE_FORMAT / PHRASES_FORMAT, on purpose."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List

import numpy as np
import pytest

from sgns.config import SyntheticConfig
from sgns.corpus import encode, text_source
from sgns.corpus.phrases import apply_phrases
from sgns.corpus.synthetic import ensure_synthetic

TEXT = b"The cat sat\non the mat\n\nthe cat ran \xff\n"  # an empty line, an undecodable byte, a word cased twice


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "c.txt"
    path.write_bytes(TEXT)
    return path


@pytest.mark.parametrize("max_len, lowercase, max_distinct, folder", [
    (1000, False, None, "tokens-324c784c0464b104e83a8b59"),
    (1000, True, None, "tokens-1301710a07c0996634e32deb"),
    (2, False, 3, "tokens-3fb073d41f001f73755ada03"),
])
def test_the_token_cache_keeps_its_key_and_files(tmp_path: Path, corpus: Path, max_len: int, lowercase: bool,
                                                 max_distinct, folder: str):
    source = text_source(corpus, max_len, lowercase, 1)
    source.max_distinct = max_distinct
    encoded = encode(source, tmp_path / "cache", log=lambda _: None)
    assert encoded.path.name == folder
    assert sorted(p.name for p in encoded.path.iterdir()) == ["counts.npy", "ids.bin", "meta.json", "offsets.npy",
                                                              "words.txt"]
    meta = json.loads((encoded.path / "meta.json").read_text())
    assert meta == {"tokens": 10, "sentences": meta["sentences"], "distinct": meta["distinct"],
                    "pruned": meta["pruned"], "replaced_bytes": 1, "source": str(corpus)}
    if not lowercase and max_distinct is None:
        assert np.fromfile(encoded.path / "ids.bin", dtype=np.int32).tolist() == [0, 1, 2, 3, 4, 5, 4, 1, 6, 7]
        assert np.load(encoded.path / "offsets.npy").tolist() == [0, 3, 6, 10]
        assert np.load(encoded.path / "counts.npy").tolist() == [1, 2, 1, 1, 2, 1, 1, 1]
        assert (encoded.path / "words.txt").read_bytes() == "The\ncat\nsat\non\nthe\nmat\nran\n\ufffd\n".encode()


def write_entry(folder: Path, words: List[str], ids: List[int], offsets: List[int]) -> None:
    """A cache entry as sgns has written them since CACHE_FORMAT 2, by hand."""
    folder.mkdir(parents=True)
    np.asarray(ids, dtype=np.int32).tofile(folder / "ids.bin")
    np.save(folder / "offsets.npy", np.asarray(offsets, dtype=np.int64))
    np.save(folder / "counts.npy", np.bincount(ids, minlength=len(words)).astype(np.int64))
    (folder / "words.txt").write_text("".join(w + "\n" for w in words), encoding="utf-8")
    (folder / "meta.json").write_text(json.dumps({"tokens": len(ids), "sentences": len(offsets) - 1,
                                                  "distinct": len(words), "pruned": 0, "replaced_bytes": 0,
                                                  "source": "written earlier"}))


def test_an_entry_written_earlier_is_reused_without_reading(tmp_path: Path, corpus: Path):
    write_entry(tmp_path / "cache" / "tokens-324c784c0464b104e83a8b59", ["earlier", "entry"], [0, 1, 1], [0, 3])
    said: List[str] = []
    encoded = encode(text_source(corpus, 1000, False, 1), tmp_path / "cache", log=said.append)
    assert encoded.words == ["earlier", "entry"] and encoded.ids.tolist() == [0, 1, 1]
    assert encoded.counts.tolist() == [1, 2] and encoded.total_tokens == 3
    assert said == [f"corpus: reusing token ids cached in {tmp_path / 'cache' / 'tokens-324c784c0464b104e83a8b59'}"]


def test_the_phrase_cache_keeps_its_key(tmp_path: Path, corpus: Path):
    encoded = encode(text_source(corpus, 1000, False, 1), tmp_path / "cache", log=lambda _: None)
    joined = apply_phrases(encoded, 1, 0.0, 1, tmp_path / "cache", log=lambda _: None)
    # PHRASES_FORMAT 2 (issue 27): the joined stream's ids in first-seen order (1: phrases-3d12a09b2fc5bd1be2601761)
    assert joined.path.name == "phrases-14509cbc3ec2a32246ba079a"


def test_the_synthetic_corpus_keeps_its_folder(tmp_path: Path):
    settings = SyntheticConfig(relations=2, pairs=3, filler_words=10, sentences=50, seed=0)
    text, analogies = ensure_synthetic(settings, tmp_path / "cache")
    assert text.parent.name == "synthetic-ec83654288b70fe7" and analogies.parent == text.parent
    assert (text.name, analogies.name) == ("corpus.txt", "planted_analogies.txt")


def _resident_kib(path: Path) -> int:
    """KiB of `path`'s memory mappings resident in this process (/proc/self/smaps)."""
    resident, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            fields = line.split()
            if fields and "-" in fields[0] and not fields[0].endswith(":"):
                inside = len(fields) > 5 and fields[5] == str(path)
            elif inside and fields[0] == "Rss:":
                resident += int(fields[1])
    return resident


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="reads Linux's /proc/self/smaps")
def test_offsets_and_counts_are_mapped_and_a_pass_leaves_their_pages_out_of_memory(tmp_path: Path):
    """Peak memory (issue 32): 8 bytes a sentence and a distinct word (110 MB at 200M words) stayed resident for
    the whole run. The offsets are memory-mapped like the ids, and read in pieces whose pages are dropped again;
    once the vocabulary is built, the counts are the cache file's, mapped."""
    from sgns.corpus import map_counts, release_pages
    from sgns.pipelines.plan import span_starts
    from sgns.pipelines.span import TokenSpans

    path = tmp_path / "c.txt"
    path.write_bytes(b"".join(b"w%d " % (i % 5000) * (3 + i % 7) + b"\n" for i in range(60_000)))
    corpus = encode(text_source(path, 1000, False, 1), tmp_path / "cache", log=lambda _: None)
    offsets_file, counts_file = corpus.path / "offsets.npy", corpus.path / "counts.npy"
    assert isinstance(corpus.offsets, np.memmap)
    in_memory, counts = np.array(corpus.offsets), corpus.counts.copy()  # reads every page of the offsets
    assert _resident_kib(offsets_file) >= 4 * (in_memory.nbytes // 4096 - 1)
    release_pages(corpus.offsets)
    assert _resident_kib(offsets_file) == 0
    map_counts(corpus)
    assert isinstance(corpus.counts, np.memmap) and np.array_equal(corpus.counts, counts)
    release_pages(corpus.counts)
    assert _resident_kib(counts_file) == 0
    spans = list(TokenSpans(corpus, 10_000, 1)((0, 0, 0)))
    assert len(spans) > 10 and _resident_kib(offsets_file) == 0  # each span's piece dropped after reading it
    for span in spans:  # the same sentence starts as from the offsets in memory
        lo = int(span.words_before)
        hi = lo + len(span.ids)
        assert np.array_equal(span.starts, span_starts(in_memory, lo, hi))
