"""model=subword: fastText's skip-gram with negative sampling (sgns.model.SubwordSGNS), checked against fastText's
update derived by hand: src/model.cc `Model::update` (h = mean of the word's input rows; grad accumulated by the
loss; every input row += grad, unscaled for skip-gram) and src/loss.cc `NegativeSamplingLoss::forward` /
`BinaryLogisticLoss::binaryLogistic` (alpha = lr * (label - sigmoid(wo[t] . h)); grad += alpha * wo[t];
wo[t] += alpha * h, target first, then each negative)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sgns.config import ModelConfig
from sgns.errors import SGNSError
from sgns.model import MeanOfRows, SubwordSGNS, check_table_memory, make_model, sgns_loss, uniform_table
from sgns.pipelines.torch_step import sgd_step
from sgns.subwords import subword_table

WORDS = ["aaa", "abab", "ba", "b", "cab"]  # "aaa" has the n-gram "aa" twice: a row repeated in its list


def tiny_model(bucket: int = 11, dim: int = 4, seed: int = 0) -> SubwordSGNS:
    torch.manual_seed(seed)
    model = SubwordSGNS(subword_table(WORDS, 2, 3, bucket), dim)
    with torch.no_grad():
        model.output.weight.normal_(0, 0.5)  # fastText starts it at zero: random here, so every term is non-zero
        model.input.weight.normal_(0, 0.5)
    return model


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + np.exp(-x))


def fasttext_update(wi: np.ndarray, wo: np.ndarray, input_rows: np.ndarray, target: int, negatives: list,
                    lr: float) -> float:
    """fastText's Model::update for one (center, context) pair of its skip-gram, in place; returns the loss."""
    hidden = wi[input_rows].mean(0)  # computeHidden
    grad = np.zeros_like(hidden)
    loss = 0.0
    for t, label in [(target, 1.0), *[(n, 0.0) for n in negatives]]:  # NegativeSamplingLoss::forward
        score = sigmoid(wo[t] @ hidden)
        alpha = lr * (label - score)
        grad += alpha * wo[t]  # before wo[t] moves
        wo[t] += alpha * hidden
        loss += -np.log(score) if label else -np.log(1.0 - score)
    for row in input_rows:  # not divided by len(input_rows): only the supervised model normalises
        wi[row] += grad
    return loss


def test_the_steps_match_fasttexts_update_derived_by_hand():
    model = tiny_model()
    rows = model.table.rows_of(0).astype(np.int64)
    assert len(rows) > len(set(rows.tolist()))  # a repeated row gets the gradient once per occurrence, as fastText
    wi, wo = model.input.weight.detach().numpy().astype(np.float64), model.output.weight.detach().numpy().astype(
        np.float64)
    lr, center, context, negatives = 0.1, 0, 2, [3, 4]
    expected_loss = fasttext_update(wi, wo, rows, context, negatives, lr)

    # the reference: autograd through MeanOfRows (a sparse gradient) and plain SGD on both tables
    reference = tiny_model()
    optimizer = torch.optim.SGD(reference.parameters(), lr=lr)
    loss = sgns_loss(*reference(torch.tensor([center]), torch.tensor([context]), torch.tensor([negatives])))
    loss.backward()
    optimizer.step()
    assert loss.item() == pytest.approx(expected_loss, rel=1e-5)
    assert np.allclose(reference.input.weight.detach().numpy(), wi, atol=1e-6)
    assert np.allclose(reference.output.weight.detach().numpy(), wo, atol=1e-6)

    # the device pipeline's hand-derived step
    stepped = tiny_model()
    step_loss = sgd_step(stepped, torch.tensor([center], dtype=torch.int32), torch.tensor([context], dtype=torch.int32),
                         torch.tensor([negatives], dtype=torch.int32), lr)
    assert step_loss.item() == pytest.approx(expected_loss, rel=1e-5)
    assert np.allclose(stepped.input.weight.detach().numpy(), wi, atol=1e-6)
    assert np.allclose(stepped.output.weight.detach().numpy(), wo, atol=1e-6)


def test_one_step_per_pair_is_fasttexts_skipgram_over_a_window():
    """fastText recomputes h for every context of a center: one step per pair, in order, is its skip-gram."""
    model = tiny_model()
    wi, wo = (t.detach().numpy().astype(np.float64) for t in (model.input.weight, model.output.weight))
    rows = model.table.rows_of(1).astype(np.int64)
    for context, negatives in [(2, [0, 3]), (4, [3, 2]), (0, [2, 4])]:
        fasttext_update(wi, wo, rows, context, negatives, 0.05)
        sgd_step(model, torch.tensor([1]), torch.tensor([context]), torch.tensor([negatives]), 0.05)
    assert np.allclose(model.input.weight.detach().numpy(), wi, atol=1e-6)
    assert np.allclose(model.output.weight.detach().numpy(), wo, atol=1e-6)


