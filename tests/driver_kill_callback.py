"""A Hydra callback for tests/test_sweep_resume.py: SIGKILL the sweep's driver as job `job_num` starts.

A real kill of the real driver, at a known point: a poll from outside raced the trial (a warm trial trains in
~40 ms, so it had sometimes finished before the kill, and the test then saw the "had finished" path).
"""

from __future__ import annotations

import os
import signal
from typing import Any

from hydra.experimental.callback import Callback


class KillDriverAtJob(Callback):
    def __init__(self, job_num: int) -> None:
        self.job_num = job_num

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        if config.hydra.job.num == self.job_num:  # its run dir (.hydra) exists; its trial is RUNNING in the study
            os.kill(os.getpid(), signal.SIGKILL)
