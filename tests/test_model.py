import math
import sys
from pathlib import Path

import pytest
import torch

from sgns.model import SGNS, embedding_table, sgns_loss


def test_word2vec_initialisation():
    model = SGNS(50, 8)
    w = model.input.weight
    assert w.abs().max() <= 0.5 / 8 and w.std() > 0.01 / 8
    assert (model.output.weight == 0).all()
    assert model.input.sparse and model.output.sparse


def test_loss_matches_hand_computation():
    model = SGNS(4, 2)
    with torch.no_grad():
        model.input.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.5, 0.5], [-1.0, 1.0]]))
        model.output.weight.copy_(torch.tensor([[0.5, 1.0], [1.0, -1.0], [0.0, 0.3], [2.0, 0.0]]))
    centers, contexts = torch.tensor([0, 1]), torch.tensor([2, 3])
    negatives = torch.tensor([[1, 3], [0, 2]])
    loss = sgns_loss(*model(centers, contexts, negatives))

    def sig(x: float) -> float:
        return 1 / (1 + math.exp(-x))

    W, C = model.input.weight.tolist(), model.output.weight.tolist()

    def dot(i: int, j: int) -> float:
        return W[i][0] * C[j][0] + W[i][1] * C[j][1]

    expected = 0.0
    for center, context, negs in [(0, 2, (1, 3)), (1, 3, (0, 2))]:
        expected -= math.log(sig(dot(center, context)))
        expected -= sum(math.log(1 - sig(dot(center, n))) for n in negs)
    assert abs(loss.item() - expected) < 1e-5


def test_shared_negatives_give_each_group_the_same_draw():
    model = SGNS(10, 4)
    with torch.no_grad():
        model.output.weight.normal_()
    centers, contexts = torch.tensor([1, 2, 3, 4, 5]), torch.tensor([2, 3, 4, 5, 6])
    shared = torch.tensor([[7, 8], [9, 0], [1, 2]])  # groups of 2: (1, 2), (3, 4), (5,)
    _, negative = model(centers, contexts, shared)
    _, expanded = model(centers, contexts, shared.repeat_interleave(2, 0)[:5])
    assert negative.shape == (5, 2) and torch.allclose(negative, expanded, atol=1e-6)


def huge_kib_of_mapping(address: int) -> int:
    """AnonHugePages (KiB) of the mapping of this process that holds `address` (/proc/self/smaps)."""
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            lo, hi = (int(x, 16) for x in head.split("-"))
            inside = lo <= address < hi
        elif inside and head == "AnonHugePages:":
            return int(line.split()[1])
    return 0


def test_a_large_table_is_born_in_huge_pages_with_nn_embeddings_values():
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if not sys.platform.startswith("linux") or not thp.exists() or "[never]" in thp.read_text():
        pytest.skip("needs Linux transparent huge pages")
    torch.manual_seed(3)
    table = embedding_table(300_000, 64, sparse=True)  # 77 MB: over the huge-page threshold
    after = torch.rand(1)
    torch.manual_seed(3)
    reference = torch.nn.Embedding(300_000, 64, sparse=True)
    assert torch.equal(table.weight, reference.weight) and table.sparse and torch.equal(after, torch.rand(1))
    # faulted in as 2 MiB pages by its first write (no MADV_COLLAPSE, which converts 4 KiB pages later, slowly)
    assert huge_kib_of_mapping(table.weight.data_ptr() + table.weight.nbytes // 2) >= 2048
