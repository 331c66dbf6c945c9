"""model=subword's compiled CPU kernel (sgns.pipelines.subword_kernel.train_piece_subword, run by SpanTrainer) against
fastText's skip-gram update written out in numpy, its per-center h against fastText's per-pair h, determinism across
thread counts and the Hogwild threads."""

from __future__ import annotations

import numpy as np
import pytest

from sgns.errors import SGNSError
from sgns.pipelines.span import SpanTrainer
from sgns.pipelines.span_kernel import kernel_alias_table, train_piece
from sgns.pipelines.subword_kernel import HIDDEN_PER_PAIR, hidden_gains, subword_piece_kernel, train_piece_subword
from sgns.subwords import SubwordTable, subword_table


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + np.exp(-x))


def fasttext_step(W: np.ndarray, C: np.ndarray, rows: np.ndarray, targets: list, lr: float) -> float:
    """fastText's Model::update for one (center, context) pair, in float64: h = the mean of the center's rows; for
    each target (the context, then the negatives) alpha = lr * (label - sigmoid(h . c)), h's step += alpha * c,
    c += alpha * h; then every row entry of the center += h's step (a repeated row twice). fastText steps the
    targets one after another; here, as in the kernel and the torch reference, every target is scored from the
    rows before the pair (the two differ only when a pair draws one negative twice). Returns the pair's loss."""
    h = W[rows].mean(0)
    old = C.copy()
    grad = np.zeros_like(h)
    loss = 0.0
    for k, target in enumerate(targets):
        x = float(h @ old[target])
        label = 1.0 if k == 0 else 0.0
        loss += -np.log(_sigmoid(x)) if k == 0 else -np.log(1.0 - _sigmoid(x))
        alpha = lr * (label - _sigmoid(x))
        grad += alpha * old[target]
        C[target] += alpha * h
    for row in rows:
        W[row] += grad
    return loss


def _table(n_words: int, bucket: int, rows_of: dict) -> SubwordTable:
    """A hand-made table: word w's rows are [w] + rows_of.get(w, [])."""
    flat, offsets = [], [0]
    for w in range(n_words):
        flat += [w] + [n_words + b for b in rows_of.get(w, [])]
        offsets.append(len(flat))
    return SubwordTable(np.asarray(offsets, np.int64), np.asarray(flat, np.int32), n_words, 3, 6, bucket)


def _run(W, C, table, sentence, negative, k, lr, window=1, kernel=train_piece_subword):
    n_words = table.n_words
    p = np.zeros(n_words)
    p[negative] = 1.0  # every draw is `negative`
    accept, alias = kernel_alias_table(p)
    trainer = SpanTrainer(W, C, np.arange(n_words, dtype=np.int32), np.ones(n_words, np.float32), accept, alias,
                          window, k, seed=7, threads=1, loss_every=1, kernel=kernel, subwords=table)
    return trainer.train_span(np.asarray(sentence, np.int32), np.array([0, len(sentence)], np.int64), 0, 0, lr, lr)


# Word 2 repeats bucket 3 ("banana"'s "ana") and shares bucket 0 with word 5: the gradient into a repeated row
# counts twice, and the center's h moves by gains[2] = (1 + 2*2 + 1 + 1) / 5 of the step.
ROWS = {1: [4], 2: [0, 3, 1, 3], 5: [0, 6], 7: [2, 5, 6]}


