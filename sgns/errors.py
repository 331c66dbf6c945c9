"""The one exception type the CLI turns into a single `error:` line and a non-zero exit."""

import sys
from typing import NoReturn


class SGNSError(Exception):
    """A problem with the user's input (corpus, config, checkpoint): the message says what and how to fix it."""


def exit_with_error(prog: str, error: BaseException) -> NoReturn:
    """Print `prog: error: ...` as one line on stderr and exit with status 2 (every sgns command does this)."""
    if isinstance(error, OSError):
        message = f"{error.strerror or error}: {getattr(error, 'filename', '')}"
    else:
        message = str(error)
    sys.stderr.write(f"{prog}: error: {message}\n")
    sys.exit(2)
