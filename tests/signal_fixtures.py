"""Shared by the CLI signal tests: start `distill-ray` the way a script starts a background job, wait for what it
prints, and find any process of its session still alive after it exits.

A shell starts `cmd &` with SIGINT ignored, and the child inherits that; the CLI must stop on SIGINT and SIGTERM
anyway. Each CLI runs in a session of its own (`start_new_session`), so every process it started, Ray's workers
and agents included, is found by session id even when Ray renamed it (`ray::...`).
"""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from conftest import REPO, kill_session


def start_background_cli(args: list[str], stderr_path: Path) -> tuple[subprocess.Popen, queue.Queue]:
    """`python -m jobs.cli ARGS` with SIGINT ignored; stdout lines arrive on the returned queue (a reader thread
    keeps draining the pipe, so Ray's forwarded worker output never blocks the CLI)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs.cli", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=stderr_path.open("w"),
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    lines: queue.Queue = queue.Queue()

    def pump() -> None:
        for line in proc.stdout:
            lines.put(line.strip())

    threading.Thread(target=pump, daemon=True).start()
    return proc, lines


def wait_for_line(proc: subprocess.Popen, lines: queue.Queue, prefix: str, timeout: float) -> str:
    """The first stdout line starting with `prefix`; fails if the CLI exits or `timeout` passes first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            assert proc.poll() is None, f"the CLI exited with {proc.returncode} before printing {prefix!r}"
            continue
        if line.startswith(prefix):
            return line
    raise AssertionError(f"no line starting with {prefix!r} within {timeout} s")


def stop_and_wait(proc: subprocess.Popen, signum: int, timeout: float = 120) -> int:
    """Send `signum` to the CLI alone (as systemd, Docker or Kubernetes do) and return its exit code."""
    proc.send_signal(signum)
    return proc.wait(timeout=timeout)


def live_session_pids(sid: int) -> list[int]:
    """Processes of session `sid` that still run (a zombie waits only for its parent to read its status)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _ppid, _pgrp, session = stat.read_text().rsplit(")", 1)[1].split()[:4]
        except OSError:  # exited while we looked
            continue
        if int(session) == sid and state != "Z":
            pids.append(int(stat.parent.name))
    return pids


def survivors(proc: subprocess.Popen, grace: float = 30) -> list[str]:
    """Command lines of the CLI's session still running `grace` seconds after it exited (the CLI's own gone)."""
    deadline = time.time() + grace
    while (pids := live_session_pids(proc.pid)) and time.time() < deadline:
        time.sleep(0.5)
    found = []
    for pid in pids:
        try:
            found.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120])
        except OSError:  # exited while we looked
            pass
    return found


def cleanup(proc: subprocess.Popen) -> None:
    """Whatever the outcome, nothing of this CLI outlives the test."""
    if proc.poll() is None or live_session_pids(proc.pid):
        kill_session(proc)
