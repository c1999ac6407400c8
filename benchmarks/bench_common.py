"""Small helpers every benchmark script here uses (they run as `python benchmarks/NAME.py`, so this folder is on
sys.path and `from bench_common import ...` resolves to this file)."""

from __future__ import annotations

import socket


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
    from distill_ray.openai_protocol import parse_chat_request
    from serve.teacher import request_sequences

    req = parse_chat_request(body)
    return request_sequences(req, engine.chat_prompt_ids(req.template_messages()))
