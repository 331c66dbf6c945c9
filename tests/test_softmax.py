"""Full-softmax skip-gram: the hand-written step against autograd on the reference loss."""

from __future__ import annotations

import pytest
import torch

import sgns.kernels.softmax as softmax
from sgns.kernels.softmax import full_softmax_sgd_step
from sgns.softmax import FullSoftmax, full_softmax_loss


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
    torch.manual_seed(1)
    model = FullSoftmax(50, 16)
    centers = torch.randint(0, 50, (2000,))
    contexts = (centers * 7 + 3) % 50  # each center has one context: learnable to near-zero loss
    first = float(full_softmax_sgd_step(model, centers, contexts, 0.01)) / len(centers)
    for _ in range(300):
        last = float(full_softmax_sgd_step(model, centers, contexts, 0.01)) / len(centers)
    assert first == pytest.approx(torch.log(torch.tensor(50.0)).item(), rel=1e-4)  # zero output table: uniform
    assert last < 0.2 * first
