"""A model whose tables cannot fit says so at setup, in one line, with the size and what to change."""

from pathlib import Path

import pytest

from sgns.errors import SGNSError
from sgns.model import check_table_memory


def test_tables_over_the_available_memory_are_refused_with_the_size_needed():
    with pytest.raises(SGNSError, match=r"2,000,000 words x 100 dims need 1.5 GiB but 1.0 GiB .* model.dim"):
        check_table_memory(2_000_000, 100, available=1 << 30)
    check_table_memory(2_000_000, 100, available=2 << 30)  # fits: no error


def test_a_huge_dim_fails_at_setup_with_one_line(tmp_path: Path):
    from conftest import compose_cfg

    from sgns.train import train

    cfg = compose_cfg(tmp_path / "run", ["model.dim=100000000", "trainer.epochs=1", "trainer.device=cpu"])
    with pytest.raises(SGNSError, match="need .* GiB but .* available") as failure:
        train(cfg)
    assert "\n" not in str(failure.value)
