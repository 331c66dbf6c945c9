"""A process alone is a team of one, and a rank other than 0 writes nothing: what lets the train loop run the same
code on every rank (the ranks themselves are tested under torchrun in test_distributed.py)."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from sgns.config import EvalConfig
from sgns.distributed import Team
from sgns.errors import SGNSError
from sgns.evaluate import EvalSuite
from sgns.train.rundir import OtherRankRunDir, RunDir, open_run_dir
from sgns.train.tblog import NullTBLog


def must_not_run() -> dict:
    raise AssertionError("called")


def test_a_team_of_one_trains_everything_alone_and_agrees_with_itself() -> None:
    team = Team(torch.device("cpu"))
    assert (team.rank, team.world_size, team.is_main, team.shard) == (0, 1, True, None)
    checkpoint = {"progress": {"finished": False}}
    assert team.share_resume(checkpoint) == (checkpoint, None)
    assert team.share_resume(None) == (None, None)
    built = []
    assert team.first_then_others(lambda: built.append(1) or "corpus", "reading") == "corpus" and built == [1]
    batch = SimpleNamespace(epoch=0, chunk=0, chunk_fraction=1.0)
    for stop, checkpoint_now in [(False, False), (True, False), (False, True), (True, True)]:
        assert team.after_batch(batch, stop, checkpoint_now) == (stop, checkpoint_now)
    assert team.checkpoint_section(must_not_run) is None
    assert team.report() is None
    assert type(team.error("x")) is SGNSError


def test_a_team_of_one_refuses_an_unfinished_run_of_several_processes() -> None:
    team = Team(torch.device("cpu"))
    several = {"progress": {"finished": False}, "distributed": {"world_size": 2}}
    with pytest.raises(SGNSError, match="written by 2 processes"):
        team.share_resume(several)
    finished = {"progress": {"finished": True}, "distributed": {"world_size": 2}}
    assert team.share_resume(finished) == (finished, None)


def test_another_ranks_run_dir_writes_nothing(tmp_path: Path) -> None:
    sgns_log = logging.getLogger("sgns")
    level = sgns_log.level
    try:
        run = open_run_dir(tmp_path / "run", writer=False)
        assert isinstance(run, OtherRankRunDir)
        assert sgns_log.level == logging.WARNING  # rank 0 tells the story
        with run.locked():
            assert run.find_resume({}) is None
            run.write_vocab(must_not_run)
            assert isinstance(run.tblog(0), NullTBLog)
            assert run.progress_bar(10, 0, enabled=True).disable
            run.save_checkpoint(must_not_run, 1, 3)
            run.write_vectors(["a"], np.zeros((1, 2), np.float32), binary=True)
            assert run.write_metrics({"loss": 1.0}, "loss") == {}
            assert run.finished_metrics({"metrics": {"loss": 1.0}}) == {}
            benchmarks = run.benchmarks(EvalConfig(analogies=["a.txt"], similarities=["s.tsv"], method="3cosadd"))
            assert (list(benchmarks.analogies), list(benchmarks.similarities), benchmarks.method) == ([], [], "3cosadd")
            assert not benchmarks.enabled and not EvalSuite(benchmarks, ["a"], "text")  # not even the suite by name
        assert not (tmp_path / "run").exists()
    finally:
        sgns_log.setLevel(level)


def test_the_writing_run_dir_writes(tmp_path: Path) -> None:
    run = open_run_dir(tmp_path / "run", writer=True)
    assert type(run) is RunDir
    with run.locked():
        run.write_vectors(["a"], np.ones((1, 2), np.float32), binary=False)
        metrics = run.write_metrics({"loss": 0.5}, "loss")
    assert metrics == {"loss": 0.5, "objective": 0.5}
    assert (tmp_path / "run" / "vectors.txt").is_file() and (tmp_path / "run" / "metrics.json").is_file()
    with pytest.raises(SGNSError, match="in use"):
        with run.locked(), open_run_dir(tmp_path / "run", writer=True).locked():
            pass
