"""Pairs, windows, subsampling and negative sampling, tested against word2vec's definitions."""

import numpy as np
import pytest
import torch
from scipy import stats

from sgns.config import DataConfig
from sgns.corpus import encode, text_source
from sgns.pipelines.negatives import NegativeSampler, unigram_table
from sgns.pipelines.pairs import PairBatches, window_pairs
from sgns.pipelines.plan import keep_probabilities
from sgns.vocab import Vocabulary


def _dataset(path, cache, window=5, subsample=0.0, batch=1000, chunk=10_000, epochs=1, seed=3, max_len=10000,
             order="sequential", prefetch=False, streams=1):
    corpus = encode(text_source(path, max_len, False), cache, log=lambda _: None)
    vocab = Vocabulary.build(corpus.words, corpus.counts, min_count=1)
    data = DataConfig(window=window, subsample=subsample, batch_size=batch, chunk_tokens=chunk, prefetch=prefetch,
                      order=order, streams=streams)
    return PairBatches(corpus, vocab, data, epochs, seed), vocab


def test_keep_probability_formula():
    counts = np.array([1_000_000, 1000, 10])
    t = 1e-3
    f = counts / counts.sum()
    expected = np.minimum((np.sqrt(f / t) + 1) * t / f, 1)
    assert np.allclose(keep_probabilities(counts, t), expected)
    assert keep_probabilities(counts, t)[0] < 0.05 and keep_probabilities(counts, t)[2] == 1.0
    assert (keep_probabilities(counts, 0) == 1).all()


def test_window_radius_is_uniform_and_pairs_stay_in_sentence():
    rng = np.random.default_rng(0)
    n, window = 200_000, 5
    ids = np.arange(n)  # position = id, so offsets can be read off the pairs
    sentence = np.arange(n) // 50
    centers, contexts = window_pairs(ids, sentence, window, rng)
    offset = np.abs(contexts - centers)
    assert offset.min() >= 1 and offset.max() <= window
    assert (sentence[centers] == sentence[contexts]).all()
    # P(offset = o) is proportional to P(radius >= o) = (window - o + 1) / window, times the
    # (50 - o) positions of a 50-word sentence that have a neighbour at distance o.
    observed = np.bincount(offset, minlength=window + 1)[1:]
    o = np.arange(1, window + 1)
    weights = (window - o + 1) / window * (50 - o)
    expected = weights / weights.sum() * observed.sum()
    assert stats.chisquare(observed, expected).pvalue > 1e-4
    # ...and a fixed radius would be rejected by the same test.
    flat = (50 - o) / (50 - o).sum() * observed.sum()
    assert stats.chisquare(observed, flat).pvalue < 1e-6


def test_subsampling_keeps_words_at_word2vec_rate(tmp_path):
    # One long sentence and window 1: every kept token is a center exactly twice (bar the two ends).
    rng = np.random.default_rng(1)
    vocab_size = 50
    p = 1 / (np.arange(vocab_size) + 1.0)
    tokens = rng.choice(vocab_size, 200_000, p=p / p.sum())
    path = tmp_path / "one_line.txt"
    path.write_text(" ".join(f"w{i}" for i in tokens) + "\n")
    t = 1e-2
    ds, vocab = _dataset(path, tmp_path / "c", window=1, subsample=t, chunk=1_000_000, max_len=1_000_000)
    centers, _ = ds.chunk_pairs(0, 0)
    kept = np.bincount(centers, minlength=len(vocab)) / 2
    keep = keep_probabilities(vocab.counts, t)
    n = vocab.counts
    z = (kept - n * keep) / np.sqrt(n * keep * (1 - keep) + 1)
    assert np.abs(z).max() < 5, z  # every word's kept count within 5 sigma of binomial(n, keep)
    assert keep[0] < 0.5  # the test exercises real subsampling, not only keep = 1
    # Power: the same check against a wrong rate (keep ** 0.5) fails.
    wrong = np.sqrt(keep)
    z_wrong = (kept - n * wrong) / np.sqrt(n * wrong * (1 - wrong) + 1)
    assert np.abs(z_wrong).max() > 5


def test_negative_sampling_matches_unigram_power(tmp_path):
    counts = np.array([5000, 2000, 800, 300, 120, 50, 20, 8, 3, 1])
    probs = unigram_table(counts, 0.75)
    sampler = NegativeSampler(probs, torch.device("cpu"), seed=7)
    draws = sampler.sample(20_000, 10).flatten().numpy()  # 200k draws
    observed = np.bincount(draws, minlength=len(counts))
    assert stats.chisquare(observed, probs * len(draws)).pvalue > 1e-4
    wrong = unigram_table(counts, 1.0)  # the plain unigram distribution is rejected
    assert stats.chisquare(observed, wrong * len(draws)).pvalue < 1e-10


def test_negative_sampler_is_reproducible_and_resumable():
    probs = unigram_table(np.array([10, 5, 1]), 0.75)
    a = NegativeSampler(probs, torch.device("cpu"), seed=3)
    a.sample(5, 2)
    state = a.state_dict()
    expected = a.sample(100, 5)
    b = NegativeSampler(probs, torch.device("cpu"), seed=99)
    b.load_state_dict(state)
    assert torch.equal(b.sample(100, 5), expected)


def test_chunks_are_deterministic_and_seed_dependent(tiny_corpus, tmp_path):
    ds, _ = _dataset(tiny_corpus, tmp_path / "c", subsample=1e-2)
    a, b = ds.chunk_pairs(0, 1), ds.chunk_pairs(0, 1)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(ds.chunk_pairs(1, 1)[0], a[0])  # another epoch draws anew
    ds.seed = 4
    assert not np.array_equal(ds.chunk_pairs(0, 1)[0], a[0])


def test_pairs_are_shuffled(tiny_corpus, tmp_path):
    ds, _ = _dataset(tiny_corpus, tmp_path / "c")
    centers, _ = ds.chunk_pairs(0, 0)
    # Unshuffled pairs come grouped by offset; shuffled ones have no long runs of equal centers.
    runs = np.count_nonzero(np.diff(centers) == 0) / len(centers)
    assert runs < 0.2


@pytest.mark.parametrize(("order", "streams"), [("sequential", 1), ("shuffled", 1), ("shuffled", 2)])
def test_resume_position_yields_the_same_remaining_batches(tiny_corpus, tmp_path, order, streams):
    ds, _ = _dataset(tiny_corpus, tmp_path / "c", batch=700, chunk=5000, epochs=2, subsample=1e-2, order=order,
                     prefetch=order == "shuffled",  # the prefetching thread runs an epoch ahead at each epoch's end
                     streams=streams)
    full = list(ds)
    assert all(a.words_done < b.words_done for a, b in zip(full, full[1:], strict=False))  # in training order
    cut = len(full) // 2 + 3
    ds.start = full[cut - 1].resume_position
    rest = list(ds)
    assert len(rest) == len(full) - cut
    for x, y in zip(rest, full[cut:], strict=True):
        assert torch.equal(x.centers, y.centers) and torch.equal(x.contexts, y.contexts)
        assert x.words_done == y.words_done
    assert full[-1].words_done == pytest.approx(2 * ds.total_tokens)


def test_prefetch_thread_gives_the_same_batches(tiny_corpus, tmp_path):
    ds, _ = _dataset(tiny_corpus, tmp_path / "c", chunk=3000)
    plain = [b.centers for b in ds]
    ds.prefetch = True
    fetched = [b.centers for b in ds]
    assert len(plain) == len(fetched) and all(torch.equal(x, y) for x, y in zip(plain, fetched, strict=True))
