"""Full-softmax skip-gram: the hand-written step against autograd on the reference loss."""

from __future__ import annotations

import pytest
import torch

import sgns.pipelines.softmax as softmax
from sgns.model import FullSoftmax, full_softmax_loss
from sgns.pipelines.softmax import full_softmax_sgd_step


def devices():
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("chunk_logits", [1 << 24, 50])  # one chunk, and many chunks of a few rows
def test_step_equals_autograd_sgd_on_the_summed_cross_entropy(device, chunk_logits, monkeypatch):
    monkeypatch.setattr(softmax, "CHUNK_LOGITS", chunk_logits)
    torch.manual_seed(0)
    model = FullSoftmax(23, 8).to(device)
    with torch.no_grad():
        model.output.weight.normal_()  # not the all-zero start: every gradient term matters
    reference = FullSoftmax(23, 8).to(device)
    reference.load_state_dict(model.state_dict())
    centers = torch.randint(0, 23, (64,), device=device)
    centers[:5] = 3  # repeated centers: their updates add up
    contexts = torch.randint(0, 23, (64,), device=device)
    lr = 0.05

    loss = full_softmax_sgd_step(model, centers, contexts, lr)
    expected = full_softmax_loss(reference, centers, contexts)
    expected.backward()
    with torch.no_grad():
        for p in reference.parameters():
            p -= lr * p.grad
    torch.testing.assert_close(loss, expected.detach())
    torch.testing.assert_close(model.input.weight, reference.input.weight)
    torch.testing.assert_close(model.output.weight, reference.output.weight)


def test_training_lowers_the_loss_on_a_learnable_mapping():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: a second thread only waits on a busy machine
    try:
        _learn_mapping()
    finally:
        torch.set_num_threads(threads)


def _learn_mapping():
    torch.manual_seed(1)
    model = FullSoftmax(50, 16)
    centers = torch.randint(0, 50, (500,))
    contexts = (centers * 7 + 3) % 50  # each center has one context: learnable to near-zero loss
    first = float(full_softmax_sgd_step(model, centers, contexts, 0.02)) / len(centers)
    for _ in range(100):
        last = float(full_softmax_sgd_step(model, centers, contexts, 0.02)) / len(centers)
    assert first == pytest.approx(torch.log(torch.tensor(50.0)).item(), rel=1e-4)  # zero output table: uniform
    assert last < 0.2 * first


def test_full_softmax_trains_through_the_loop(tmp_path):
    """Same data, loop and outputs as SGNS; the loss starts at ln|V| (zero output table) and must fall."""
    import math

    from conftest import compose_cfg

    from sgns.load import load_model
    from sgns.train import train

    metrics = train(compose_cfg(tmp_path / "run", [
        "model=full_softmax", "corpus.synthetic.sentences=3000", "corpus.synthetic.filler_words=200",
        "trainer.epochs=2", "trainer.device=cpu", "trainer.threads=1", "model.dim=16", "data.batch_size=512",
        "optimizer.lr=0.05", "eval.projector_words=0", "trainer.log_every=5"]))
    assert metrics["status"] == "finished" and (tmp_path / "run" / "vectors.bin").is_file()
    assert metrics["loss"] < math.log(metrics["vocab_size"]) - 0.2
    assert (tmp_path / "run" / "tb").is_dir() and "planted_analogies" in metrics["eval"]
    assert load_model(tmp_path / "run").input.weight.shape == (metrics["vocab_size"], 16)


@pytest.mark.parametrize("bad", [["trainer.kernel=numba"], ["optimizer=sparse_adam"]])
def test_full_softmax_refuses_a_pair_kernel_or_another_optimizer(tmp_path, bad):
    from conftest import compose_cfg

    from sgns.errors import SGNSError
    from sgns.train import train

    with pytest.raises(SGNSError, match="model=full_softmax trains with its own torch SGD step"):
        train(compose_cfg(tmp_path / "run", ["model=full_softmax", "corpus.synthetic.sentences=500",
                                             "trainer.device=cpu", *bad]))


def test_unknown_model_name_is_a_range_error(tmp_path):
    from conftest import compose_cfg

    from sgns.config import validate
    from sgns.errors import SGNSError

    with pytest.raises(SGNSError, match="model.name='nope' is out of range"):
        validate(compose_cfg(tmp_path, ["model.name=nope"]))
