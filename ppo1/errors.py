"""The errors the CLI turns into one line (no traceback). Kept free of heavy imports."""


class ConfigError(ValueError):
    """Bad user input. The CLI prints it as one line and exits with status 2."""


class RankFailure(RuntimeError):
    """Another rank is gone or out of step; the message names it. The CLI exits with status 1."""


class SaveError(OSError):
    """A checkpoint could not be written (disk full, read-only folder); the previous one is intact."""
