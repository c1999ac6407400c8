"""Errors a user can cause. The CLI turns these into one line and exit code 2, never a traceback."""


class UserError(Exception):
    """Bad configuration or bad input file: reported in one line, exit code 2."""

    exit_code = 2


class ConfigError(UserError):
    """A config key has a value that cannot be used. The message names the key."""

    def __init__(self, key: str, problem: str):
        self.key = key
        self.problem = problem
        super().__init__(f"config error: {key}: {problem}")


class InputFileError(UserError):
    """An input file is missing or unreadable. The message names the file (and line, when known)."""

    def __init__(self, path: str, problem: str, line: int | None = None):
        self.path = path
        self.line = line
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"input error: {where}: {problem}")


class StageFailed(Exception):
    """A stage failed at run time (exit code 1). Carries the stage's name for the one-line report."""

    exit_code = 1

    def __init__(self, stage: str, cause: str):
        self.stage = stage
        super().__init__(f"stage '{stage}' failed: {cause}")


class RowRejected(ValueError):
    """One input row cannot be used. `reason` (also the message) is the short, countable cause written next
    to the row in `rejected/<stage>.jsonl`; the stage quarantines the row and goes on with the others."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


def one_line(exc: BaseException, limit: int = 300) -> str:
    """`Type: first line of the message`, for reasons in rejected/ and one-line failure reports. For an error
    re-raised by Ray from a worker (it carries the original as `cause`), the original's type and message, not
    the traceback text Ray wraps around it."""
    original = getattr(exc, "cause", None)
    original = original if isinstance(original, BaseException) else exc
    text = str(original).strip()
    first = text.splitlines()[0][:limit] if text else ""
    return f"{type(original).__name__}: {first}" if first else type(original).__name__
