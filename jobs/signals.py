"""Stop signals for the long-running commands (`distill-ray run`, `eval`, `serve`).

SIGINT (Ctrl-C) and SIGTERM (systemd, Docker, Kubernetes) both become an `Interrupted` exception in the main
thread, so a stop unwinds like an error: the stage is named in the summary, Serve's deployments are deleted and
the embedded Ray is shut down (`cluster.embedded.ray_session`), then the CLI exits 128 + the signal's number.

Why the handlers are installed explicitly: a shell starts background jobs (`cmd &`) with SIGINT ignored, and
Python then installs no KeyboardInterrupt handler of its own, so such a service would ignore Ctrl-C; SIGTERM has
no Python handler at all, and once Ray runs, its C++ crash handler turns SIGTERM into an abort (exit 134) that
leaves Ray's agents running.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A stop signal as an exception. A KeyboardInterrupt, so everything that already unwinds on Ctrl-C (Ray Data
    iterators, Ray's own waits) does so on SIGTERM too; the runner fills in `stage`."""

    def __init__(self, signum: int):
        self.signum = signum
        self.signal_name = signal.Signals(signum).name
        self.stage: str | None = None
        super().__init__(self.signal_name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # what a shell reports for a process ended by this signal: 130, 143

    def __str__(self) -> str:
        if self.stage is None:
            return f"stopped by {self.signal_name}"
        return f"stage '{self.stage}' interrupted by {self.signal_name}; completed parts kept, re-run to resume"


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Raise `Interrupted` on the first SIGINT or SIGTERM, whatever disposition the process inherited.

    Later signals only log: they arrive while the first one's cleanup (deleting deployments, stopping Ray) runs,
    and interrupting that cleanup is what leaves Ray processes behind. SIGKILL still ends the process at once."""
    stopping: list[int] = []

    def on_signal(signum: int, _frame) -> None:
        if stopping:
            log.warning("%s received while stopping; still shutting down (SIGKILL stops at once)",
                        signal.Signals(signum).name)  # fmt: skip
            return
        stopping.append(signum)
        raise Interrupted(signum)

    before = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    for sig in STOP_SIGNALS:
        signal.signal(sig, on_signal)
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
