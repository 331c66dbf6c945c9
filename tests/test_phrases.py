"""word2phrase on token ids, checked against a plain-Python reference and against gensim's Phrases."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import List

import numpy as np
import pytest

from sgns.corpus import encode, text_source
from sgns.corpus.phrases import PhraseStream, apply_phrases, check_settings, phrase_pass, phrase_stream
from sgns.errors import SGNSError


def reference_word2phrase(sentences: List[List[str]], threshold: float, min_count: int) -> List[List[str]]:
    """The C tool's rule, written token by token on strings (the slow, obvious way)."""
    unigrams = Counter(w for s in sentences for w in s)
    bigrams = Counter((a, b) for s in sentences for a, b in zip(s, s[1:], strict=False))
    total = sum(unigrams.values())
    out = []
    for s in sentences:
        joined: List[str] = []
        previous_joined = False
        for i, word in enumerate(s):
            if i > 0 and not previous_joined:
                a, b, ab = unigrams[s[i - 1]], unigrams[word], bigrams[(s[i - 1], word)]
                ok = a >= min_count and b >= min_count and ab >= min_count
                if ok and (ab - min_count) / a / b * total > threshold:
                    joined[-1] = joined[-1] + "_" + word
                    previous_joined = True
                    continue
            previous_joined = False
            joined.append(word)
        out.append(joined)
    return out


def to_stream(sentences: List[List[str]]) -> PhraseStream:
    index: dict = {}
    ids = [index.setdefault(w, len(index)) for s in sentences for w in s]
    offsets = np.concatenate(([0], np.cumsum([len(s) for s in sentences]))).astype(np.int64)
    ids_arr = np.asarray(ids, dtype=np.int32)
    return PhraseStream(ids_arr, offsets, list(index), np.bincount(ids_arr, minlength=len(index)).astype(np.int64))


def to_sentences(stream: PhraseStream) -> List[List[str]]:
    words, ids, off = stream.words, stream.ids.tolist(), stream.offsets.tolist()
    return [[words[i] for i in ids[a:b]] for a, b in zip(off[:-1], off[1:], strict=True)]


def planted_corpus(seed: int, sentences: int = 400, vocab: int = 60) -> List[List[str]]:
    """Zipf words with a few planted collocations (some of three words) and uneven sentence lengths."""
    rng = np.random.default_rng(seed)
    p = 1.0 / (np.arange(vocab) + 1.0)
    p /= p.sum()
    planted = [["new", "york"], ["los", "angeles"], ["new", "york", "times"], ["of", "the"]]
    out = []
    for _ in range(sentences):
        words = [f"w{i}" for i in rng.choice(vocab, size=int(rng.integers(1, 15)), p=p)]
        for _ in range(int(rng.integers(0, 3))):
            at = int(rng.integers(0, len(words) + 1))
            words[at:at] = planted[int(rng.integers(0, len(planted)))]
        out.append(words)
    return out


def check_consistent(stream: PhraseStream) -> None:
    assert stream.ids.dtype == np.int32
    assert stream.offsets[0] == 0 and stream.offsets[-1] == len(stream.ids)
    assert np.all(np.diff(stream.offsets) > 0)
    np.testing.assert_array_equal(stream.counts, np.bincount(stream.ids, minlength=len(stream.words)))
    assert len(set(stream.words)) == len(stream.words)  # one id per string


def test_new_york_joins_and_the_greedy_rule_takes_the_left_pair():
    sentences = [["new", "york", "city"]] * 20 + [["in", "new", "york"]] * 20 + [["x", "y"]] * 3
    out = to_sentences(phrase_pass(to_stream(sentences), threshold=1.0, min_count=5)[0])
    # "new york" and "york city" both score high; left to right, new_york wins and york cannot join again.
    assert out[0] == ["new_york", "city"]
    assert out[20] == ["in_new", "york"] or out[20] == ["in", "new_york"]
    assert out[-1] == ["x", "y"]  # below min_count: never joined
    assert out == reference_word2phrase(sentences, 1.0, 5)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("threshold,min_count", [(2.0, 3), (10.0, 5), (0.5, 1), (50.0, 2)])
def test_one_pass_matches_the_reference(seed, threshold, min_count):
    sentences = planted_corpus(seed)
    stream, report = phrase_pass(to_stream(sentences), threshold, min_count)
    expected = reference_word2phrase(sentences, threshold, min_count)
    assert to_sentences(stream) == expected
    check_consistent(stream)
    assert report.joins == sum(w.count("_") for s in expected for w in s)


@pytest.mark.parametrize("seed", range(4))
def test_passes_build_longer_phrases_like_the_reference_applied_twice(seed):
    sentences = planted_corpus(seed, sentences=800)
    stream = phrase_stream(to_stream(sentences), passes=2, threshold=3.0, min_count=3, log=lambda m: None)
    expected = reference_word2phrase(reference_word2phrase(sentences, 3.0, 3), 3.0, 3)
    assert to_sentences(stream) == expected
    check_consistent(stream)
    assert any(w.count("_") >= 2 for s in expected for w in s)  # the test does exercise longer phrases
    # Joining never loses or reorders a token.
    assert [t for s in to_sentences(stream) for w in s for t in w.split("_")] == [w for s in sentences for w in s]


def _scores(sentences, min_count):
    unigrams = Counter(w for s in sentences for w in s)
    bigrams = Counter((a, b) for s in sentences for a, b in zip(s, s[1:], strict=False))
    total = sum(unigrams.values())
    return [(c - min_count) / unigrams[a] / unigrams[b] * total for (a, b), c in bigrams.items()]


