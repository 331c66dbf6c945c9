import gzip
import os
from pathlib import Path
from typing import List

import numpy as np
import pytest

from sgns.corpus import encode, text_source
from sgns.corpus.phrases import PhraseStream, phrase_stream
from sgns.corpus.reading import CHUNK_BYTES
from sgns.errors import SGNSError
from sgns.vocab import OLD_TIES, Vocabulary, WordList, checkpoint_words, tie_rule

WORDS = ["c", "a", "b", "d", "e"]  # corpus ids: first-seen order
COUNTS = np.array([5, 7, 5, 1, 9])
SHARED_DATA = Path(os.environ.get("SGNS_DATA_DIR", Path(__file__).resolve().parent.parent.parent / "shared" / "data"))
GUTENBERG = SHARED_DATA / "corpora" / "gutenberg_dev.txt.gz"


def test_sorted_by_count_ties_first_seen_later_first_and_min_count():
    vocab = Vocabulary.build(["a", "b", "c", "d", "e"], np.array([5, 7, 5, 1, 9]), min_count=5)
    assert vocab.words == ["e", "b", "c", "a"]  # d (1) dropped; a and c tie at 5 -> c, seen later, first (gensim)
    assert vocab.counts.tolist() == [9, 7, 5, 5]
    assert vocab.index["c"] == 2 and "d" not in vocab and vocab.ties == "gensim"
    old = Vocabulary.build(["a", "b", "c", "d", "e"], np.array([5, 7, 5, 1, 9]), min_count=5, ties=OLD_TIES)
    assert old.words == ["e", "b", "a", "c"]  # the rule of checkpoints written before: alphabetical


def test_max_vocab_size_keeps_most_frequent():
    vocab = Vocabulary.build(WORDS, COUNTS, min_count=1, max_vocab_size=2)
    assert vocab.words == ["e", "a"]


def test_remap_sends_dropped_words_to_minus_one():
    vocab = Vocabulary.build(WORDS, COUNTS, min_count=5)
    table = vocab.remap(len(WORDS))
    assert table.tolist() == [3, 1, 2, -1, 0]


def test_no_word_reaches_min_count_is_a_clear_error():
    with pytest.raises(SGNSError, match="min_count=100"):
        Vocabulary.build(WORDS, COUNTS, min_count=100)


def test_save_load_and_state_dict_round_trip(tmp_path):
    vocab = Vocabulary.build(["né", "x"], np.array([3, 2]), min_count=1)
    vocab.save(tmp_path / "vocab.txt")
    assert (tmp_path / "vocab.txt").read_text(encoding="utf-8") == "né 3\nx 2\n"
    loaded = Vocabulary.load(tmp_path / "vocab.txt")
    assert loaded.words == vocab.words and loaded.counts.tolist() == [3, 2]
    again = Vocabulary.from_state_dict(vocab.state_dict())
    assert again.words == vocab.words and again.counts.tolist() == [3, 2]


def test_order_equals_sorting_by_count_then_later_first_seen_on_many_ties():
    rng = np.random.default_rng(3)
    words = [f"w{i:x}" for i in rng.permutation(20000)]
    counts = rng.integers(0, 40, size=len(words))
    vocab = Vocabulary.build(words, counts, min_count=5, max_vocab_size=15000)
    expected = sorted((i for i in range(len(words)) if counts[i] >= 5), key=lambda i: (-counts[i], -i))
    assert vocab.words == [words[i] for i in expected[:15000]]
    assert vocab.remap(len(words)).tolist() == vocab.remap(words).tolist()
    old = Vocabulary.build(words, counts, min_count=5, max_vocab_size=15000, ties=OLD_TIES)
    expected = sorted((i for i in range(len(words)) if counts[i] >= 5), key=lambda i: (-counts[i], words[i]))
    assert old.words == [words[i] for i in expected[:15000]]


def test_tie_rule_travels_in_checkpoints_and_old_ones_are_alphabetical():
    vocab = Vocabulary.build(WORDS, COUNTS, min_count=1)
    state = vocab.state_dict()
    assert tie_rule(state) == "gensim" and Vocabulary.from_state_dict(state).ties == "gensim"
    del state["ties"]  # as every checkpoint written before the gensim order
    assert tie_rule(state) == OLD_TIES and tie_rule(None) == "gensim"
    with pytest.raises(ValueError, match="ties"):
        Vocabulary.build(WORDS, COUNTS, ties="random")


