"""The SGD kernels against autograd + torch.optim.SGD, their determinism, the CUDA path, and scale."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from sgns.errors import SGNSError
from sgns.kernels import make_sgd_step
from sgns.kernels.numba_kernels import numba_step, sequential_step
from sgns.kernels.torch_kernels import optimizer_step, sgd_step
from sgns.model import SGNS, sgns_loss


def _model(vocab: int = 60, dim: int = 16, seed: int = 0) -> SGNS:
    torch.manual_seed(seed)
    model = SGNS(vocab, dim)
    with torch.no_grad():  # non-zero output vectors, so every gradient term is exercised
        model.output.weight.normal_(0, 0.3)
        model.input.weight.normal_(0, 0.3)
    return model


def _copy(model: SGNS) -> SGNS:
    twin = SGNS(*model.input.weight.shape)
    twin.load_state_dict(model.state_dict())
    return twin


def _batch(vocab: int, size: int, k: int, groups: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    # Skewed ids, so rows repeat within the batch (as frequent words do) and updates must accumulate.
    centers = (torch.rand(size, generator=g) ** 3 * vocab).long()
    contexts = (torch.rand(size, generator=g) ** 3 * vocab).long()
    negatives = torch.randint(vocab, (groups, k), generator=g)
    return centers, contexts, negatives


def _autograd_sgd(model: SGNS, centers, contexts, negatives, lr: float) -> torch.Tensor:
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    loss = sgns_loss(*model(centers, contexts, negatives))
    loss.backward()
    optimizer.step()
    return loss.detach()


@pytest.mark.parametrize("groups", [200, 50, 7])  # exact sampling, and G positives sharing each draw
@pytest.mark.parametrize("kernel", ["torch", "numba"])
def test_exact_kernels_match_autograd_sgd(kernel, groups):
    ref = _model()
    centers, contexts, negatives = _batch(60, 200, 5, groups)
    assert len(torch.unique(centers)) < 150  # repeated rows are part of the test
    mine, before = _copy(ref), _copy(ref)
    expected_loss = _autograd_sgd(ref, centers, contexts, negatives, lr=0.05)
    step = make_sgd_step(kernel, torch.device("cpu"))
    loss = step(mine, centers, contexts, negatives, 0.05)
    assert float(loss) == pytest.approx(float(expected_loss), rel=1e-5)
    for name in ("input", "output"):
        got, want = getattr(mine, name).weight, getattr(ref, name).weight
        assert not torch.equal(want, getattr(before, name).weight)  # the step moved the weights
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_exact_kernels_take_int32_strided_views():
    # The data stage hands the CPU kernels int32 column views of packed pairs.
    ref = _model()
    centers, contexts, negatives = _batch(60, 100, 5, 100)
    packed = torch.stack([centers, contexts], 1).to(torch.int32)
    expected = _copy(ref)
    numba_step(expected, centers, contexts, negatives, 0.05, 2)
    for step in (sgd_step, lambda m, *a: numba_step(m, *a, threads=2)):
        mine = _copy(ref)
        step(mine, packed[:, 0], packed[:, 1], negatives, 0.05)
        torch.testing.assert_close(mine.output.weight, expected.output.weight, rtol=1e-5, atol=1e-6)


def test_numba_kernel_is_bitwise_identical_for_any_thread_count():
    ref = _model(vocab=40, dim=32)
    centers, contexts, negatives = _batch(40, 3000, 5, 3000)
    results = []
    for owners in (1, 2, 3, 8):
        m = _copy(ref)
        for _ in range(3):
            numba_step(m, centers, contexts, negatives, 0.02, owners)
        results.append(m)
    for m in results[1:]:
        assert torch.equal(m.input.weight, results[0].input.weight)
        assert torch.equal(m.output.weight, results[0].output.weight)


def _word2vec_reference(W: np.ndarray, C: np.ndarray, centers, contexts, negatives, lr: float) -> None:
    """Word2vec's per-pair update in plain float64 numpy, the definition `sequential` must follow."""
    size = -(-len(centers) // len(negatives))
    for i, (w_id, c_id) in enumerate(zip(centers, contexts, strict=True)):
        grad_w = np.zeros(W.shape[1])
        for row, label in [(c_id, 1.0)] + [(r, 0.0) for r in negatives[i // size]]:
            g = lr * (label - 1 / (1 + np.exp(-W[w_id] @ C[row])))
            grad_w += g * C[row]
            C[row] += g * W[w_id]
        W[w_id] += grad_w


def test_sequential_kernel_is_word2vecs_pair_by_pair_update():
    model = _model()
    centers, contexts, negatives = _batch(60, 150, 5, 150)
    W, C = model.input.weight.detach().numpy().astype(np.float64), model.output.weight.detach().numpy().astype(
        np.float64)
    _word2vec_reference(W, C, centers.numpy(), contexts.numpy(), negatives.numpy(), 0.05)
    batch_model = _copy(model)
    sgd_step(batch_model, centers, contexts, negatives, 0.05)
    sequential_step(model, centers, contexts, negatives, 0.05)
    np.testing.assert_allclose(model.input.weight.detach().numpy(), W, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.output.weight.detach().numpy(), C, rtol=1e-4, atol=1e-5)
    # ...which is not the batch step (rows repeat, so order matters): the reference can tell them apart.
    assert not np.allclose(batch_model.output.weight.detach().numpy(), C, rtol=1e-4, atol=1e-5)


def test_sequential_kernel_on_one_pair_is_the_exact_step():
    # One pair with distinct output rows: every term sees the old vectors, as in the batch step.
    ref = _model()
    centers, contexts, negatives = torch.tensor([3]), torch.tensor([7]), torch.tensor([[1, 9, 20, 33, 41]])
    mine = _copy(ref)
    _autograd_sgd(ref, centers, contexts, negatives, 0.1)
    sequential_step(mine, centers, contexts, negatives, 0.1)
    torch.testing.assert_close(mine.output.weight, ref.output.weight, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(mine.input.weight, ref.input.weight, rtol=1e-5, atol=1e-6)


def test_kernels_touch_only_the_rows_of_the_batch():
    ref = _model(vocab=500)
    centers, contexts, negatives = _batch(100, 300, 5, 300)  # ids < 100 only
    for kernel in ("torch", "numba", "sequential"):
        m = _copy(ref)
        make_sgd_step(kernel, torch.device("cpu"))(m, centers, contexts, negatives, 0.05)
        assert m.input.weight.grad is None and m.output.weight.grad is None
        assert torch.equal(m.input.weight[100:], ref.input.weight[100:])
        assert torch.equal(m.output.weight[100:], ref.output.weight[100:])
        assert not torch.equal(m.output.weight[:100], ref.output.weight[:100])


def test_torch_step_allocates_nothing_vocabulary_sized():
    vocab, dim = 200_000, 32
    model = SGNS(vocab, dim)
    centers, contexts, negatives = _batch(vocab, 1024, 5, 1024)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        sgd_step(model, centers, contexts, negatives, 0.025)
    biggest = max((e.cpu_memory_usage for e in prof.events()), default=0)
    assert 0 < biggest < vocab * dim * 4 / 10  # batch-sized buffers only, never a V x D gradient


def test_sparse_adam_path_uses_sparse_gradients():
    model = _model()
    centers, contexts, negatives = _batch(60, 64, 5, 64)
    optimizer = torch.optim.SparseAdam(list(model.parameters()), lr=0.01)
    optimizer_step(model, optimizer, centers, contexts, negatives)
    assert model.input.weight.grad.is_sparse and model.output.weight.grad.is_sparse


def test_cpu_only_kernels_refuse_other_devices_in_one_line():
    with pytest.raises(SGNSError, match="trainer.kernel=torch"):
        make_sgd_step("numba", torch.device("cuda"))
    assert make_sgd_step("auto", torch.device("cuda")) is sgd_step


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_step_matches_cpu():
    from sgns.negatives import NegativeSampler

    ref = _model()
    centers, contexts, negatives = _batch(60, 256, 5, 64)
    gpu = _copy(ref).cuda()
    cpu_loss = sgd_step(ref, centers, contexts, negatives, 0.05)
    step = make_sgd_step("auto", torch.device("cuda"))
    gpu_loss = step(gpu, centers.cuda(), contexts.cuda(), negatives.cuda(), 0.05)
    assert float(gpu_loss) == pytest.approx(float(cpu_loss), rel=1e-4)
    torch.testing.assert_close(gpu.output.weight.cpu(), ref.output.weight, rtol=1e-4, atol=1e-5)
    sampler = NegativeSampler(np.full(60, 1 / 60), torch.device("cuda"), 0)
    assert sampler.sample(8, 5).device.type == "cuda"  # negatives are drawn on the device


@pytest.mark.slow
def test_million_word_vocabulary_at_dim_300_needs_no_dense_gradient_memory():
    # In a fresh process: the tables (2 x 1.2 GB) are resident first; a dense V x D gradient would add
    # 1.2 GB more, batch-sized buffers a few MB.
    code = textwrap.dedent("""
        import torch
        from sgns.kernels import make_sgd_step
        from sgns.model import SGNS
        def hwm():
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM"):
                    return int(line.split()[1]) // 1024
        model = SGNS(1_000_000, 300)
        model.input.weight.data.add_(0)  # touch every page of both tables
        model.output.weight.data.add_(1e-3)
        before = hwm()
        for kernel in ("numba", "torch"):
            step = make_sgd_step(kernel, torch.device("cpu"))
            for _ in range(3):
                c = torch.randint(1_000_000, (8192,))
                step(model, c, c.roll(1), torch.randint(1_000_000, (8192, 5)), 0.025)
        print(hwm() - before)
    """)
    grown = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
                .stdout.split()[-1])
    assert grown < 300, f"peak memory grew by {grown} MiB during the steps"


def test_hogwild_kernel_is_sequential_per_slice():
    # Two slices that share no row cannot race: two threads must then give exactly the sequential result.
    ref = _model(vocab=200)
    gen = torch.Generator().manual_seed(5)
    halves = [torch.randint(lo, lo + 100, (3, 30), generator=gen) for lo in (0, 100)]
    centers = torch.cat([h[0] for h in halves])
    contexts = torch.cat([h[1] for h in halves])
    negatives = torch.cat([torch.randint(lo, lo + 100, (30, 5), generator=gen) for lo in (0, 100)])
    seq, hog = _copy(ref), _copy(ref)
    sequential_step(seq, centers, contexts, negatives, 0.05)
    loss = make_sgd_step("hogwild", torch.device("cpu"), 2)(hog, centers, contexts, negatives, 0.05)
    assert torch.isfinite(loss)
    torch.testing.assert_close(hog.input.weight, seq.input.weight, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(hog.output.weight, seq.output.weight, rtol=1e-6, atol=1e-7)
    assert not torch.equal(hog.output.weight, ref.output.weight)
