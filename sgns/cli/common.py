"""Helpers every command shares: argparse with one-line usage errors, quiet exits on a closed pipe, no garbage
collection while a command loads its libraries, and an exit without the interpreter's teardown. (One-line
errors for SGNSError: sgns.errors.exit_with_error; device names: sgns.device.resolve_device.)"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import gc
import logging
import os
import signal
import sys
from typing import Any, Iterator, List, NoReturn


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


_COLLECTION_DEFERRED: List[bool] = []  # set while defer_collection's pause lasts


def defer_collection() -> None:
    """Pause the cyclic garbage collector until `collect_again`. Loading torch, numba and TensorBoard creates
    hundreds of thousands of objects that live as long as the process, and the collector would walk all of
    them again at every full collection it starts meanwhile (about a quarter of a small run's CPU time,
    measured in docs/startup.md). Only for a process's entry point."""
    if gc.isenabled():
        gc.disable()
        _COLLECTION_DEFERRED.append(True)


def collect_again() -> None:
    """End defer_collection's pause: what is loaded so far moves to the collector's permanent generation
    (gc.freeze: it is never walked again, and never freed: modules, classes, functions), and collection
    resumes for everything made from now on."""
    if _COLLECTION_DEFERRED:
        _COLLECTION_DEFERRED.clear()
        gc.freeze()
        gc.enable()


@contextlib.contextmanager
def exit_without_teardown() -> Iterator[None]:
    """Around a command's whole body: once it has returned or exited (SystemExit), end the process without the
    interpreter's teardown, which with torch, numba and tensorboard loaded costs about as much CPU time as
    importing torch (module cleanup, libtorch's static destructors; measured in docs/startup.md).

    The exit happens in an atexit handler registered here, before any library's but logging's, so it runs after
    the others, once Python has joined the threads: it closes the log files (logging's own handler would run
    after it), flushes stdout and stderr, and ends with the command's exit status. After any other exception (a
    traceback), Python exits as usual. Only for a process's entry point: it ends the process."""
    status: List[int] = []
    atexit.register(_end_process, status)
    try:
        yield
        status.append(0)
    except SystemExit as e:
        status.append(e.code if isinstance(e.code, int) else 0 if e.code is None else 1)
        raise
    finally:
        if status:
            _end_at_signal(status)


def _end_at_signal(status: List[int]) -> None:
    """The command is over and only the exit is left: SIGINT or SIGTERM now ends the process with the command's
    status at once (else a Ctrl-C just after `done:` prints a traceback from some library's atexit callback)."""
    def end(sig: int, frame: Any) -> None:
        _end_process(status, flush_logs=False)  # a handler may interrupt a log write; every record is flushed

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            signal.signal(sig, end)
        except ValueError:  # not the main thread
            pass


def _end_process(status: List[int], flush_logs: bool = True) -> None:
    if not status:
        return
    if flush_logs:
        logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, RuntimeError):  # a closed pipe or stream; a reentrant write from a handler
            pass
    os._exit(status[0])
