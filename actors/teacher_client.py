"""Clients that send one OpenAI chat-completions body to a teacher and return the response dict.

- `ServeTeacherClient`: in-cluster, through a Ray Serve DeploymentHandle (no HTTP hop).
- `OpenAITeacherClient`: any OpenAI-compatible endpoint (ours over HTTP, or an external API).
Both go through the one retry policy (`distill_ray.retry`): a refused request (4xx, an invalid value) is
a `TeacherRejected` at once, and that row is rejected with the reason; a server or connection error is
retried with backoff, and if it outlasts the retries it is a `TeacherUnavailable`, which stops the stage
(its committed parts are kept for the resume). The two are different outcomes, so neither type derives
from the other. A local error is neither: it is a bug, and stops the stage as it is. `TeacherCaller` is the
base of every row processor that talks to a teacher: a client, a thread pool to keep a batch's requests in
flight together, and a count of the calls made.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeVar

from distill_ray.errors import RowRejected, one_line
from distill_ray.models.teachers import Endpoint, Teacher
from distill_ray.retry import call_with_retries, is_refusal, is_transient

T = TypeVar("T")


class TeacherRejected(RowRejected):
    """The teacher refused a request (e.g. a prompt longer than its context): that row is rejected."""


class TeacherUnavailable(RuntimeError):
    """Transient failures outlasted every retry: the teacher is down, so the stage stops (and resumes later)."""


class TeacherClient(Protocol):
    def chat(self, body: dict[str, Any]) -> dict[str, Any]: ...


def client_for(endpoint: Endpoint, timeout_s: float) -> TeacherClient:
    """A client for a reachable teacher: its Serve app's handle in-cluster, else its OpenAI base URL."""
    if endpoint.app_name:
        return ServeTeacherClient(endpoint.app_name, timeout_s)
    if endpoint.base_url:
        return OpenAITeacherClient(endpoint.base_url, endpoint.api_key, timeout_s)
    raise ValueError("a teacher endpoint needs an app_name or a base_url")


class ServeTeacherClient:
    def __init__(self, app_name: str, timeout_s: float):
        from ray import serve

        self.handle = serve.get_app_handle(app_name)
        self.timeout_s = timeout_s

    def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.handle.chat.remote(body).result(timeout_s=self.timeout_s)


class OpenAITeacherClient:
    def __init__(self, base_url: str, api_key: str | None, timeout_s: float):
        import openai

        # Retries are ours (uniform across clients), so the SDK's own are off.
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key or "none", timeout=timeout_s, max_retries=0)

    def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.client.chat.completions.create(**body).model_dump()


def chat_with_retries(client: TeacherClient, body: dict[str, Any], max_retries: int, base_delay: float = 0.5):
    """`client.chat(body)` under the retry policy. Raises TeacherRejected (the teacher refused this request: a 4xx,
    e.g. a prompt longer than its context; not retried) or TeacherUnavailable (a 5xx, connection or timeout error
    that outlasted the retries). Anything else is a bug on this side and propagates as it is: it stops the stage
    rather than quarantining every row as if each were bad."""
    try:
        return call_with_retries(lambda: client.chat(body), attempts=max_retries + 1, base_delay_s=base_delay)
    except Exception as exc:  # noqa: BLE001 - classified below, re-raised as one of our two outcomes
        if is_transient(exc):
            reason = f"teacher unreachable after {max_retries + 1} attempt(s): {one_line(exc)}"
            raise TeacherUnavailable(reason) from exc
        if is_refusal(exc):
            raise TeacherRejected(f"teacher rejected the request: {one_line(exc)}") from exc
        raise


def reply_text(message: dict[str, Any]) -> str:
    """The text of a chat reply, reasoning included. Servers that return a reasoning model's CoT in a field of its
    own (DeepSeek's API and vLLM's reasoning parsers: `reasoning_content`; some others: `reasoning`) get it
    back as `<think>...</think>` before the content, as the parser, SFT and the rewards expect it."""
    content = message.get("content") or ""
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning.strip() and "</think>" not in content:
        return f"<think>{reasoning}</think>{content}"
    return content


class TeacherCaller:
    """Base of the teacher-calling row processors (see actors/part_writer.py for the processor contract)."""

    def __init__(self, teacher: Teacher, max_in_flight: int = 16):
        from concurrent.futures import ThreadPoolExecutor

        if teacher.endpoint is None:
            raise ValueError(f"teacher '{teacher.name}' has no endpoint: deploy it first (jobs/teachers.py)")
        self.teacher = teacher
        self.client = client_for(teacher.endpoint, teacher.inference.request_timeout_s)
        self.pool = ThreadPoolExecutor(max_workers=max_in_flight)
        self.teacher_calls = 0
        self._calls_lock = threading.Lock()  # requests are sent from the pool's threads

    def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        """One request (with the teacher's served name and retries); raises TeacherRejected/TeacherUnavailable."""
        if "model" not in body:
            body = {**body, "model": self.teacher.served_name}
        with self._calls_lock:
            self.teacher_calls += 1  # counted per logical request; retries of it are not extra calls
        return chat_with_retries(self.client, body, self.teacher.inference.max_retries)

    def complete(self, messages: list[dict[str, str]], *, temperature: float, max_tokens: int, seed: int | None,
                 top_p: float = 1.0) -> str:  # fmt: skip
        """The text of one chat completion."""
        body = {"messages": messages, "temperature": temperature, "max_tokens": max_tokens, "top_p": top_p}
        if seed is not None:
            body["seed"] = seed
        return reply_text(self.chat(body)["choices"][0]["message"])

    def map_rows(self, fn: Callable[[Any], T], items: Iterable[Any]) -> list[T | RowRejected]:
        """`fn` over `items` on the pool, all in flight together. An item whose call raises RowRejected (a
        teacher's refusal, an unusable reply) gets that error as its result, so one bad row does not sink its
        batch; TeacherUnavailable and bugs propagate and stop the stage."""

        def one(item):
            try:
                return fn(item)
            except RowRejected as exc:
                return exc

        return list(self.pool.map(one, items))
