"""Clients that send one OpenAI chat-completions body to a teacher and return the response dict.

- `ServeTeacherClient`: in-cluster, through a Ray Serve DeploymentHandle (no HTTP hop).
- `OpenAITeacherClient`: any OpenAI-compatible endpoint (ours over HTTP, or an external API).
Both retry transient failures with exponential backoff; a 4xx-style rejection is not retried.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any, Protocol


class TeacherError(RuntimeError):
    """The teacher failed a request for good (after retries, or a non-retryable rejection)."""


class TeacherClient(Protocol):
    def chat(self, body: dict[str, Any]) -> dict[str, Any]: ...


@dataclass(frozen=True)
class TeacherTarget:
    """Serializable description of where the teacher lives; each Ray Data actor builds its own client."""

    app_name: str | None = None  # Ray Serve application (in-cluster)
    base_url: str | None = None  # OpenAI-compatible endpoint
    api_key: str | None = None
    model: str | None = None  # the `model` field sent with each request
    timeout_s: float = 600.0
    max_retries: int = 3

    def client(self) -> TeacherClient:
        if self.app_name:
            return ServeTeacherClient(self.app_name, self.timeout_s)
        if self.base_url:
            return OpenAITeacherClient(self.base_url, self.api_key, self.timeout_s)
        raise ValueError("TeacherTarget needs an app_name or a base_url")


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


def is_retryable(exc: BaseException) -> bool:
    """Bad requests (our bug or bad input) fail at once; everything else may be a passing outage."""
    import openai

    if isinstance(exc, (openai.BadRequestError, openai.AuthenticationError, openai.NotFoundError)):
        return False
    if isinstance(exc, (ValueError, TypeError)):
        return False
    cause = getattr(exc, "cause", None)  # Ray wraps the replica's exception in RayTaskError
    return not isinstance(cause, (ValueError, TypeError))


def chat_with_retries(client: TeacherClient, body: dict[str, Any], max_retries: int, base_delay: float = 0.5):
    """Call `client.chat`, retrying transient errors with jittered exponential backoff."""
    for attempt in range(max_retries + 1):
        try:
            return client.chat(body)
        except Exception as exc:  # noqa: BLE001 - classified below, re-raised as TeacherError
            if not is_retryable(exc) or attempt == max_retries:
                reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
                raise TeacherError(f"teacher request failed after {attempt + 1} attempt(s): {reason}") from exc
            time.sleep(base_delay * (2**attempt) * (1 + random.random()))
    raise AssertionError("unreachable")
