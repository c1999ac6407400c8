"""Console messages through the `logging` module: one setup for the CLI and for Ray workers.

Every module logs to `logging.getLogger(__name__)`. `configure_logging` gives our own packages (the five top
level packages of this distribution) one stderr handler printing `[distill-ray] message` at INFO, and stops
them from propagating to the root logger, so other libraries' loggers (httpx logs every request at INFO)
keep their own levels and the console stays readable. The CLI calls it at start; a Ray worker that logs
(the train loop's rank 0) calls it too, since a worker process starts with no handlers of ours. The CLI's
own results (a URL, a summary path, `jobs` listings) are still printed to stdout: they are output, not
messages.
"""

from __future__ import annotations

import logging
import sys

PACKAGES = ("distill_ray", "actors", "serve", "jobs", "cluster")
PREFIX = "[distill-ray] "


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is at the time (pytest's capture, a redirected CLI), not the stream
    that was current when the handler was made."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def configure_logging(level: int = logging.INFO) -> None:
    """Idempotent: a second call changes the level only."""
    for name in PACKAGES:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.propagate = False
        if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
            handler = _StderrHandler()
            handler.setFormatter(logging.Formatter(PREFIX + "%(message)s"))
            logger.addHandler(handler)


# Ray's own loggers that, in a quiet run, say nothing a user can act on, with the level they are raised to.
QUIET_RAY_LOGGERS = {
    # Ray Train's PlacementGroupCleaner (a detached actor per trainer) asks the State API every second whether the
    # train controller still lives. The State API is served by Ray's dashboard, which the embedded cluster does not
    # start (ray.include_dashboard: false), so every ask fails and warns, hundreds of lines per trainer, and the
    # cleaner can never clean then anyway.
    "ray.train.v2._internal.execution.controller.placement_group_cleaner": logging.ERROR,
    # Ray Train's setup, about 8 INFO lines per trainer (resources requested, worker group started with each
    # worker's pid and ranks, process group set up, model moved to cpu and wrapped in DDP); warnings still pass.
    "ray.train.v2._internal.execution.scaling_policy.scaling_policy": logging.WARNING,
    "ray.train.v2._internal.execution.worker_group.worker_group": logging.WARNING,
    "ray.train.torch.config": logging.WARNING,
    "ray.train.v2.torch.train_loop_utils": logging.WARNING,
    # Not Ray's, but logged in its workers: the INFO line per request ("HTTP Request: POST ...") of httpx (the reward
    # client, each reward call of grpo) and of httpx2, the fork of httpx that the `openai` client (3.x) sends with and
    # logs under its own name (each teacher-scoring call of an opd trainer): one line per micro-batch and worker.
    "httpx": logging.WARNING,
    "httpx2": logging.WARNING,
}
# Single messages of Ray's loggers that, in a quiet run, are dropped while the rest of the logger's output passes
# (logger name -> message prefixes).
QUIET_RAY_MESSAGES = {
    # Every process that first calls a Serve app through a handle (each generate / eval caller, each stage) logs
    # at INFO that its router's long-poll client started: plumbing, twice per stage on the console.
    # A caller's router warns when a replica has not said how many requests it holds within 0.1 s, blaming
    # "network latency". On the embedded cluster there is no network: the replica answers late because its engine
    # holds the CPU (3 to 27 of these per quickstart run on the 2-core box). Serve asks again, at once and then
    # after backoffs of 25 ms and up, with the deadline doubled each time (up to 1 s), and routes the request then:
    # nothing is lost, nothing to act on. Dropped in the worker's logger, so it is not in the worker logs either;
    # `--verbose` keeps it. Serve's own warning that a request could not be routed after many tries still shows.
    "ray.serve": ("Started <ray.serve._private.router.SharedRouterLongPollClient", "Failed to get queue length from "),
}
# The same for messages the driver gets from `ray.init` when it starts the embedded cluster (cluster/embedded.py).
QUIET_DRIVER_MESSAGES = {
    # A new local cluster gets token authentication, Ray's default, kept here; Ray warns that it turned it on, on
    # every run. A cluster started with authentication off still warns.
    "ray._private.authentication.authentication_token_setup": ("Token authentication is enabled for this Ray",),
}
QUIET_ENV_VAR = "DISTILL_RAY_QUIET"  # "1" while a quiet console is open (jobs/console.py QUIET_ENV)
QUIET_WORKER_HOOK = "distill_ray.log.quiet_ray_worker"  # Ray imports it by this name in each worker process


class _BelowLevel(logging.Filter):
    """Drops the records under `level`. A level alone does not hold: Ray Train configures logging in its controller
    and workers with `logging.config.dictConfig` on `ray.train`, which resets every existing child logger to NOTSET;
    a logger's filters survive it."""

    def __init__(self, level: int):
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.level


class DropMessages(logging.Filter):
    """Drops the records whose message starts with one of `prefixes` (QUIET_RAY_MESSAGES, math-verify's notice)."""

    def __init__(self, prefixes: tuple[str, ...]):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


def quiet_ray_worker() -> None:
    """Ray's `worker_process_setup_hook` (runtime_env) of a quiet run: raise `QUIET_RAY_LOGGERS` and filter out
    `QUIET_RAY_MESSAGES` in every worker process the run starts, before any task or actor runs there. Written here
    because Ray has no setting for these loggers' levels in its workers; `cluster/embedded.py` installs it.
    Idempotent; imports nothing."""
    for name, level in QUIET_RAY_LOGGERS.items():
        logger = logging.getLogger(name)
        logger.setLevel(level)
        if not any(isinstance(f, _BelowLevel) for f in logger.filters):
            logger.addFilter(_BelowLevel(level))
    _drop_messages(QUIET_RAY_MESSAGES)


def quiet_ray_driver() -> None:
    """In the driver of a quiet run, before `ray.init` starts the embedded cluster: filter out
    `QUIET_DRIVER_MESSAGES`. Idempotent."""
    _drop_messages(QUIET_DRIVER_MESSAGES)


def _drop_messages(messages: dict[str, tuple[str, ...]]) -> None:
    for name, prefixes in messages.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropMessages) for f in logger.filters):
            logger.addFilter(DropMessages(prefixes))


def quiet_run() -> bool:
    """Whether this process runs under a quiet console (`QUIET_ENV_VAR`, set by jobs/console.py's `RunConsole`
    without --verbose)."""
    import os

    return os.environ.get(QUIET_ENV_VAR) == "1"
