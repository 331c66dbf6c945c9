"""model.init_from sources and errors, and FrozenRows (unit level; training runs are in test_init_from_runs)."""

from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np
import pytest
import torch

from sgns.errors import SGNSError
from sgns.pipelines.base import FrozenRows
from sgns.train.init_from import import_vectors, read_initial_vectors
from sgns.vectors import save_word2vec


def tables(n: int = 6, dim: int = 4):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, dim, generator=g), torch.zeros(n, dim)


@pytest.mark.parametrize("binary", [True, False])
def test_word2vec_file_rows_are_imported_by_word(tmp_path: Path, binary: bool):
    words = ["the", "king", "queen", "zebra"]
    vectors = np.arange(16, dtype=np.float32).reshape(4, 4) / 7
    save_word2vec(tmp_path / "v", words, vectors, binary=binary)
    init = read_initial_vectors(tmp_path / "v")
    assert init.output is None and init.dim == 4
    vin, vout = tables()
    before = vin.clone()
    messages: List[str] = []
    rows = import_vectors(vin, vout, ["queen", "a", "the", "b", "c", "d"], init, log=messages.append)
    assert rows.tolist() == [0, 2]
    expected = torch.from_numpy(vectors)
    assert torch.equal(vin[0], expected[2]) and torch.equal(vin[2], expected[0])
    assert torch.equal(vin[[1, 3, 4, 5]], before[[1, 3, 4, 5]])
    assert torch.equal(vout, torch.zeros_like(vout))  # a word2vec file has no output vectors
    assert "2 of 6 vocabulary words" in messages[0] and "input vectors" in messages[0]


def test_gensim_written_file_is_read(tmp_path: Path):
    from gensim.models import KeyedVectors

    kv = KeyedVectors(vector_size=3)
    kv.add_vectors(["a", "b"], np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32))
    kv.save_word2vec_format(str(tmp_path / "g.bin"), binary=True)
    init = read_initial_vectors(tmp_path / "g.bin")
    assert init.words == ["a", "b"] and np.array_equal(init.input[1], [4, 5, 6])


def test_checkpoint_and_run_dir_give_both_tables(tmp_path: Path):
    from sgns.train.checkpoint import save_checkpoint

    run = tmp_path / "run"
    vin, vout = torch.randn(3, 4), torch.randn(3, 4)
    state = {"model": {"input.weight": vin, "output.weight": vout}, "progress": {"step": 10},
             "vocab": {"words": ["x", "y", "z"], "counts": torch.tensor([3, 2, 1])}}
    save_checkpoint(state, run, 10, keep=1)
    for source in (run, run / "checkpoints" / "step-00000010.pt"):
        init = read_initial_vectors(source)
        assert init.words == ["x", "y", "z"] and np.array_equal(init.output, vout.numpy())
        a, b = tables(4)
        messages: List[str] = []
        rows = import_vectors(a, b, ["q", "z", "x", "r"], init, log=messages.append)
        assert rows.tolist() == [1, 2]
        assert torch.equal(a[1], vin[2]) and torch.equal(b[2], vout[0]) and torch.equal(b[0], torch.zeros(4))
        assert "input and output vectors" in messages[0]


def test_run_dir_without_checkpoints_uses_its_vectors_file(tmp_path: Path):
    save_word2vec(tmp_path / "vectors.bin", ["a"], np.ones((1, 2), dtype=np.float32))
    init = read_initial_vectors(tmp_path)
    assert init.words == ["a"] and init.output is None


def one_line_error(path, match: str) -> None:
    with pytest.raises(SGNSError, match=match) as e:
        read_initial_vectors(path)
    assert "\n" not in str(e.value) and str(e.value).startswith("model.init_from=")


def test_unreadable_sources_are_one_line_errors(tmp_path: Path):
    one_line_error(tmp_path / "missing.bin", "no such file")
    (tmp_path / "junk.txt").write_bytes(b"\x00\x01garbage that is no header\n")
    one_line_error(tmp_path / "junk.txt", "not a word2vec file")
    (tmp_path / "short.txt").write_text("3 2\na 1 2\n")
    one_line_error(tmp_path / "short.txt", "truncated")
    (tmp_path / "bad.pt").write_bytes(b"PK\x03\x04 not really a zip")
    one_line_error(tmp_path / "bad.pt", "bad.pt")
    (tmp_path / "empty").mkdir()
    one_line_error(tmp_path / "empty", "not a run directory")
    torch.save({"something": 1}, tmp_path / "other.pt")
    one_line_error(tmp_path / "other.pt", "not an sgns checkpoint")


def test_dimension_mismatch_no_shared_word_and_nan_are_clear_errors(tmp_path: Path):
    save_word2vec(tmp_path / "v.bin", ["a", "b"], np.ones((2, 3), dtype=np.float32))
    init = read_initial_vectors(tmp_path / "v.bin")
    vin, vout = tables(4, 5)
    with pytest.raises(SGNSError, match="3-dimensional vectors but model.dim=5: set model.dim=3"):
        import_vectors(vin, vout, ["a"], init)
    vin, vout = tables(4, 3)
    with pytest.raises(SGNSError, match="shares no word"):
        import_vectors(vin, vout, ["x", "y"], init)
    init.input[1, 0] = np.nan
    with pytest.raises(SGNSError, match="non-finite"):
        import_vectors(vin, vout, ["a"], init)


def test_frozen_rows_come_back_bit_identical_and_others_keep_their_update():
    weight = torch.randn(10, 4)
    frozen = FrozenRows(weight, np.array([2, 5, 7]))
    original = weight.clone()
    with torch.no_grad():
        weight += 1.0  # a step that changed every row
    frozen.restore(torch.tensor([5, 5, 3, 2]))  # duplicates, one unfrozen row
    assert torch.equal(weight[[2, 5]], original[[2, 5]])
    assert torch.equal(weight[7], original[7] + 1.0)  # not touched by this batch: left for a later restore
    assert torch.equal(weight[3], original[3] + 1.0)
    frozen.restore()
    assert torch.equal(weight[[2, 5, 7]], original[[2, 5, 7]])
    assert torch.equal(weight[[0, 1, 3, 4, 6, 8, 9]], original[[0, 1, 3, 4, 6, 8, 9]] + 1.0)
