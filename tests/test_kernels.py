"""The pair pipeline's SGD kernel against autograd + torch.optim.SGD, the kernel choice, the CUDA path, scale.

(The numba kernel over token spans: tests/test_numba_kernels.py.)
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import copy_model as _copy
from conftest import random_model as _model

from sgns.config import Config, OptimizerConfig, TrainerConfig
from sgns.errors import SGNSError
from sgns.model import SGNS, sgns_loss
from sgns.pipelines import choose_pipeline
from sgns.pipelines.torch_step import optimizer_step, sgd_step


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
def test_torch_kernel_matches_autograd_sgd(groups):
    ref = _model()
    centers, contexts, negatives = _batch(60, 200, 5, groups)
    assert len(torch.unique(centers)) < 150  # repeated rows are part of the test
    mine, before = _copy(ref), _copy(ref)
    expected_loss = _autograd_sgd(ref, centers, contexts, negatives, lr=0.05)
    loss = sgd_step(mine, centers, contexts, negatives, 0.05)
    assert float(loss) == pytest.approx(float(expected_loss), rel=1e-5)
    for name in ("input", "output"):
        got, want = getattr(mine, name).weight, getattr(ref, name).weight
        assert not torch.equal(want, getattr(before, name).weight)  # the step moved the weights
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_torch_kernel_takes_int32_strided_views():
    # The data stage hands CPU kernels int32 column views of packed pairs.
    ref = _model()
    centers, contexts, negatives = _batch(60, 100, 5, 100)
    packed = torch.stack([centers, contexts], 1).to(torch.int32)
    expected, mine = _copy(ref), _copy(ref)
    sgd_step(expected, centers, contexts, negatives, 0.05)
    sgd_step(mine, packed[:, 0], packed[:, 1], negatives, 0.05)
    torch.testing.assert_close(mine.output.weight, expected.output.weight, rtol=1e-5, atol=1e-6)


def test_kernels_touch_only_the_rows_of_the_batch():
    ref = _model(vocab=500)
    centers, contexts, negatives = _batch(100, 300, 5, 300)  # ids < 100 only
    m = _copy(ref)
    sgd_step(m, centers, contexts, negatives, 0.05)
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


def _kernel_cfg(kernel: str, optimizer: str = "sgd") -> Config:
    return Config(trainer=TrainerConfig(kernel=kernel), optimizer=OptimizerConfig(name=optimizer))


def uses_numba(cfg, device) -> bool:
    return choose_pipeline(cfg, device) == "span"


def test_kernel_choice():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert uses_numba(_kernel_cfg("auto"), cpu) and uses_numba(_kernel_cfg("numba"), cpu)
    assert not uses_numba(_kernel_cfg("auto"), cuda)  # auto: torch on CUDA
    assert not uses_numba(_kernel_cfg("auto", "sparse_adam"), cpu)  # the numba kernel does plain SGD only
    assert not uses_numba(_kernel_cfg("torch"), cpu)


def test_numba_kernel_refuses_what_it_cannot_run_in_one_line():
    with pytest.raises(SGNSError, match="trainer.kernel=torch"):
        uses_numba(_kernel_cfg("numba"), torch.device("cuda"))
    with pytest.raises(SGNSError, match="plain SGD"):
        uses_numba(_kernel_cfg("numba", "sparse_adam"), torch.device("cpu"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_step_matches_cpu():
    from sgns.pipelines.negatives import NegativeSampler

    ref = _model()
    centers, contexts, negatives = _batch(60, 256, 5, 64)
    gpu = _copy(ref).cuda()
    cpu_loss = sgd_step(ref, centers, contexts, negatives, 0.05)
    gpu_loss = sgd_step(gpu, centers.cuda(), contexts.cuda(), negatives.cuda(), 0.05)
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
        from sgns.pipelines.torch_step import sgd_step
        from sgns.model import SGNS
        def hwm():
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM"):
                    return int(line.split()[1]) // 1024
        model = SGNS(1_000_000, 300)
        model.input.weight.data.add_(0)  # touch every page of both tables
        model.output.weight.data.add_(1e-3)
        before = hwm()
        for _ in range(3):
            c = torch.randint(1_000_000, (8192,))
            sgd_step(model, c, c.roll(1), torch.randint(1_000_000, (8192, 5)), 0.025)
        print(hwm() - before)
    """)
    grown = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
                .stdout.split()[-1])
    assert grown < 300, f"peak memory grew by {grown} MiB during the steps"
