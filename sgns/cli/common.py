"""Helpers every command shares: argparse with one-line usage errors, and quiet exits on a closed pipe.
(One-line errors for SGNSError: sgns.errors.exit_with_error; device names: sgns.device.resolve_device.)"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Iterator, NoReturn


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one `prog: error: ...` line and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


@contextlib.contextmanager
def quiet_broken_pipe() -> Iterator[None]:
    """`sgns-eval ... | head`: when the reader leaves, stop writing quietly (nothing is wrong)."""
    try:
        yield
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush does not fail
