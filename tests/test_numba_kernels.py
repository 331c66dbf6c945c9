"""The fused CPU kernel (sgns.pipelines.span_kernel, run by sgns.pipelines.span) against the nn.Module +
BCE-with-logits reference, its random draws checked statistically, learning on a generated corpus, and
determinism across thread counts."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from numba import njit

from sgns.config import SyntheticConfig
from sgns.model import SGNS, sgns_loss
from sgns.pipelines.plan import span_starts
from sgns.pipelines.span import LOSS_SAMPLE_MIN_SPAN, SpanTrainer, advise_huge_pages, piece_bounds
from sgns.pipelines.span_kernel import (
    compiled_train_piece,
    draw,
    kept_words,
    kernel_alias_table,
    negative_word,
    piece_seed,
    train_piece,
    train_piece_per_context,
    window_radius,
)

# The kernel is compiled once per model.dim (a constant in its code): the unit tests below share one dim, and
# the trainers and runs of this suite use few, so a fresh clone's suite pays few compiles (3-10 s each).
KERNEL_DIM = 16

# ------------------------------------------------------------------------------------- reference match


def _one_negative_table(vocab: int, word: int):
    """An alias table that always draws `word` (a distribution with all its mass there)."""
    p = np.zeros(vocab)
    p[word] = 1.0
    return kernel_alias_table(p)


def _run_kernel(W, C, sentence, negative, k, lr, window=1, kernel=train_piece):
    vocab = len(W)
    raw = np.asarray(sentence, dtype=np.int32)
    remap = np.arange(vocab, dtype=np.int32)
    starts = np.array([0, len(raw)], dtype=np.int64)
    accept, alias = _one_negative_table(vocab, negative)
    keep = np.ones(vocab, dtype=np.float32)
    return kernel(W, C, raw, remap, starts, 0, 1, keep, accept, alias, window, k, lr, lr, np.uint64(7), 1,
                  W.shape[1])


# one draw per window, or per context (data.window_negatives=false): here the same draws
@pytest.mark.parametrize("kernel", [train_piece, train_piece_per_context])
@pytest.mark.parametrize("k", [3, 4])  # an even and an odd number of output rows (the kernel pairs rows up)
def test_kernel_matches_autograd_on_windows_of_one_draw(k, kernel):
    # window=1 makes every radius 1 and a one-word negative distribution fixes the draws, so the kernel's
    # work is known: per center, one batch SGD step on the BCE loss of its (context -> center) pairs with
    # the window's shared negatives. Word2vec's skip-gram predicts the center from each context's input
    # vector: the model's "centers" are the contexts here, its "contexts" the window's center.
    vocab, dim, lr = 12, KERNEL_DIM, 0.1
    sentence = [2, 5, 7, 5]  # a repeated word: updates of one row must accumulate
    negative = 9
    torch.manual_seed(0)
    ref = SGNS(vocab, dim)
    with torch.no_grad():
        ref.input.weight.normal_(0, 0.5)
        ref.output.weight.normal_(0, 0.5)
    W = ref.input.weight.detach().numpy().copy()
    C = ref.output.weight.detach().numpy().copy()
    loss, loss_pairs, pairs, logits = _run_kernel(W, C, sentence, negative, k, lr, kernel=kernel)

    expected_loss = 0.0
    optimizer = torch.optim.SGD(ref.parameters(), lr=lr)
    for i, center in enumerate(sentence):
        contexts = [sentence[j] for j in (i - 1, i + 1) if 0 <= j < len(sentence)]
        optimizer.zero_grad()
        step_loss = sgns_loss(*ref(torch.tensor(contexts), torch.tensor([center] * len(contexts)),
                                   torch.full((1, k), negative)))
        step_loss.backward()
        optimizer.step()
        expected_loss += float(step_loss.detach())
    assert pairs == loss_pairs == 6 and logits == 6 * (k + 1)
    assert loss == pytest.approx(expected_loss, rel=1e-5)
    np.testing.assert_allclose(W, ref.input.weight.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(C, ref.output.weight.detach().numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kernel", [train_piece, train_piece_per_context])
def test_negative_equal_to_the_center_is_skipped(kernel):
    # word2vec skips a negative that is the positive word itself; with every draw equal to the center,
    # only the positive logits remain.
    W = np.full((4, KERNEL_DIM), 0.1, dtype=np.float32)
    C = np.zeros((4, KERNEL_DIM), dtype=np.float32)
    _, _, pairs, logits = _run_kernel(W, C, [1, 1], negative=1, k=4, lr=0.1, kernel=kernel)
    assert pairs == 2 and logits == 2


@pytest.mark.parametrize("kernel, rows", [(train_piece, 3 * 5), (train_piece_per_context, 4 * 5)])
def test_negatives_are_drawn_per_window_or_per_context(kernel, rows):
    # Three words, window 1: windows of 1, 2 and 1 contexts, K = 5. From a uniform law over 100k words the
    # draws almost never repeat, so the output rows stepped as negatives count the draws: one per window
    # (15) or one per context (20).
    vocab, k = 100_000, 5
    W = np.full((vocab, KERNEL_DIM), 0.1, dtype=np.float32)
    C = np.zeros((vocab, KERNEL_DIM), dtype=np.float32)
    raw = np.array([0, 1, 2], dtype=np.int32)
    accept, alias = kernel_alias_table(np.full(vocab, 1.0 / vocab))
    args = (W, C, raw, np.arange(vocab, dtype=np.int32), np.array([0, 3], dtype=np.int64), 0, 1,
            np.ones(vocab, np.float32), accept, alias, 1, k, 0.1, 0.1, np.uint64(5), 1)
    _, _, pairs, _ = kernel(*args, KERNEL_DIM)
    assert pairs == 4
    assert np.count_nonzero(np.abs(C[3:]).sum(1)) == rows


# ------------------------------------------------------------------------------- random draws, statistically


@njit
def _keep_counts(raw, remap, keep, reps, seed):
    state = np.uint64(seed)
    sen = np.empty(len(raw), dtype=np.int32)
    counts = np.zeros(len(keep), dtype=np.int64)
    for _ in range(reps):
        n, state = kept_words(raw, remap, keep, 0, len(raw), sen, state)
        for i in range(n):
            counts[sen[i]] += 1
    return counts


def test_subsampling_keeps_each_word_at_its_keep_probability():
    keep = np.array([1.0, 0.5, 0.1, 0.9], dtype=np.float32)
    raw = np.array([0, 1, 2, 3, 4, 1, 2], dtype=np.int32)  # corpus id 4 is out of the vocabulary
    remap = np.array([0, 1, 2, 3, -1], dtype=np.int32)
    reps = 40000
    counts = _keep_counts(raw, remap, keep, reps, 3)
    trials = np.array([1, 2, 2, 1]) * reps
    rate = counts / trials
    sd = np.sqrt(keep * (1 - keep) / trials)
    assert counts[0] == reps  # keep 1 is never dropped
    assert np.all(np.abs(rate - keep) <= 5 * sd + 1e-12), (rate, keep)


@njit
def _radii(window, draws, seed):
    state = np.uint64(seed)
    out = np.empty(draws, dtype=np.int64)
    for i in range(draws):
        state, r = draw(state)
        out[i] = window_radius(r, window)
    return out


@pytest.mark.parametrize("window", [1, 5, 7])
def test_window_radius_is_uniform_in_one_to_window(window):
    draws = 70000
    radii = _radii(window, draws, 11)
    assert radii.min() == 1 and radii.max() == window
    counts = np.bincount(radii, minlength=window + 1)[1:]
    expected = draws / window
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < window - 1 + 6 * np.sqrt(2 * max(window - 1, 1)) + 10  # far beyond chance otherwise


@njit
def _negatives(accept, alias, draws, seed):
    state = np.uint64(seed)
    counts = np.zeros(len(accept), dtype=np.int64)
    for _ in range(draws):
        state, r = draw(state)
        counts[negative_word(r, accept, alias)] += 1
    return counts


def test_negatives_follow_unigram_to_the_three_quarters():
    counts = np.array([5000, 1200, 700, 300, 90, 40, 12, 5, 5, 1], dtype=np.float64)
    p = counts**0.75 / (counts**0.75).sum()
    accept, alias = kernel_alias_table(p)
    draws = 400000
    got = _negatives(accept, alias, draws, 5)
    expected = p * draws
    chi2 = float(((got - expected) ** 2 / expected).sum())
    assert chi2 < 9 + 6 * np.sqrt(18)  # 9 degrees of freedom
    # and not the raw unigram distribution (the test can tell them apart)
    q = counts / counts.sum() * draws
    assert float(((got - q) ** 2 / q).sum()) > 1000


def test_pair_count_matches_the_window_expectation():
    # no subsampling, one sentence of n words: each center pairs with every word within its radius r
    # (uniform in [1, window]), so E[pairs] = sum_i E[min(i, r) + min(n - 1 - i, r)].
    n, window, vocab = 40, 5, 50
    rng = np.random.default_rng(0)
    W = (rng.random((vocab, KERNEL_DIM), dtype=np.float32) - 0.5) / KERNEL_DIM
    C = np.zeros_like(W)
    raw = rng.integers(0, vocab, size=n).astype(np.int32)
    remap = np.arange(vocab, dtype=np.int32)
    accept, alias = kernel_alias_table(np.full(vocab, 1.0 / vocab))
    keep = np.ones(vocab, dtype=np.float32)
    starts = np.array([0, n], dtype=np.int64)
    totals = [train_piece(W, C, raw, remap, starts, 0, 1, keep, accept, alias, window, 2, 1e-6, 1e-6,
                          np.uint64(s), 0, KERNEL_DIM)[2] for s in range(2000)]
    i = np.arange(n)[:, None]
    r = np.arange(1, window + 1)[None, :]
    expected = (np.minimum(i, r) + np.minimum(n - 1 - i, r)).mean(1).sum()
    sd = np.std(totals) / np.sqrt(len(totals))
    assert abs(np.mean(totals) - expected) < 5 * sd


# ------------------------------------------------------------------------------- spans, pieces, threads


def test_span_starts_and_piece_bounds():
    offsets = np.array([0, 4, 10, 11, 30, 31], dtype=np.int64)
    assert span_starts(offsets, 0, 31).tolist() == [0, 4, 10, 11, 30, 31]
    assert span_starts(offsets, 5, 20).tolist() == [0, 5, 6, 15]  # the cut sentence starts the span
    assert span_starts(offsets, 10, 11).tolist() == [0, 1]
    starts = np.array([0, 4, 10, 11, 30, 31], dtype=np.int64)
    assert piece_bounds(starts, 10).tolist() == [0, 2, 4, 5]
    assert piece_bounds(starts, 1000).tolist() == [0, 5]


def test_token_spans_cover_each_epoch_once_and_resume_anywhere():
    from sgns.pipelines.span import TokenSpans

    offsets = np.array([0, 700, 1500, 2600, 4000, 5200], dtype=np.int64)
    corpus = SimpleNamespace(total_tokens=5200, offsets=offsets, ids=np.arange(5200, dtype=np.int32))
    spans = TokenSpans(corpus, 2000, epochs=2)
    assert spans.span_tokens == 1000  # a small corpus gets shorter spans (about 100 steps an epoch, >= 1000)
    got = list(spans((0, 0, 0)))
    assert [(s.epoch, s.chunk) for s in got] == [(e, c) for e in range(2) for c in range(6)]
    assert np.array_equal(np.concatenate([s.ids for s in got[:6]]), corpus.ids)  # every position once
    assert got[1].starts.tolist() == [0, 500, 1000] and got[2].starts.tolist() == [0, 600, 1000]
    assert got[5].words_before == 5000 and got[5].words_done == 5200 and got[6].words_before == 5200
    assert got[3].resume_position == (0, 3, 1)  # chunk 3 done (one span a chunk)
    resumed = list(spans(got[3].resume_position))
    assert [(s.epoch, s.chunk) for s in resumed] == [(s.epoch, s.chunk) for s in got[4:]]
    assert all(np.array_equal(a.ids, b.ids) for a, b in zip(resumed, got[4:], strict=True))
    assert len(list(spans((0, 6, 0)))) == 6  # past the last span of epoch 0: epoch 1 from its start
    shuffled = TokenSpans(corpus, 2000, epochs=2, order="shuffled", seed=5)
    got = list(shuffled((0, 0, 0)))
    assert [s.chunk for s in got[:6]] != list(range(6)) and sorted(s.chunk for s in got[6:]) == list(range(6))
    assert np.array_equal(np.sort(np.concatenate([s.ids for s in got[:6]])), corpus.ids)  # every position once
    assert [s.words_done for s in got[:6]] == [s.words_before + len(s.ids) for s in got[:6]]  # counted in order
    assert all(a.words_done == b.words_before for a, b in zip(got, got[1:], strict=False))
    resumed = list(shuffled(got[3].resume_position))
    assert [(s.epoch, s.chunk, s.stream) for s in resumed] == [(s.epoch, s.chunk, s.stream) for s in got[4:]]


def test_token_spans_of_two_streams_interleave_the_corpus_halves_and_resume_anywhere():
    from sgns.pipelines.span import TokenSpans

    offsets = np.arange(0, 6000, 100, dtype=np.int64)  # sentences of 100 words
    corpus = SimpleNamespace(total_tokens=6000, offsets=offsets, ids=np.arange(6000, dtype=np.int32))
    spans = TokenSpans(corpus, 1000, epochs=2, streams=2)
    got = list(spans((0, 0, 0)))
    assert len(got) == 12 and [s.chunk for s in got] == [c for _ in range(2) for c in range(6)]
    first = got[0]  # chunk 0: the first 500 words of each half, sentence by sentence
    assert first.starts.tolist() == list(range(0, 1001, 100))
    assert [int(first.ids[x]) for x in first.starts[:-1]] == [v for k in range(5) for v in (100 * k, 3000 + 100 * k)]
    assert np.array_equal(np.sort(np.concatenate([s.ids for s in got[:6]])), corpus.ids)  # every position once
    assert [s.words_done for s in got[:6]] == [1000 * (c + 1) for c in range(6)]
    resumed = list(spans(got[3].resume_position))
    assert all(np.array_equal(a.ids, b.ids) and a.stream == b.stream for a, b in zip(resumed, got[4:], strict=True))


def _trainer(vocab: int, dim: int, threads: int, seed: int = 3, kernel=train_piece):
    rng = np.random.default_rng(0)
    W = ((rng.random((vocab, dim), dtype=np.float32) - 0.5) / dim).astype(np.float32)
    C = np.zeros_like(W)
    counts = 1.0 / (np.arange(vocab) + 1.0)
    f = counts / counts.sum()
    keep = np.minimum((np.sqrt(f / 1e-2) + 1) * 1e-2 / f, 1.0)
    p = counts**0.75
    accept, alias = kernel_alias_table(p / p.sum())
    return SpanTrainer(W, C, np.arange(vocab, dtype=np.int32), keep, accept, alias, 5, 5, seed, threads,
                       piece_tokens=500, kernel=kernel)


def _zipf_span(vocab: int, tokens: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    p = 1.0 / (np.arange(vocab) + 1.0)
    raw = rng.choice(vocab, size=tokens, p=p / p.sum()).astype(np.int32)
    starts = np.unique(np.concatenate([[0], np.sort(rng.integers(1, tokens, tokens // 12)), [tokens]]))
    return raw, starts.astype(np.int64)


def test_one_thread_is_bitwise_reproducible_and_seeded():
    raw, starts = _zipf_span(200, 20000)
    runs = []
    for seed in (3, 3, 4):
        tr = _trainer(200, 16, 1, seed)
        tr.train_span(raw, starts, 0, 0, 0.025, 0.02)
        runs.append(tr.W.copy())
    assert np.array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def test_pieces_replay_exactly_from_any_piece():
    # Each piece's random stream is keyed by (seed, epoch, span, piece): the pieces run one by one, in two
    # batches, give the same weights as one pass over the span.
    raw, starts = _zipf_span(200, 20000)
    whole = _trainer(200, 16, 1)
    whole.train_span(raw, starts, 1, 4, 0.025, 0.02)
    parts = _trainer(200, 16, 1)
    bounds = piece_bounds(starts, parts.piece_tokens)
    kernel, span = compiled_train_piece(16), int(starts[-1])
    for p in range(len(bounds) - 1):
        a, b = int(bounds[p]), int(bounds[p + 1])
        la, lb = (0.025 + (0.02 - 0.025) * int(starts[i]) / span for i in (a, b))
        kernel(parts.W, parts.C, raw, parts.remap, starts, a, b, parts.keep, parts.accept, parts.alias,
               parts.window, parts.negatives, la, lb, np.uint64(piece_seed(parts.seed, 1, 4, p)), 1, 16)
    assert np.array_equal(whole.W, parts.W) and np.array_equal(whole.C, parts.C)


@pytest.mark.parametrize("kernel", [train_piece, train_piece_per_context])
def test_deterministic_mode_ignores_the_thread_count(kernel):
    raw, starts = _zipf_span(200, 20000)
    results = []
    for threads in (1, 2, 3):
        tr = _trainer(200, 16, threads, kernel=kernel)
        tr.deterministic = True
        tr.train_span(raw, starts, 0, 0, 0.025, 0.02)
        results.append((tr.W.copy(), tr.C.copy()))
    for W, C in results[1:]:
        assert np.array_equal(W, results[0][0]) and np.array_equal(C, results[0][1])


def _study_kernels():
    """scripts/studies/kernel_variants.py, the kernel study's own module (scripts/ is not a package)."""
    path = Path(__file__).resolve().parent.parent / "scripts" / "studies" / "kernel_variants.py"
    spec = importlib.util.spec_from_file_location("kernel_variants", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_study_kernel_is_the_product_loop_and_trains_its_own_variants():
    # The kernel study (scripts/studies/kernel_variants.py) owns a copy of the product's loop over sentences, draws
    # and windows. At PER_CONTEXT its window update is the product's, so it must train bit for bit as
    # train_piece_per_context: a copy drifted from the product's loop fails here. A study variant (word2vec's
    # pair-by-pair step) must train differently: the study never trains the product's kernel by mistake.
    study = _study_kernels()
    raw, starts = _zipf_span(200, 20000)
    tables = []
    for kernel in (train_piece_per_context, study.variant_kernel(study.PER_CONTEXT),
                   study.variant_kernel(study.PER_CONTEXT_NEGATIVES | study.SEQUENTIAL)):
        tr = _trainer(200, 16, 1, kernel=kernel)
        loss, _, pairs = tr.train_span(raw, starts, 0, 0, 0.025, 0.02)
        assert pairs > 0 and np.isfinite(loss)
        tables.append((tr.W, tr.C))
    assert np.array_equal(tables[1][0], tables[0][0]) and np.array_equal(tables[1][1], tables[0][1])
    assert not np.array_equal(tables[2][0], tables[0][0])


def test_hogwild_threads_train_every_piece():
    # Racing threads give other bits, but the same amount of work and a comparable loss.
    raw, starts = _zipf_span(200, 20000)
    one, two = _trainer(200, 16, 1), _trainer(200, 16, 2)
    loss1, sampled1, pairs1 = one.train_span(raw, starts, 0, 0, 0.025, 0.02)
    loss2, sampled2, pairs2 = two.train_span(raw, starts, 0, 0, 0.025, 0.02)
    assert pairs1 == pairs2 and sampled1 == sampled2  # the draws do not depend on the thread count
    assert loss2 / sampled2 == pytest.approx(loss1 / sampled1, rel=0.02)



def test_the_sampled_loss_estimates_every_windows_loss():
    # From LOSS_SAMPLE_MIN_SPAN on, a span sums the loss of a random 1 in 16 windows: over the same updates (the
    # sample changes none), its loss per pair estimates every window's without bias, from ~1/16 of the pairs.
    raw, starts = _zipf_span(200, 20000)
    differences, fractions = [], []
    for seed in range(24):
        sampled, every = _trainer(200, 16, 1, seed), _trainer(200, 16, 1, seed)
        every.loss_every = 1
        loss_s, pairs_s, pairs = sampled.train_span(raw, starts, 0, 0, 0.025, 0.02)
        loss_e, pairs_e, pairs_every = every.train_span(raw, starts, 0, 0, 0.025, 0.02)
        assert np.array_equal(sampled.W, every.W) and np.array_equal(sampled.C, every.C)
        assert pairs_e == pairs_every == pairs
        differences.append(loss_s / pairs_s - loss_e / pairs_e)
        fractions.append(pairs_s / pairs)
    d = np.array(differences)
    assert abs(d.mean()) < 4 * d.std(ddof=1) / np.sqrt(len(d))
    assert np.mean(fractions) == pytest.approx(1 / 16, rel=0.1)
    # a shorter span sums every window's loss
    raw, starts = _zipf_span(200, LOSS_SAMPLE_MIN_SPAN - 1)
    _loss, pairs_s, pairs = _trainer(200, 16, 1).train_span(raw, starts, 0, 0, 0.025, 0.02)
    assert pairs_s == pairs

# ------------------------------------------------------------------------------------------ learning


def test_kernel_learns_planted_analogies(tmp_path):
    from sgns.corpus.synthetic import generate
    from sgns.evaluate import evaluate_analogies
    from sgns.vocab import Vocabulary

    cfg = SyntheticConfig(relations=3, pairs=12, filler_words=300, sentences=12000, seed=0, evaluate=True)
    lines, questions = generate(cfg)
    (tmp_path / "q.txt").write_text("\n".join(questions) + "\n")
    words, ids, offsets = {}, [], [0]
    for line in lines:
        ids.extend(words.setdefault(w, len(words)) for w in line.split())
        offsets.append(len(ids))
    counts = np.bincount(ids)
    vocab = Vocabulary.build(list(words), counts, 1)
    remap = vocab.remap(len(words))
    rng = np.random.default_rng(0)
    dim = 32
    f = vocab.counts / vocab.counts.sum()
    keep = np.minimum((np.sqrt(f / 1e-3) + 1) * 1e-3 / f, 1.0)
    p = vocab.counts**0.75
    accept, alias = kernel_alias_table(p / p.sum())

    def accuracy(lr: float) -> float:
        W = ((rng.random((len(vocab), dim), dtype=np.float32) - 0.5) / dim).astype(np.float32)
        C = np.zeros_like(W)
        tr = SpanTrainer(W, C, remap, keep, accept, alias, 5, 5, 1, 1)
        raw, starts = np.asarray(ids, dtype=np.int32), np.asarray(offsets, dtype=np.int64)
        epochs = 5
        for e in range(epochs):
            tr.train_span(raw, starts, e, 0, lr * (1 - e / epochs), lr * (1 - (e + 1) / epochs))
        return evaluate_analogies(vocab.words, W, tmp_path / "q.txt", 10000)["accuracy"]

    assert accuracy(0.025) > 0.8
    assert accuracy(1e-6) < 0.2  # untrained vectors fail the same questions


# ------------------------------------------------------------------------------------------- end to end


def test_deterministic_runs_give_the_same_vectors_whatever_the_thread_count(tmp_path, tiny_corpus):
    from conftest import compose_cfg

    import sgns.train

    vectors = []
    for threads in (1, 2):
        run = tmp_path / f"threads{threads}"
        cfg = compose_cfg(run, ["corpus=text", f"corpus.path={tiny_corpus}", "data.min_count=1", "model.dim=16",
                                "trainer.epochs=2", "data.span_tokens=5000", "trainer.deterministic=true",
                                f"trainer.threads={threads}", "trainer.device=cpu"])
        metrics = sgns.train.train(cfg)
        assert metrics["steps"] == 2 * 20 and metrics["pairs"] > 0  # 20k words: 1000-word spans (a small corpus)
        vectors.append((run / "vectors.bin").read_bytes())
    assert vectors[0] == vectors[1]


@pytest.mark.parametrize("world,every,hot", [(2, 3000, None), (3, 700, None), (2, 10**6, None), (2, 6000, 1500)])
def test_sharded_spans_cover_each_epoch_once_over_the_ranks_and_end_at_every_merge(world, every, hot):
    from sgns.distributed import MergeClock, plan_shard
    from sgns.pipelines.span import TokenSpans

    total = 23_456
    offsets = np.arange(0, total, 37, dtype=np.int64)
    corpus = SimpleNamespace(total_tokens=total, offsets=offsets, ids=np.arange(total, dtype=np.int32))
    per_rank = []
    for rank in range(world):
        shard = plan_shard(total, 5000, every, rank, world, hot)
        spans = TokenSpans(corpus, 2000, epochs=2, shard=shard)
        got = list(spans((0, 0, 0)))
        per_rank.append(got)
        assert len({s.stream for s in got if s.epoch == 0}) == sum(1 for s in got if s.epoch == 0)
        assert all(len(s.ids) <= spans.span_tokens for s in got)
        assert all(s.words_done > s.words_before for s in got)
        # Every merge the clock asks for falls on a span's end: the step never straddles a merge.
        points = shard.points_per_chunk
        clock = MergeClock(points)
        merges = [len(clock.due(s.epoch, s.chunk, s.chunk_fraction)) for s in got]
        assert sum(merges) == 2 * len(shard.chunks()) * points
        at_merge = [abs(s.chunk_fraction * points - round(s.chunk_fraction * points)) < 1e-9 for s in got]
        assert at_merge == [m > 0 for m in merges]
        # Resuming from any span's resume position yields exactly the spans after it.
        for cut in (0, len(got) // 3, len(got) - 1):
            rest = list(spans(got[cut].resume_position))
            assert [(s.epoch, s.stream) for s in rest] == [(s.epoch, s.stream) for s in got[cut + 1:]]
            assert all(np.array_equal(a.ids, b.ids) for a, b in zip(rest, got[cut + 1:], strict=True))
    for epoch in range(2):  # the ranks together cover every corpus position once per epoch
        ids = np.concatenate([s.ids for got in per_rank for s in got if s.epoch == epoch])
        assert np.array_equal(np.sort(ids), corpus.ids)
    # Streams are unique across the ranks too (no two ranks draw the same negatives).
    streams = [s.stream for got in per_rank for s in got if s.epoch == 0]
    assert len(set(streams)) == len(streams)
    assert max(s.words_done for got in per_rank for s in got) == 2 * total


def test_huge_page_advice_keeps_the_table_and_declines_small_ones():
    # The advice (and MADV_COLLAPSE's copy into huge pages) must not change a value; a table under two huge
    # pages is left alone.
    table = np.random.default_rng(0).random((40_000, 100), dtype=np.float32)  # 16 MB
    before = table.copy()
    advise_huge_pages(table)
    assert np.array_equal(table, before)
    assert advise_huge_pages(np.zeros((10, 100), np.float32)) is False


# ------------------------------------------------------------------------------------- cold and warm cache

_ONE_CALL = """
import hashlib, numpy as np
from sgns.pipelines.span_kernel import compiled_train_piece, kernel_alias_table
dim, V = 100, 500
rng = np.random.default_rng(0)
W = ((rng.random((V, dim), dtype=np.float32) - 0.5) / dim).astype(np.float32)
C = (rng.random((V, dim), dtype=np.float32) * 0.01).astype(np.float32)
p = (1.0 / np.arange(1, V + 1)) ** 0.75
accept, alias = kernel_alias_table(p / p.sum())
raw = rng.integers(0, V, 20000).astype(np.int32)
starts = np.arange(0, 20001, 20, dtype=np.int64)
for per_context in (False, True):
    kernel = compiled_train_piece(dim, per_context=per_context)
    kernel(W, C, raw, np.arange(V, dtype=np.int32), starts, 0, len(starts) - 1, np.ones(V, np.float32), accept,
           alias, 5, 5, 0.025, 0.001, np.uint64(7), 1, dim)
print(hashlib.sha256(W.tobytes() + C.tobytes()).hexdigest())
"""


@pytest.mark.slow  # the first process compiles both kernels: half a minute or more
def test_a_compiled_kernel_gives_the_cached_kernels_bits(tmp_path: Path) -> None:
    """A process that compiles the kernel (a cold numba cache: a user's first run) and one that loads it from
    the cache must train the same bits, or deterministic mode and exact resume depend on which ran first."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    hashes = [subprocess.run([sys.executable, "-c", _ONE_CALL], env=env, capture_output=True, text=True,
                             check=True, timeout=600).stdout.strip() for _ in range(2)]
    assert any((tmp_path / "numba").rglob("*.nbc")), "the first process wrote no numba cache"
    assert hashes[0] == hashes[1]


@pytest.mark.parametrize(("model", "arrangement"), [("sgns", "data.order=shuffled"), ("subword", "data.order=shuffled"),
                                                    ("sgns", "data.streams=3")])
def test_a_shuffled_run_interrupted_and_resumed_equals_one_run_through(tmp_path: Path, monkeypatch, model: str,
                                                                       arrangement: str):
    """data.order=shuffled (or data.streams) on the numba kernel (deterministic): stopped by SIGINT after a step,
    the same command continues in the epoch's order from its checkpoint and ends with the uninterrupted run's
    vectors."""
    import os
    import signal

    from conftest import compose_cfg, zipf_text

    import sgns.train
    from sgns.errors import SGNSError
    from sgns.pipelines.span import SpanPipeline
    from sgns.train.checkpoint import list_checkpoints, load_checkpoint

    text = zipf_text(tmp_path / "corpus.txt", words=30000, vocab=200)
    overrides = ["corpus=text", f"corpus.path={text}", "model.dim=16", "trainer.epochs=2", "data.min_count=1",
                 "data.span_tokens=1000", arrangement, "trainer.deterministic=true", "trainer.device=cpu",
                 "eval.projector_words=0", f"model={model}", "model.bucket=20000"]  # subword: most rows untrained
    reference = sgns.train.train(compose_cfg(tmp_path / "ref", overrides))
    assert reference["steps"] == 60  # 30 spans an epoch
    calls, real_step = [0], SpanPipeline.step

    def step(self, batch, lr):
        calls[0] += 1
        if calls[0] == 17:  # in the first epoch, its order half walked
            os.kill(os.getpid(), signal.SIGINT)
        return real_step(self, batch, lr)

    monkeypatch.setattr(SpanPipeline, "step", step)
    with pytest.raises(SGNSError, match="stopped by SIGINT"):
        sgns.train.train(compose_cfg(tmp_path / "cut", overrides))
    monkeypatch.undo()
    resumed = sgns.train.train(compose_cfg(tmp_path / "cut", overrides))
    assert resumed["steps"] == reference["steps"] and resumed["train_words"] == reference["train_words"]
    assert (tmp_path / "cut" / "vectors.bin").read_bytes() == (tmp_path / "ref" / "vectors.bin").read_bytes()
    tables = [load_checkpoint(list_checkpoints(tmp_path / run)[-1]) for run in ("ref", "cut")]
    assert all(torch.equal(tables[0]["model"][k], tables[1]["model"][k]) for k in tables[0]["model"])  # untrained
    fills = [t.get("input_fill") for t in tables]  # rows too: the resumed run keeps its checkpoint's fill
    assert fills[0] == fills[1] and (fills[0] is not None) == (model == "subword")
    sequential = sgns.train.train(compose_cfg(tmp_path / "seq", [*overrides, "data.order=sequential",
                                                                 "data.streams=1"]))
    assert (tmp_path / "seq" / "vectors.bin").read_bytes() != (tmp_path / "ref" / "vectors.bin").read_bytes()
    assert sequential["train_words"] == reference["train_words"]
