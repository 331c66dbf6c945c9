import numpy as np
import pytest

from sgns.errors import SGNSError
from sgns.vocab import Vocabulary

WORDS = ["c", "a", "b", "d", "e"]
COUNTS = np.array([5, 7, 5, 1, 9])


def test_sorted_by_count_ties_alphabetical_and_min_count():
    vocab = Vocabulary.build(WORDS, COUNTS, min_count=5)
    assert vocab.words == ["e", "a", "b", "c"]  # d (1) dropped; b and c tie at 5 -> alphabetical
    assert vocab.counts.tolist() == [9, 7, 5, 5]
    assert vocab.index["b"] == 2 and "d" not in vocab


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


def test_order_equals_sorting_by_count_then_word_on_many_ties():
    rng = np.random.default_rng(3)
    words = [f"w{i:x}" for i in rng.permutation(20000)]
    counts = rng.integers(0, 40, size=len(words))
    vocab = Vocabulary.build(words, counts, min_count=5, max_vocab_size=15000)
    expected = sorted((i for i in range(len(words)) if counts[i] >= 5), key=lambda i: (-counts[i], words[i]))
    assert vocab.words == [words[i] for i in expected[:15000]]
    assert vocab.remap(len(words)).tolist() == vocab.remap(words).tolist()


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