@pytest.mark.parametrize("k", [2, 3])
def test_kernel_is_fasttexts_update_pair_by_pair(k):
    # window=1 fixes every radius to 1 and a one-word negative distribution fixes the draws, so the kernel's work
    # is known: each center in turn, each of its (one or two) contexts in turn, one fastText update per pair with
    # the center's rows as input. A middle center has two contexts: its h after the first pair's step must be the
    # mean of its rows as they then are (fastText recomputes it; the kernel carries it).
    n_words, bucket, dim, lr = 10, 8, 8, 0.1
    table = _table(n_words, bucket, ROWS)
    sentence = [2, 5, 7, 5, 1, 2]  # repeated words: the steps of one row accumulate
    negative = 9
    rng = np.random.default_rng(0)
    W = rng.normal(0, 0.5, (n_words + bucket, dim)).astype(np.float32)
    C = rng.normal(0, 0.5, (n_words, dim)).astype(np.float32)
    W_ref, C_ref = W.astype(np.float64), C.astype(np.float64)
    loss, loss_pairs, pairs = _run(W, C, table, sentence, negative, k, lr)

    expected = 0.0
    for i, center in enumerate(sentence):
        for j in (i - 1, i + 1):
            if 0 <= j < len(sentence):
                expected += fasttext_step(W_ref, C_ref, table.rows_of(center), [sentence[j]] + [negative] * k, lr)
    assert pairs == loss_pairs == 10
    assert loss == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(W, W_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(C, C_ref, rtol=1e-5, atol=1e-6)


def test_a_negative_equal_to_the_context_is_skipped():
    # fastText draws again; the kernel skips it, as word2vec and the SGNS kernel do (the draw count stays fixed).
    n_words, bucket, dim, lr = 10, 8, 4, 0.1
    table = _table(n_words, bucket, ROWS)
    rng = np.random.default_rng(1)
    W = rng.normal(0, 0.5, (n_words + bucket, dim)).astype(np.float32)
    C = rng.normal(0, 0.5, (n_words, dim)).astype(np.float32)
    W_ref, C_ref = W.astype(np.float64), C.astype(np.float64)
    _run(W, C, table, [7, 5], negative=5, k=3, lr=lr)  # center 7's context 5 draws 5: skipped; center 5's are 7
    fasttext_step(W_ref, C_ref, table.rows_of(7), [5], lr)
    fasttext_step(W_ref, C_ref, table.rows_of(5), [7, 5, 5, 5], lr)
    np.testing.assert_allclose(W, W_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(C, C_ref, rtol=1e-5, atol=1e-6)


def test_hidden_gains_count_repeated_rows():
    table = _table(10, 8, ROWS)
    gains = hidden_gains(table.offsets, table.rows)
    assert gains.dtype == np.float32 and len(gains) == 10
    assert gains[2] == pytest.approx((1 + 4 + 1 + 1) / 5)  # rows 2, 10, 13, 11, 13: row 13 twice
    assert np.all(np.delete(gains, 2) == 1.0)


# ----------------------------------------------------------------------- on real n-grams, a Zipf-drawn span

WORDS = [w + s for w in ("walk", "talk", "play", "jump", "work", "read", "cook", "paint", "clean", "watch")
         for s in ("", "s", "ed", "ing", "er", "ers", "able", "ful", "less", "ness")]


def _zipf_span(vocab: int, tokens: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, vocab + 1)
    raw = rng.choice(vocab, size=tokens, p=p / p.sum()).astype(np.int32)
    return raw, np.arange(0, tokens + 1, 25, dtype=np.int64)


def _trainer(table: SubwordTable, dim: int, threads: int, seed: int = 1, kernel=train_piece_subword):
    rng = np.random.default_rng(42)
    W = rng.uniform(-1 / dim, 1 / dim, (table.input_rows, dim)).astype(np.float32)
    C = np.zeros((table.n_words, dim), np.float32)
    counts = 1e6 / np.arange(1, table.n_words + 1)
    p = counts**0.75
    accept, alias = kernel_alias_table(p / p.sum())
    f = counts / counts.sum()
    keep = np.minimum((np.sqrt(f / 1e-3) + 1) * 1e-3 / f, 1.0).astype(np.float32)
    return SpanTrainer(W, C, np.arange(table.n_words, dtype=np.int32), keep, accept, alias, 5, 5, seed, threads,
                       piece_tokens=1000, kernel=kernel, subwords=table)


def test_h_once_per_center_is_fastTexts_h_per_pair():
    # The study's variant recomputes h from the rows for every pair, as fastText does; the kernel carries h from
    # pair to pair (h += gain * step) and adds the window's steps to the rows once. Same draws, same arithmetic up
    # to float rounding: the tables must agree to float tolerance after 20k tokens.
    table = subword_table(WORDS, 3, 6, 2000)
    raw, starts = _zipf_span(len(WORDS), 20000)
    tables = []
    for kernel in (train_piece_subword, subword_piece_kernel(HIDDEN_PER_PAIR)):
        tr = _trainer(table, 16, 1, kernel=kernel)
        loss, sampled, pairs = tr.train_span(raw, starts, 0, 0, 0.05, 0.04)
        tables.append((tr.W, tr.C, loss / sampled, pairs))
    (W0, C0, l0, p0), (W1, C1, l1, p1) = tables
    assert p0 == p1 > 0 and l0 == pytest.approx(l1, rel=1e-3)
    assert np.abs(W0).max() > 10 / 16  # the rows moved far from their start: the comparison is not vacuous
    np.testing.assert_allclose(W0, W1, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(C0, C1, rtol=1e-3, atol=1e-4)


def test_deterministic_mode_ignores_the_thread_count():
    table = subword_table(WORDS, 3, 6, 2000)
    raw, starts = _zipf_span(len(WORDS), 20000)
    results = []
    for threads in (1, 2, 3):
        tr = _trainer(table, 16, threads)
        tr.deterministic = True
        tr.train_span(raw, starts, 0, 0, 0.025, 0.02)
        results.append((tr.W.copy(), tr.C.copy()))
    for W, C in results[1:]:
        assert np.array_equal(W, results[0][0]) and np.array_equal(C, results[0][1])
    again = _trainer(table, 16, 1, seed=2)
    again.train_span(raw, starts, 0, 0, 0.025, 0.02)
    assert not np.array_equal(again.W, results[0][0])  # the seed matters


def test_hogwild_threads_train_every_piece_to_the_same_loss():
    # Racing threads give other bits, but the same draws (so the same pairs) and, after 4 spans of training, the
    # same loss per pair as one thread's, well under the untrained (1 + K) ln 2: their means over 3 seeds agree
    # within 3%.
    table = subword_table(WORDS, 3, 6, 2000)
    losses = {1: [], 2: []}
    for seed in range(3):
        for threads in (1, 2):
            tr = _trainer(table, 16, threads, seed=seed)
            for span in range(4):
                raw, starts = _zipf_span(len(WORDS), 20000, seed=10 * seed + span)
                loss, sampled, pairs = tr.train_span(raw, starts, 0, span, 0.025, 0.02)
            losses[threads].append((loss / sampled, pairs))
    for (l1, p1), (l2, p2) in zip(losses[1], losses[2], strict=True):
        assert p1 == p2 and max(l1, l2) < 0.7 * 6 * np.log(2)
    assert np.mean([x[0] for x in losses[2]]) == pytest.approx(np.mean([x[0] for x in losses[1]]), rel=0.03)


def test_the_trainer_refuses_a_table_that_does_not_fit():
    table = subword_table(WORDS, 3, 6, 2000)
    W = np.zeros((len(WORDS), 8), np.float32)  # no bucket rows
    accept, alias = kernel_alias_table(np.full(len(WORDS), 1 / len(WORDS)))
    keep = np.ones(len(WORDS), np.float32)
    remap = np.arange(len(WORDS), dtype=np.int32)
    with pytest.raises(SGNSError, match="input rows"):
        SpanTrainer(W, W.copy(), remap, keep, accept, alias, 5, 5, 1, kernel=train_piece_subword, subwords=table)
    with pytest.raises(SGNSError, match="table of subword rows"):
        SpanTrainer(W, W.copy(), remap, keep, accept, alias, 5, 5, 1, kernel=train_piece, subwords=table)
    W = np.zeros((table.input_rows, 8), np.float32)
    table.rows[5] = table.input_rows  # a row past the table: the kernel would write outside it
    with pytest.raises(SGNSError, match="does not fit"):
        SpanTrainer(W, W[: len(WORDS)].copy(), remap, keep, accept, alias, 5, 5, 1, kernel=train_piece_subword,
                    subwords=table)


# ------------------------------------------------------------------------------------------- end to end


def test_a_deterministic_subword_run_is_the_numba_kernels_and_ignores_the_thread_count(tmp_path, tiny_corpus):
    from conftest import compose_cfg

    import sgns.train

    vectors = []
    for threads in (1, 2):
        run = tmp_path / f"threads{threads}"
        cfg = compose_cfg(run, ["corpus=text", f"corpus.path={tiny_corpus}", "data.min_count=1", "model=subword",
                                "model.bucket=2000", "model.dim=16", "trainer.epochs=2", "data.span_tokens=5000",
                                "trainer.deterministic=true", f"trainer.threads={threads}", "trainer.device=cpu"])
        metrics = sgns.train.train(cfg)
        assert metrics["pairs"] > 0
        assert "kernel: span" in (run / "resolved.yaml").read_text()  # the CPU default: train_piece_subword
        vectors.append((run / "vectors.bin").read_bytes())
    assert vectors[0] == vectors[1]


@pytest.mark.parametrize("k", [2, 3])
def test_each_pair_is_one_step_of_the_torch_reference(k):
    # The torch reference (sgns.model.SubwordSGNS: h the mean of the rows, every row the full dL/dh) stepped by SGD
    # once per (center, context) pair, in the kernel's order, against the kernel on the same sentence (window 1,
    # every negative `negative`, drawn k times a pair: a repeated negative counts k times, as in the reference).
    import torch

    from sgns.model import SubwordSGNS, sgns_loss

    words = ["where", "here", "there", "banana", "wherever", "ere", "hereby", "nowhere"]
    table = subword_table(words, 3, 6, 40)
    lr, sentence, negative = 0.1, [0, 3, 4, 3, 1], 7
    torch.manual_seed(0)
    ref = SubwordSGNS(table, 8)
    with torch.no_grad():
        ref.input.weight.normal_(0, 0.5)
        ref.output.weight.normal_(0, 0.5)
    W = ref.input.weight.detach().numpy().copy()
    C = ref.output.weight.detach().numpy().copy()
    loss, _, pairs = _run(W, C, table, sentence, negative, k, lr)

    optimizer = torch.optim.SGD(ref.parameters(), lr=lr)
    expected = 0.0
    for i, center in enumerate(sentence):
        for j in (i - 1, i + 1):
            if 0 <= j < len(sentence):
                optimizer.zero_grad()
                step_loss = sgns_loss(*ref(torch.tensor([center]), torch.tensor([sentence[j]]),
                                           torch.full((1, k), negative)))
                step_loss.backward()
                optimizer.step()
                expected += float(step_loss.detach())
    assert pairs == 8 and loss == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(W, ref.input.weight.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(C, ref.output.weight.detach().numpy(), rtol=1e-5, atol=1e-6)
