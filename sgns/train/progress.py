"""The console progress of a run: tqdm's bar on a terminal (or a notebook's widget), plain lines elsewhere.

A bar redraws itself with carriage returns; piped (`sgns-train ... | cat`) or redirected (`> log`), those frames
land on one line thousands of characters long. Off a terminal the progress is one line every `PLAIN_STEP` of
the words, which reads well in a log file and in a scheduler's output.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any, Dict, Optional, Union

from tqdm.auto import tqdm  # a notebook's widget bar where ipywidgets is installed

PLAIN_STEP = 0.10  # a plain line every 10% of the words


class PlainProgress:
    """tqdm's surface that the train loop uses (update, set_postfix, close), written as whole lines."""

    def __init__(self, total: float, initial: float, file: IO[str], step: float = PLAIN_STEP) -> None:
        self.total, self.done, self.file, self.step = float(total), float(initial), file, step
        self.start_done, self.start = self.done, time.perf_counter()
        self.next_fraction = (int(self.fraction() / step) + 1) * step
        self.postfix: Dict[str, Any] = {}

    def fraction(self) -> float:
        return self.done / self.total if self.total > 0 else 1.0

    def update(self, n: float = 1) -> None:
        self.done += n
        if self.fraction() >= self.next_fraction - 1e-12:
            self.write_line()
            self.next_fraction = (int(self.fraction() / self.step + 1e-9) + 1) * self.step

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        self.postfix = values

    def write_line(self) -> None:
        seconds = time.perf_counter() - self.start
        speed = (self.done - self.start_done) / max(seconds, 1e-9)
        extra = "".join(f", {k} {v}" for k, v in self.postfix.items())
        self.file.write(f"progress: {self.fraction():.0%} ({self.done:,.0f} of {self.total:,.0f} words), "
                        f"{seconds:.0f}s, {speed:,.0f} words/s{extra}\n")
        self.file.flush()

    def close(self) -> None:
        pass


def in_notebook() -> bool:
    """Whether tqdm.auto picked the notebook's widget bar. It imports tqdm.notebook only when it does; importing
    that module here to compare would load IPython (22 MiB of RSS and 0.2 s) into every run."""
    notebook = sys.modules.get("tqdm.notebook")
    return notebook is not None and issubclass(tqdm, notebook.tqdm)


def progress_bar(total: float, initial: float, enabled: bool,
                 file: Optional[IO[str]] = None) -> Union[tqdm, PlainProgress]:
    """The console progress over `total` corpus words: a bar on a terminal or in a notebook, else plain lines."""
    file = sys.stderr if file is None else file
    on_terminal = getattr(file, "isatty", lambda: False)()
    if not enabled or on_terminal or in_notebook():  # a notebook's widget draws no \r frames
        return tqdm(total=total, initial=int(initial), unit="w", unit_scale=True, delay=2.0, disable=not enabled,
                    dynamic_ncols=True, file=file)
    return PlainProgress(total, initial, file)
