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
