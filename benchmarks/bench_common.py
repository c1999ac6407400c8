"""Small helpers every benchmark script here uses (they run as `python benchmarks/NAME.py`, so this folder is on
sys.path and `from bench_common import ...` resolves to this file)."""

from __future__ import annotations

import argparse
import os
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_loopback_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for Serve's proxy)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated q-th percentile (0-100) of `values`; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def chat_sequences(engine, body: dict) -> list:
    """The GenRequests the teacher replica would decode for a chat body (one per choice), for in-process runs."""
    from distill_ray.models.openai_protocol import parse_chat_request
    from serve.teacher import request_sequences

    req = parse_chat_request(body)
    return request_sequences(req, engine.chat_prompt_ids(req.template_messages()))


def fill_defaults(args: argparse.Namespace, defaults: dict, quick: dict) -> argparse.Namespace:
    """Every option left unset takes the benchmark's value for its mode (`--quick` or full)."""
    for key, value in (quick if args.quick else defaults).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


@contextmanager
def ray_state_dir(tag: str) -> Iterator[Path]:
    """A per-process state folder for the benchmark's embedded Ray, removed afterwards. Kept short under /tmp:
    Ray's socket paths live below it."""
    path = Path("/tmp") / f"dr-{tag}-{os.getpid()}"
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def status_bytes(field: str) -> int:
    """One memory figure of this process from /proc/self/status (VmRSS, VmHWM, VmSize, ...), in bytes (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} missing from /proc/self/status")
