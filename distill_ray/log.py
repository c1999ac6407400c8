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
