"""The lab's one-line user errors, in a module that imports nothing of the lab (so every layer can raise them)."""


class UsageError(ValueError):
    """Bad command-line input (one line on stderr, exit 2)."""