def test_remap_of_a_loaded_vocabulary_takes_the_corpus_words(tmp_path):
    Vocabulary.build(WORDS, COUNTS, min_count=5).save(tmp_path / "vocab.txt")
    loaded = Vocabulary.load(tmp_path / "vocab.txt")
    assert loaded.remap(WORDS).tolist() == [3, 1, 2, -1, 0]
    with pytest.raises(SGNSError, match="pass the corpus's words"):
        loaded.remap(len(WORDS))


def test_build_keeps_words_that_hold_a_newline_and_the_index_follows_the_words():
    vocab = Vocabulary.build(["a\nb", "c", "d"], np.array([5, 9, 1]), min_count=2)
    assert vocab.words == ["c", "a\nb"] and vocab.index == {"c": 0, "a\nb": 1}
    assert "d" not in vocab and vocab.remap(3).tolist() == [1, 0, -1]


# ------------------------------------------------------------------------------- the same order as gensim 4


def gensim_index_to_key(sentences: List[List[str]], min_count: int, max_final_vocab=None) -> List[str]:
    """gensim's vocabulary of `sentences` (build_vocab only: nothing is trained)."""
    models = pytest.importorskip("gensim.models")
    model = models.Word2Vec(vector_size=8, min_count=min_count, max_final_vocab=max_final_vocab, workers=1)
    model.build_vocab(sentences)
    return list(model.wv.index_to_key)


def sgns_vocabulary(path: Path, cache: Path, min_count: int, workers: int = 1, chunk_bytes: int = CHUNK_BYTES,
                    max_vocab_size=None) -> Vocabulary:
    corpus = encode(text_source(path, 10000, False, workers, chunk_bytes), cache, log=lambda _: None)
    return Vocabulary.build(corpus.words, corpus.counts, min_count, max_vocab_size)


def lines_of(path: Path) -> List[List[str]]:
    return [line.split() for line in path.read_text(encoding="utf-8").split("\n")]


@pytest.mark.skipif(not GUTENBERG.is_file(), reason=f"needs the shared data ({GUTENBERG}; set SGNS_DATA_DIR)")
def test_vocab_equals_gensim_index_to_key_on_real_text(tmp_path: Path):
    """The first 40,000 lines of the dev corpus (~400k words): most of its vocabulary ties with other words."""
    text = tmp_path / "gutenberg.txt"
    with gzip.open(GUTENBERG, "rt", encoding="utf-8") as f, open(text, "w", encoding="utf-8") as out:
        for _, line in zip(range(40000), f, strict=False):
            out.write(line)
    sentences = lines_of(text)
    for min_count in (5, 2):
        vocab = sgns_vocabulary(text, tmp_path / "cache", min_count)
        expected = gensim_index_to_key(sentences, min_count)
        assert len(vocab) == len(expected) > 5000
        assert vocab.words == expected
        tied = len(vocab) - len(np.unique(vocab.counts))
        assert tied > 0.8 * len(vocab)  # the test is about ties: most words share their count with another
    # A cut inside a tie keeps the words gensim's restrict_vocab keeps (gensim's max_final_vocab cuts no tie)
    cut = sgns_vocabulary(text, tmp_path / "cache", 2, max_vocab_size=4321)
    assert cut.words == expected[:4321] and cut.counts[-1] == cut.counts[-2]


