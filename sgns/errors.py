"""The one exception type the CLI turns into a single `error:` line and a non-zero exit."""


class SGNSError(Exception):
    """A problem with the user's input (corpus, config, checkpoint): the message says what and how to fix it."""