@pytest.mark.parametrize("seed", range(4))
def test_matches_gensim_phrases_with_the_threshold_rescaled(seed):
    """gensim scores with len(vocab) (unigram + bigram types) where word2phrase has the total word count."""
    from gensim.models.phrases import Phrases

    sentences = planted_corpus(seed, sentences=600)
    threshold, min_count = 4.3, 3
    # No score sits so close to the threshold that float rounding could decide it.
    assert all(abs(s - threshold) > 1e-6 * threshold for s in _scores(sentences, min_count))
    model = Phrases(sentences, min_count=min_count, threshold=1.0, delimiter="_")
    assert model.corpus_word_count == sum(map(len, sentences))
    model.threshold = threshold * len(model.vocab) / model.corpus_word_count
    stream, _ = phrase_pass(to_stream(sentences), threshold, min_count)
    assert to_sentences(stream) == [model[s] for s in sentences]


def test_an_existing_token_with_the_phrase_spelling_shares_its_id():
    sentences = [["new", "york"]] * 10 + [["new_york", "x0"], ["new_york", "x1"]]
    stream, report = phrase_pass(to_stream(sentences), threshold=0.0, min_count=2)
    check_consistent(stream)
    assert to_sentences(stream)[0] == ["new_york"]
    assert stream.counts[stream.words.index("new_york")] == 12
    assert report.phrase_types >= 1


def test_nothing_to_join_returns_the_stream_unchanged():
    for sentences in ([["a"]], [["a", "b"]], [["a"], ["b"], ["a"]]):
        stream = to_stream(sentences)
        out, report = phrase_pass(stream, threshold=0.0, min_count=1)
        assert report.joins == 0 or sentences == [["a", "b"]]
        check_consistent(out)
    # A pair split by a sentence end is not a pair.
    sentences = [["a"], ["b"]] * 50
    out, report = phrase_pass(to_stream(sentences), threshold=0.0, min_count=1)
    assert report.joins == 0 and to_sentences(out) == sentences


@pytest.mark.parametrize("bad", [
    dict(passes=-1), dict(passes=1.5), dict(threshold=-1.0), dict(threshold=float("nan")),
    dict(threshold=float("inf")), dict(min_count=0), dict(min_count=-3),
])
def test_bad_settings_are_one_clear_error(bad):
    settings = dict(passes=1, threshold=100.0, min_count=5) | bad
    with pytest.raises(SGNSError, match=r"corpus\.phrase"):
        check_settings(**settings)


def test_apply_phrases_caches_by_settings(tmp_path: Path):
    sentences = planted_corpus(0, sentences=1000)
    text = tmp_path / "c.txt"
    text.write_text("\n".join(" ".join(s) for s in sentences) + "\n")
    cache = tmp_path / "cache"
    corpus = encode(text_source(text, 10000, False), cache, log=lambda m: None)
    assert apply_phrases(corpus, 0, 100.0, 5, cache) is corpus

    messages: List[str] = []
    first = apply_phrases(corpus, 2, 3.0, 3, cache, log=messages.append)
    assert any("pass 2/2" in m for m in messages)
    expected = reference_word2phrase(reference_word2phrase(sentences, 3.0, 3), 3.0, 3)
    got = PhraseStream(np.asarray(first.ids), first.offsets, first.words, first.counts)
    assert to_sentences(got) == expected
    assert first.total_tokens == sum(map(len, expected))

    messages.clear()
    again = apply_phrases(corpus, 2, 3.0, 3, cache, log=messages.append)
    assert again.path == first.path and any("reusing" in m for m in messages)
    other = apply_phrases(corpus, 1, 3.0, 3, cache, log=lambda m: None)
    assert other.path != first.path and other.total_tokens > first.total_tokens

    (first.path / "counts.npy").write_bytes(b"damaged")  # a damaged entry is rebuilt, not trusted
    rebuilt = apply_phrases(corpus, 2, 3.0, 3, cache, log=lambda m: None)
    np.testing.assert_array_equal(rebuilt.counts, np.asarray(first.counts))


def test_apply_phrases_bad_settings_fail_before_any_work(tmp_path: Path):
    text = tmp_path / "c.txt"
    text.write_text("a b\n")
    corpus = encode(text_source(text, 10000, False), tmp_path, log=lambda m: None)
    with pytest.raises(SGNSError, match="corpus.phrase_min_count"):
        apply_phrases(corpus, 1, 100.0, 0, tmp_path)


def test_training_with_phrases_uses_the_joined_tokens_and_caches_them(tmp_path: Path, caplog):
    import logging

    from conftest import compose_cfg

    from sgns.train import train

    caplog.set_level(logging.INFO, logger="sgns")
    text = tmp_path / "c.txt"
    text.write_text("\n".join(" ".join(s) for s in planted_corpus(0, sentences=1500)) + "\n")
    base = ["corpus=text", f"corpus.path={text}", "model.dim=8", "trainer.epochs=1", "data.min_count=2",
            "trainer.device=cpu", "eval.projector_words=0", "corpus.phrases=2", "corpus.phrase_threshold=3",
            "corpus.phrase_min_count=3"]
    train(compose_cfg(tmp_path / "r1", base))
    vocab = (tmp_path / "r1" / "vocab.txt").read_text().split("\n")
    words = {line.split(" ")[0] for line in vocab if line}
    assert {"new_york", "los_angeles"} <= words and any(w.count("_") >= 2 for w in words)
    assert any("phrases: pass 2/2" in r.message for r in caplog.records)
    caplog.clear()
    train(compose_cfg(tmp_path / "r2", base))
    assert any("phrases: reusing" in r.message for r in caplog.records)
    assert (tmp_path / "r2" / "vocab.txt").read_text() == (tmp_path / "r1" / "vocab.txt").read_text()