def generated_text(path: Path, tokens: int, seed: int = 0) -> Path:
    """Zipf text over random-looking words (their first-seen order is far from alphabetical), long and short
    lines: many words of equal count."""
    rng = np.random.default_rng(seed)
    n_words = 30000
    names = [f"{rng.integers(1 << 30):x}" for _ in range(n_words)]
    p = 1.0 / (np.arange(n_words) + 1.0)
    ids = rng.choice(n_words, size=tokens, p=p / p.sum())
    lengths = rng.integers(1, 30, size=tokens // 10)
    out, at = [], 0
    for n in lengths.tolist():
        out.append(" ".join(names[i] for i in ids[at : at + n].tolist()))
        at += n
        if at >= tokens:
            break
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return path


def test_vocab_equals_gensim_when_read_in_parallel_pieces_and_from_a_warm_cache(tmp_path: Path):
    """Three processes each tokenise their own 1 MiB pieces (the compiled scanner), which the reader merges; the
    second read comes from the token cache. Both keep gensim's order."""
    text = generated_text(tmp_path / "generated.txt", 600_000)
    assert text.stat().st_size > 3 * (1 << 20)
    expected = gensim_index_to_key(lines_of(text), 3)
    cache = tmp_path / "cache"
    for _ in ("cold", "warm"):
        vocab = sgns_vocabulary(text, cache, 3, workers=3, chunk_bytes=1 << 20)
        assert vocab.words == expected
    assert len(list(cache.glob("tokens-*"))) == 1
    assert sgns_vocabulary(text, tmp_path / "one-process", 3, workers=1).words == expected


def test_vocab_after_phrases_equals_gensim_on_the_joined_text():
    """A phrase ranks among its ties where the joined text first holds it, and a word first seen inside one where
    it first stands alone, as gensim reading the joined text: here 400 words, "new_york" and a lone "york" all
    occur 10 times; the phrase from the first sentence on, the lone "york" only in the last ones."""
    rng = np.random.default_rng(5)
    fillers = [f"v{i}" for i in rng.permutation(400).tolist()] * 10
    rng.shuffle(fillers)
    sentences = [fillers[k : k + 8] for k in range(0, len(fillers), 8)]
    for k in range(10):
        sentences[k * 40][0:0] = ["new", "york"]
        sentences[-1 - k].append("york")
    index: dict = {}
    ids = np.asarray([index.setdefault(w, len(index)) for s in sentences for w in s], dtype=np.int32)
    offsets = np.concatenate(([0], np.cumsum([len(s) for s in sentences]))).astype(np.int64)
    stream = PhraseStream(ids, offsets, list(index), np.bincount(ids, minlength=len(index)).astype(np.int64))
    joined = phrase_stream(stream, 1, 10.0, 5, log=lambda _: None)
    words, at = joined.words, joined.offsets.tolist()
    joined_sentences = [[words[i] for i in joined.ids[a:b].tolist()] for a, b in zip(at[:-1], at[1:], strict=True)]
    assert sum(s.count("new_york") for s in joined_sentences) == 10
    vocab = Vocabulary.build(joined.words, joined.counts, 5)
    assert vocab.words == gensim_index_to_key(joined_sentences, 5)
    assert vocab.words[-1] == "new_york" and vocab.words[0] == "york"  # seen first; seen last


def test_word_list_holds_words_as_bytes_and_reads_them_back() -> None:
    words = ["the", "né", "", "a\nb", "日本", "x y", "z"]
    compact = WordList.from_strings(words)
    assert len(compact) == 7 and list(compact) == words and compact == words and compact[-1] == "z"
    assert [compact[i] for i in range(7)] == words and compact[np.int64(4)] == "日本"
    assert compact[1:5] == words[1:5] and compact[::3] == words[::3] and compact[5:2] == []
    assert compact.take(np.array([4, 0, 2, 3])) == ["日本", "the", "", "a\nb"]
    assert WordList.from_strings([]) == [] and list(WordList.from_strings([])) == []
    lines = np.frombuffer("".join(w + "\n" for w in ["b", "né", "ccc"]).encode(), dtype=np.uint8)
    assert WordList.from_lines(lines) == ["b", "né", "ccc"]
    with pytest.raises(IndexError):
        compact[7]
    many = [f"w{i}" for i in range(150_000)] + ["é"]  # more than one decoded block
    assert list(WordList.from_strings(many)) == many


def test_a_vocabulary_built_from_compact_words_equals_one_built_from_strings() -> None:
    words = ["a", "b", "c", "d", "e"]
    counts = np.array([5, 7, 5, 1, 9])
    for ties in ("gensim", OLD_TIES):
        assert Vocabulary.build(WordList.from_strings(words), counts, 5, ties=ties).words \
            == Vocabulary.build(words, counts, 5, ties=ties).words


def test_a_checkpoint_holds_the_words_as_tensors_and_an_old_list_still_loads(tmp_path) -> None:
    """The vocabulary's words go into a checkpoint as two tensors, not a pickled list of strings (docs/memory.md);
    checkpoints written before hold a list of str under "words", which loads as before."""
    import torch

    vocab = Vocabulary.build(["né", "x", "y"], np.array([3, 2, 9]), min_count=1)
    state = vocab.state_dict()
    assert set(state) == {"words_utf8", "word_bounds", "counts", "ties"}
    assert state["words_utf8"].dtype == torch.uint8 and state["word_bounds"].dtype == torch.int64
    torch.save({"vocab": state}, tmp_path / "new.pt")
    loaded = torch.load(tmp_path / "new.pt", weights_only=True)["vocab"]
    assert checkpoint_words(loaded) == ["y", "né", "x"] and Vocabulary.from_state_dict(loaded).words == vocab.words
    old = {"words": ["y", "né", "x"], "counts": torch.tensor([9, 3, 2])}  # the format before issue 32
    torch.save({"vocab": old}, tmp_path / "old.pt")
    again = Vocabulary.from_state_dict(torch.load(tmp_path / "old.pt", weights_only=True)["vocab"])
    assert again.words == vocab.words and again.index == {"y": 0, "né": 1, "x": 2} and again.ties == OLD_TIES
