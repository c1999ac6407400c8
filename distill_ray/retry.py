"""One retry policy for every call to a service that may be briefly away: teachers, the reward service,
a Ray cluster's Jobs API.

`is_transient` and `is_refusal` are the one classifier. A request the service refused (HTTP 4xx other than
408/409/425/429, a value its remote code refused) will fail the same way again, so it is not retried: the
caller rejects that row or reports the mistake. A server error (5xx, 429, an exception inside a Ray replica
other than a refusal), a connection or timeout error, a Ray actor or replica that died, or a cluster still
starting may pass, so it is retried with jittered exponential backoff. A local exception of any other kind is
a bug: neither retried nor a refusal.
`call_with_retries` applies that policy with tenacity and re-raises the last error, so the caller decides
what a refusal and an outage mean for it (e.g. reject the row vs stop the stage).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import httpx
import tenacity

T = TypeVar("T")

# Statuses that say "not now" rather than "not this request".
RETRYABLE_STATUS = frozenset({408, 409, 425, 429})
# What a Ray cluster's Jobs API answers while its job agent is still starting.
_STARTING = "try again later"


def is_transient(exc: BaseException) -> bool:
    """True if calling again may succeed (outage, overload, start-up); False for a refused request or a bug."""
    status = _status_code(exc)
    if status is not None:
        return status >= 500 or status in RETRYABLE_STATUS
    cause = getattr(exc, "cause", None)  # Ray's RayTaskError carries the remote exception as `cause`
    if isinstance(cause, BaseException) and cause is not exc:
        # A remote failure is the server's (a 5xx) unless the remote code refused the request's values.
        refused = _status_code(cause) is not None or isinstance(cause, (ValueError, TypeError))
        return is_transient(cause) if refused else True
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    if _is_network_error(exc) or _is_ray_system_error(exc):
        return True
    return _STARTING in str(exc)


def is_refusal(exc: BaseException) -> bool:
    """True if the service refused this request: a 4xx (other than the "not now" ones), or its remote code refused
    the request's values (a replica's ValueError / TypeError, e.g. a prompt longer than the context). The request
    is at fault, so the caller rejects it (that row) and goes on. False for an outage (`is_transient`) and for a
    local exception, which is a bug on the caller's side and must not be passed off as a bad row."""
    status = _status_code(exc)
    if status is not None:
        return 400 <= status < 500 and status not in RETRYABLE_STATUS
    cause = getattr(exc, "cause", None)  # Ray's RayTaskError: the replica's own exception
    if isinstance(cause, BaseException) and cause is not exc:
        return is_refusal(cause) if _status_code(cause) is not None else isinstance(cause, (ValueError, TypeError))
    return False


def call_with_retries(fn: Callable[[], T], *, attempts: int | None = None, within_s: float | None = None,
                      base_delay_s: float = 0.5, max_delay_s: float = 8.0) -> T:  # fmt: skip
    """`fn()`, called again after each transient error until it succeeds, `attempts` calls were made or
    `within_s` seconds passed (at least one bound is required). Waits grow as base_delay_s * 2^n, up to
    max_delay_s, with random jitter. Raises the last error as it was (transient or not)."""
    if attempts is None and within_s is None:
        raise ValueError("call_with_retries needs attempts or within_s")
    stop = tenacity.stop_never
    if attempts is not None:
        stop = tenacity.stop_after_attempt(max(1, attempts))
    if within_s is not None:
        stop = stop | tenacity.stop_after_delay(within_s)
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(is_transient),
        stop=stop,
        wait=tenacity.wait_random_exponential(multiplier=base_delay_s, max=max_delay_s),
        reraise=True,
    )
    return retrying(fn)


def _status_code(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)  # openai.APIStatusError, our ProtocolError
    if status is None:
        response = getattr(exc, "response", None)  # httpx.HTTPStatusError
        status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _is_network_error(exc: BaseException) -> bool:
    # httpx is imported with this module, never here: a first import from one of a caller pool's threads would
    # let the openai client, in another thread, find it half-initialised in sys.modules (its `timeout_exceptions`
    # looks there) and fail the request with "partially initialized module 'httpx'".
    import openai

    return isinstance(exc, (httpx.TransportError, openai.APIConnectionError))


def _is_ray_system_error(exc: BaseException) -> bool:
    """Ray's own failures (actor or replica died, object lost, a get timed out), not a task's exception, and Serve's
    "not now" answers to a handle call (queue full, no replica up yet), which are Serve's, not Ray's, errors."""
    try:
        from ray.exceptions import RayError, RayTaskError
        from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError
    except ImportError:  # Ray is optional for this module's callers outside a cluster
        return False
    not_now = (BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError)
    return (isinstance(exc, RayError) and not isinstance(exc, RayTaskError)) or isinstance(exc, not_now)
