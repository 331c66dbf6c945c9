"""What sgns-train does to start faster (docs/startup.md) changes nothing it writes: the collector paused while the
libraries load, and TensorBoard written from a forked child process (same event files; flush and close wait for
it; its loss is one clear error; it closes the log when its parent ends)."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict

import numpy as np
import pytest
from conftest import compose_cfg
from test_tblog import scalars, text_summaries

from sgns.cli.common import collect_again, defer_collection
from sgns.errors import SGNSError
from sgns.train.tblog import ProcessTBLog, TBLog, WriterProcess

RESULTS = {"analogies": {"accuracy": 0.5, "seen": 4, "total": 8, "semantic_accuracy": 0.25, "semantic_seen": 2,
                         "syntactic_accuracy": 0.75, "syntactic_seen": 2, "coverage": 0.5, "malformed_lines": 0}}


def write_every_kind(tb: TBLog, cfg: Any) -> None:
    tb.train_point(100, 2.5, 0.02, 1000.0)
    tb.evaluation(RESULTS, 100)
    tb.flush()
    tb.train_point(200, 2.25, 0.01, 1100.0)
    tb.projector(["a", "b", "c"], np.arange(6, dtype=np.float32).reshape(3, 2) / 7, [3, 2, 1], 2, 200)
    tb.evaluation(RESULTS, 200)
    tb.evaluation_summary(RESULTS, 200)
    tb.final_loss(250, 2.0)
    tb.hparams(cfg, 250)
    tb.close()
    tb.flush()  # after close (the loop's last checkpoint does this): nothing to do


def hparams_keys(tb_dir: Path) -> Dict[str, set]:
    from tensorboard.backend.event_processing.event_accumulator import TENSORS, EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    events = EventAccumulator(str(tb_dir), size_guidance={TENSORS: 0})
    events.Reload()
    found = {}
    for tag, content in events.PluginTagToContent("hparams").items():
        data = plugin_data_pb2.HParamsPluginData.FromString(content)
        found[tag] = set(data.session_start_info.hparams) if data.HasField("session_start_info") else {"end"}
    return found


def projector_files(tb_dir: Path) -> Dict[str, bytes]:
    return {str(p.relative_to(tb_dir)): p.read_bytes() for p in sorted(tb_dir.rglob("*"))
            if p.is_file() and not p.name.startswith("events.out")}


def test_the_writer_process_writes_what_the_log_writes_in_process(tmp_path: Path) -> None:
    cfg = compose_cfg(tmp_path / "run", [])
    write_every_kind(TBLog(tmp_path / "here", 0), cfg)
    write_every_kind(ProcessTBLog(WriterProcess(), tmp_path / "child", 0), cfg)
    here, child = tmp_path / "here", tmp_path / "child"
    assert scalars(child) == scalars(here) and "train/loss" in scalars(here)
    assert scalars(child)["eval/analogies/accuracy"] == [(100, 0.5), (200, 0.5)]
    assert text_summaries(child) == text_summaries(here) and "evaluation/text_summary" in text_summaries(here)
    assert projector_files(child) == projector_files(here) and "projector_config.pbtxt" in projector_files(here)
    assert hparams_keys(child) == hparams_keys(here) and "model.dim" in hparams_keys(here)[
        "_hparams_/session_start_info"]


def test_a_flush_waits_until_every_point_sent_before_is_on_disk(tmp_path: Path) -> None:
    tb = ProcessTBLog(WriterProcess(), tmp_path, 0)
    for x in range(1, 51):
        tb.train_point(x, 1.0 / x, 0.01, 5.0)
    tb.flush()
    assert len(scalars(tmp_path)["train/loss"]) == 50  # read while the log is still open
    tb.close()


def test_a_lost_writer_process_is_one_clear_error(tmp_path: Path) -> None:
    process = WriterProcess()
    tb = ProcessTBLog(process, tmp_path, 0)
    os.kill(process.pid, signal.SIGKILL)
    os.waitpid(process.pid, 0)
    with pytest.raises(SGNSError, match="the process writing the TensorBoard log ended unexpectedly"):
        tb.train_point(1, 1.0, 0.01, 5.0)
        tb.flush()


def test_the_writer_process_closes_the_log_when_its_parent_goes_and_ignores_stop_signals(tmp_path: Path) -> None:
    process = WriterProcess()
    tb = ProcessTBLog(process, tmp_path, 0)
    tb.train_point(7, 1.5, 0.01, 5.0)
    for sig in (signal.SIGINT, signal.SIGTERM):  # the parent decides when to stop (after a checkpoint)
        os.kill(process.pid, sig)
    tb.flush()
    tb.train_point(8, 1.25, 0.01, 5.0)
    process.conn.close()  # as when the parent ends without closing the log
    deadline = time.monotonic() + 60
    while os.waitpid(process.pid, os.WNOHANG) == (0, 0):
        assert time.monotonic() < deadline, "the writer process did not end"
        time.sleep(0.05)
    assert scalars(tmp_path)["train/loss"] == [(7, 1.5), (8, 1.25)]


def test_collection_is_paused_until_the_libraries_are_loaded_then_resumes() -> None:
    assert gc.isenabled()
    try:
        defer_collection()
        assert not gc.isenabled()
        collect_again()
        assert gc.isenabled() and gc.get_freeze_count() > 0
        collect_again()  # once only
        assert gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()


# sgns-train, saying at its end whether it imported TensorBoard itself
SGNS_TRAIN_TELLING = """
import os, sys
real_exit, pid = os._exit, os.getpid()
def end(status):
    if os.getpid() == pid:
        print("tensorboard in the parent:", "torch.utils.tensorboard" in sys.modules, file=sys.stderr, flush=True)
    real_exit(status)
os._exit = end
sys.argv = ["sgns-train", *sys.argv[1:]]
from sgns.cli.train import main
main()
"""


def test_a_command_line_run_writes_its_tensorboard_log_from_the_child(tmp_path: Path) -> None:
    run = tmp_path / "run"
    env = {**os.environ, "SGNS_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", SGNS_TRAIN_TELLING, "corpus.synthetic.sentences=2000",
                           "trainer.epochs=1", "eval.every_words=0", "trainer.progress=false",
                           f"hydra.run.dir={run}"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "tensorboard in the parent: False" in done.stderr, done.stderr
    curves = scalars(run / "tb")
    assert curves["train/loss"] and "eval/planted_analogies/accuracy" in curves
    assert "projector_config.pbtxt" in projector_files(run / "tb")
    assert "_hparams_/session_start_info" in hparams_keys(run / "tb")
