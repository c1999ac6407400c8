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
    """`Type: first line of the message`, for reasons in rejected/ and one-line failure reports, of the exception
    raised where the work ran (`original_error`), never the traceback text Ray wraps around it."""
    original = original_error(exc)
    text = str(original).strip()
    first = text.splitlines()[0][:limit] if text else ""
    return f"{type(original).__name__}: {first}" if first else type(original).__name__


def original_error(exc: BaseException) -> BaseException:
    """The exception raised where the work ran, out of the wrappers Ray puts around it on the way to the driver:
    a task's or actor's RayTaskError (the original is its `cause`; its own text is the remote traceback), Ray
    Train's WorkerGroupError (`worker_failures`: the lowest rank's is taken) and ControllerError
    (`controller_failure`), and the holder Train keeps a worker's exception in (`_base_exc`; its text is the
    traceback). Found by these attributes, so this module needs no Ray."""
    for _ in range(8):  # wrappers nest (a worker's error inside a group error); never loop on a cycle
        inner = _wrapped(exc)
        if inner is None or inner is exc:
            break
        exc = inner
    return exc


def _wrapped(exc: BaseException) -> BaseException | None:
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        return cause
    failures = getattr(exc, "worker_failures", None)
    if isinstance(failures, dict) and failures:
        return failures[min(failures)]
    for name in ("controller_failure", "_base_exc"):
        inner = getattr(exc, name, None)
        if isinstance(inner, BaseException):
            return inner
    return None