@pytest.mark.parametrize("shared", [1, 2])
def test_the_batched_step_is_the_references_sgd_step(shared: int):
    centers = torch.tensor([0, 1, 2, 0, 4, 3, 1])
    contexts = torch.tensor([1, 2, 3, 4, 0, 1, 0])
    draws = torch.Generator().manual_seed(3)
    negatives = torch.randint(0, len(WORDS), (-(-len(centers) // shared), 3), generator=draws)
    reference = tiny_model()
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.07)
    loss = sgns_loss(*reference(centers, contexts, negatives))
    loss.backward()
    optimizer.step()
    stepped = tiny_model()
    step_loss = sgd_step(stepped, centers.int(), contexts.int(), negatives.int(), 0.07)
    assert step_loss.item() == pytest.approx(loss.item(), rel=1e-5)
    assert torch.allclose(stepped.input.weight, reference.input.weight.detach(), atol=1e-6)
    assert torch.allclose(stepped.output.weight, reference.output.weight.detach(), atol=1e-6)


def test_the_forward_is_the_mean_and_each_row_gets_the_full_gradient():
    model = tiny_model()
    weight = model.input.weight
    found = model.center_rows(torch.tensor([1, 3]))
    h = MeanOfRows.apply(weight, found.rows, found.bag, found.counts)
    for i, word in enumerate([1, 3]):
        rows = torch.from_numpy(model.table.rows_of(word).astype(np.int64))
        assert torch.allclose(h[i], weight[rows].mean(0))
    upstream = torch.randn(2, 4)
    (h * upstream).sum().backward()
    grad = weight.grad.to_dense()
    for i, word in enumerate([1, 3]):
        for row in set(model.table.rows_of(word).tolist()):
            times = int((model.table.rows_of(word) == row).sum())
            others = sum(int((model.table.rows_of(w) == row).sum()) * upstream[j] for j, w in enumerate([1, 3])
                         if w != word)
            assert torch.allclose(grad[row], times * upstream[i] + others, atol=1e-6)  # dL/dh, not dL/dh / n


def test_fasttexts_initialisation_and_tables():
    model = SubwordSGNS(subword_table(WORDS, 2, 3, 1000), 50)
    assert model.input.weight.shape == (len(WORDS) + 1000, 50) and model.output.weight.shape == (len(WORDS), 50)
    w = model.input.weight
    assert w.abs().max() <= 1 / 50 and w.std() > 0.4 / 50  # uniform(-1/dim, 1/dim): std 1/(dim sqrt 3)
    assert (model.output.weight == 0).all()
    assert set(model.state_dict()) == {"input.weight", "output.weight"}  # the rows are rebuilt, not saved


@pytest.mark.parametrize("threads", [2, 3, 7])
def test_the_uniform_initialisation_is_the_seeds_whatever_the_threads(threads: int):
    """The input table's init (uniform_table) is a function of torch's seed and each value's position only: filled on
    any number of threads (odd row counts and dims: rows split mid-pair) it gives the one thread's values."""
    tables = []
    for workers in (1, threads):
        torch.manual_seed(3)
        table = torch.full((40_001, 7), 9.0)
        uniform_table(table, -0.25, 0.5, threads=workers)
        tables.append(table)
    assert torch.equal(tables[0], tables[1])
    values = tables[0]
    assert values.min() >= -0.25 and values.max() < 0.5 and abs(values.mean().item() - 0.125) < 0.005
    assert len(torch.unique(values)) > 0.99 * values.numel()  # 24 random bits a value: hardly any repeats
    torch.manual_seed(4)
    other = torch.empty(40_001, 7)
    uniform_table(other, -0.25, 0.5, threads=threads)
    assert not torch.equal(other, values)  # another seed, other values


def test_word_vectors_are_the_mean_of_each_words_rows():
    model = tiny_model()
    vectors = model.word_vectors()
    for i in range(len(WORDS)):
        rows = torch.from_numpy(model.table.rows_of(i).astype(np.int64))
        assert torch.allclose(vectors[i], model.input.weight[rows].mean(0))


def test_make_model_builds_the_subword_rows_from_the_vocabulary():
    model = make_model(ModelConfig(name="subword", dim=8, minn=2, maxn=3, bucket=100), len(WORDS), WORDS)
    assert isinstance(model, SubwordSGNS) and model.input.weight.shape == (len(WORDS) + 100, 8)
    assert np.array_equal(model.rows.numpy(), subword_table(WORDS, 2, 3, 100).rows)


def test_the_memory_check_counts_the_bucket_rows():
    """2M buckets x dim 100 is 0.8 GB: with 10k words the tables need 0.75 GiB, over a 0.5 GiB budget."""
    check_table_memory(10_000, 100, available=1 << 29)  # the words alone fit
    with pytest.raises(SGNSError, match=r"10,000 words and 2,000,000 n-gram buckets x 100 dims need 0.8 GiB .*"
                                        r"model.bucket"):
        check_table_memory(10_000, 100, available=1 << 29, bucket=2_000_000)


def test_the_row_cap_counts_each_pair_that_reaches_an_ngram_row():
    """row_cap > 0 (large batches): a row's summed input update is scaled by min(1, cap / n), n the pairs whose
    center holds the row (once per occurrence); the output side is SGNS's."""
    centers, contexts = torch.tensor([0, 0, 1, 3, 0]), torch.tensor([1, 2, 3, 4, 2])
    negatives = torch.tensor([[2, 4], [3, 4], [0, 2], [1, 2], [4, 3]])
    exact, capped = tiny_model(), tiny_model()
    before = exact.input.weight.detach().clone()
    sgd_step(exact, centers, contexts, negatives, 0.1)
    sgd_step(capped, centers, contexts, negatives, 0.1, row_cap=2.0)
    hits = torch.zeros(len(before))
    for c in centers.tolist():
        for row in exact.table.rows_of(c).tolist():
            hits[row] += 1
    scale = (2.0 / hits.clamp(min=2.0)).unsqueeze(1)
    assert (hits > 2).any()  # some rows are capped
    assert torch.allclose(capped.input.weight.detach() - before, (exact.input.weight.detach() - before) * scale,
                          atol=1e-6)


def test_the_final_evaluation_scores_the_vectors_already_composed_and_nothing_without_a_benchmark(tmp_path):
    """The loop's last evaluation takes the word vectors it just wrote (a subword run's are a pass over its rows,
    not to be composed twice), and with no benchmark computes nothing."""
    from sgns.evaluate import EvalSuite, standalone_config
    from sgns.train.loop import evaluate

    model = tiny_model(bucket=50, dim=6)
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("aaa\tabab\t1.0\nba\tcab\t3.0\nb\taaa\t2.0\nabab\tba\t0.5\n", encoding="utf-8")
    suite = EvalSuite(standalone_config(similarities=[str(pairs)]), WORDS, ngrams=(2, 3, 50))
    device = torch.device("cpu")
    own = evaluate(suite, model, device, False)
    assert own == evaluate(suite, model, device, False, model.word_vectors().numpy())
    given = np.random.default_rng(1).standard_normal((len(WORDS), 6)).astype(np.float32)
    expected = suite.score(given, device, ngram_table=model.input.weight.detach()[len(WORDS):])
    assert evaluate(suite, model, device, False, given) == expected != own
    empty = EvalSuite(standalone_config(), WORDS, ngrams=(2, 3, 50))
    assert evaluate(empty, model, device, False) == {}


def test_a_checkpoint_keeps_only_the_rows_words_have_and_loads_the_whole_table_back(tmp_path):
    """A subword model's checkpoint stores the input rows its words have (their own rows and n-gram buckets) and
    the initial fill's seed; loading puts the table back bit for bit, untrained buckets included. A table whose
    buckets came from elsewhere (init_from) is stored whole."""
    from sgns.train.checkpoint import load_checkpoint, save_checkpoint
    from sgns.train.runs import checkpoint_tables

    torch.manual_seed(5)
    model = SubwordSGNS(subword_table(["where", "here", "there", "a"], 3, 6, 5000), 8)
    trained = torch.unique(model.rows)
    with torch.no_grad():  # training changes only the rows words have
        model.input.weight[trained] += torch.randn(len(trained), 8)
        model.output.weight.normal_()
    tables, fill = model.checkpoint_state()
    assert fill is not None and len(tables["input.weight"]) == len(trained) < model.input.num_embeddings
    state = {"model": tables, "input_fill": fill, "progress": {"step": 1}}
    path = save_checkpoint(state, tmp_path / "run", 1, keep=2)
    loaded = load_checkpoint(path)
    assert loaded["input_fill"] == fill and set(loaded["model"]) == set(model.state_dict())
    for key, value in model.state_dict().items():
        assert torch.equal(loaded["model"][key], value), key
    mapped = load_checkpoint(path, mmap=True)  # a mapped read (settings, progress) leaves the rows as stored...
    assert mapped["input_fill"] == fill and len(mapped["model"]["input.weight"]) == len(trained)
    words = ["where", "here", "there", "a"]
    mapped["vocab"], mapped["config"] = {"words": words}, {"model": {"name": "subword", "minn": 3, "maxn": 6,
                                                                     "bucket": 5000}}
    _, vin, vout = checkpoint_tables(mapped, path)  # ...and the tables its readers take are whole
    assert torch.equal(vin, model.input.weight) and torch.equal(vout, model.output.weight)
    whole = SubwordSGNS(subword_table(["where", "here"], 3, 6, 5000), 8)
    whole.input_fill = None  # as init_from leaves it after importing another model's buckets
    tables, fill = whole.checkpoint_state()
    assert fill is None and torch.equal(tables["input.weight"], whole.input.weight)
    full = SubwordSGNS(subword_table(["where", "here"], 0, 0, 0), 8)  # no n-grams: every row is a word's
    assert full.checkpoint_state()[1] is None
