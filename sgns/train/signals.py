"""Signals: SIGINT/SIGTERM inside the loop stop it after the current step (with a checkpoint); outside it
they interrupt at once (nothing to save yet, and every file is replaced atomically)."""

from __future__ import annotations

import contextlib
import os
import signal
from typing import Any, Dict, Iterator, Optional


def _sigterm_while_failing(sig: int, frame: Any) -> None:
    """A SIGTERM while an error is on its way out: ignored, so that its one line is printed and the process exits
    with it (torchrun sends SIGTERM as soon as it sees a rank die, the moment the survivors see it too)."""


class StopRequest:
    """SIGINT/SIGTERM ask the loop to stop after the current step; a second SIGINT exits at once."""

    def __init__(self) -> None:
        self.signal: Optional[int] = None
        self.previous: Dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self.previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, sig: int, frame: Any) -> None:
        if self.signal is not None and sig == signal.SIGINT:
            # os._exit: no cleanup runs, and none is needed: every file is replaced atomically
            os.write(2, b"\nsgns: second interrupt, exiting now (the last checkpoint is intact)\n")
            os._exit(130)
        first, self.signal = self.signal is None, sig  # set before writing: a second signal may land mid-write
        if first:
            # os.write, not sys.stderr: a buffered write from a handler can interrupt another one (tqdm's)
            os.write(2, f"\nsgns: {signal.Signals(sig).name} received, stopping after this step and writing a "
                        f"checkpoint (Ctrl-C again exits at once)\n".encode())

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if self.signal is not None:
            return  # stopping: keep "a second SIGINT exits at once" until the process is gone
        for sig, handler in self.previous.items():
            failing = exc_type is not None and sig == signal.SIGTERM  # a lost peer, say: see sigterm_interrupts
            signal.signal(sig, _sigterm_while_failing if failing else handler)


# the signal that interrupted this process outside the loop, for the one line that reports it (None: Ctrl-C)
interrupted_by: Optional[int] = None


def _sigterm_interrupt(sig: int, frame: Any) -> None:
    global interrupted_by
    interrupted_by = sig
    raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt, as SIGINT does, while the context is open (main thread only); the signal
    is kept in `interrupted_by`, so a batch scheduler's SIGTERM is not reported as Ctrl-C. Left by an error,
    SIGTERM stays caught (ignored) while the error is reported: the default action would kill the process
    without its line. A caller that lives on (sgns.fit) puts its own handlers back afterwards."""
    previous = None
    try:
        previous = signal.signal(signal.SIGTERM, _sigterm_interrupt)
    except ValueError:  # not the main thread
        pass
    failed = True
    try:
        yield
        failed = False
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, _sigterm_while_failing if failed else previous)
