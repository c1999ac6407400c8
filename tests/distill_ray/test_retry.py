"""The one retry policy: which errors are worth another call, and how many calls are made."""

from __future__ import annotations

import httpx
import openai
import pytest
from ray.exceptions import GetTimeoutError, RayTaskError
from ray.serve._private.common import DeploymentID
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

from distill_ray.errors import one_line
from distill_ray.models.openai_protocol import ProtocolError
from distill_ray.retry import call_with_retries, is_refusal, is_transient

REQUEST = httpx.Request("POST", "http://127.0.0.1:1/v1/chat/completions")


def _status(cls, code: int):
    return cls("refused", response=httpx.Response(code, request=REQUEST), body=None)


@pytest.mark.parametrize("exc, transient", [
    (_status(openai.BadRequestError, 400), False),  # e.g. a prompt longer than the context
    (_status(openai.NotFoundError, 404), False),
    (_status(openai.RateLimitError, 429), True),
    (_status(openai.InternalServerError, 500), True),
    (openai.APIConnectionError(request=REQUEST), True),
    (openai.APITimeoutError(request=REQUEST), True),
    (httpx.ConnectError("refused", request=REQUEST), True),
    (httpx.HTTPStatusError("x", request=REQUEST, response=httpx.Response(503, request=REQUEST)), True),
    (httpx.HTTPStatusError("x", request=REQUEST, response=httpx.Response(422, request=REQUEST)), False),
    (ProtocolError("messages: required"), False),
    (ProtocolError("model_not_found", status_code=404), False),
    (ValueError("bad value"), False),
    (RuntimeError("a bug"), False),
    (RuntimeError("No available agent to submit job, please try again later."), True),
    (ConnectionResetError(), True),
    (RayTaskError("chat", "traceback", ProtocolError("temperature: too high")), False),  # a replica's 400
    (RayTaskError("chat", "traceback", RuntimeError("engine failed")), True),  # a replica's 500
    (GetTimeoutError("get timed out"), True),
    (BackPressureError(num_queued_requests=9, max_queued_requests=8), True),  # Serve's queue is full: not now
    (DeploymentUnavailableError(DeploymentID("TeacherDeployment", "teacher")), True),
])  # fmt: skip
def test_is_transient(exc, transient):
    assert is_transient(exc) is transient


@pytest.mark.parametrize("exc, refused", [
    (_status(openai.BadRequestError, 400), True),  # the teacher's "the prompt has N tokens; the context is M"
    (_status(openai.NotFoundError, 404), True),
    (_status(openai.RateLimitError, 429), False),  # not now, not "not this": retried
    (_status(openai.InternalServerError, 500), False),
    (openai.APIConnectionError(request=REQUEST), False),
    (ProtocolError("messages: the prompt has 9 tokens", code="context_length_exceeded"), True),
    (RayTaskError("chat", "traceback", ProtocolError("temperature: too high")), True),  # a replica's 400
    (RayTaskError("chat", "traceback", ProtocolError("x")).as_instanceof_cause(), True),
    (RayTaskError("chat", "traceback", ValueError("bad value")), True),  # the replica refused the values
    (RayTaskError("chat", "traceback", RuntimeError("engine failed")), False),  # a replica's 500
    (TypeError("missing required arguments"), False),  # a local bug, not the row's fault
    (ValueError("bad value"), False),
])  # fmt: skip
def test_is_refusal(exc, refused):
    assert is_refusal(exc) is refused
    assert not (refused and is_transient(exc))  # never both


def _flaky(errors: list[BaseException]):
    calls = []

    def fn():
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return "ok"

    return fn, calls


def test_transient_errors_are_retried_until_success():
    fn, calls = _flaky([ConnectionError(), _status(openai.InternalServerError, 503)])
    assert call_with_retries(fn, attempts=5, base_delay_s=0.001) == "ok" and len(calls) == 3


def test_a_refused_request_is_not_retried_and_the_last_error_is_raised_as_is():
    fn, calls = _flaky([_status(openai.BadRequestError, 400)])
    with pytest.raises(openai.BadRequestError):
        call_with_retries(fn, attempts=5, base_delay_s=0.001)
    assert len(calls) == 1
    fn, calls = _flaky([ConnectionError("down")] * 9)
    with pytest.raises(ConnectionError, match="down"):
        call_with_retries(fn, attempts=3, base_delay_s=0.001)
    assert len(calls) == 3


def test_a_time_budget_bounds_the_retries():
    fn, calls = _flaky([TimeoutError()] * 1000)
    with pytest.raises(TimeoutError):
        call_with_retries(fn, within_s=0.2, base_delay_s=0.01, max_delay_s=0.02)
    assert 2 <= len(calls) < 1000
    with pytest.raises(ValueError, match="attempts or within_s"):
        call_with_retries(lambda: None)


def test_one_line_names_the_remote_error_not_the_traceback():
    wrapped = RayTaskError("chat", "Traceback ...\n  raise X(f'{attempt}')", ValueError("prompt too long\nmore"))
    assert one_line(wrapped) == "ValueError: prompt too long"
    assert one_line(RuntimeError()) == "RuntimeError"
