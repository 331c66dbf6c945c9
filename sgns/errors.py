"""The one exception type the CLI turns into a single `error:` line and a non-zero exit."""

import sys
from pathlib import Path
from typing import NoReturn, Optional


class SGNSError(Exception):
    """A problem with the user's input (corpus, config, checkpoint): the message says what and how to fix it."""


class Stopped(SGNSError):
    """Training stopped by a signal (SIGINT/SIGTERM) with nothing lost: `what` says where it stopped, the message
    adds the command line's resume hint (sgns.fit gives its own)."""

    def __init__(self, what: str, run_dir: str | Path, hint: Optional[str] = None) -> None:
        super().__init__(f"{what}; {hint or f'to resume, run the same command again with hydra.run.dir={run_dir}'}")
        self.what, self.run_dir = what, Path(run_dir)


def exit_with_error(prog: str, error: BaseException) -> NoReturn:
    """Print `prog: error: ...` as one line on stderr and exit with status 2 (every sgns command does this)."""
    if isinstance(error, OSError):
        message = f"{error.strerror or error}: {getattr(error, 'filename', '')}"
    else:
        message = str(error)
    sys.stderr.write(f"{prog}: error: {message}\n")
    sys.exit(2)
