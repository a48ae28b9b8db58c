"""The errors the CLI turns into one line (no traceback). Kept free of heavy imports."""


class ConfigError(ValueError):
    """Bad user input. The CLI prints it as one line and exits with status 2."""


class RankFailure(RuntimeError):
    """Another rank is gone or out of step; the message names it. The CLI exits with status 1."""


class SaveError(OSError):
    """A checkpoint could not be written (disk full, read-only folder); the previous one is intact."""


def first_line(e: BaseException) -> str:
    """An exception's message cut to its first line (its type name if it has none), for one-line errors."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
