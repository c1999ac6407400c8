"""Talking to a Ray cluster's Jobs API (the dashboard's HTTP port, 8265 by default).

Used by `distill-ray submit` / `distill-ray jobs` (jobs/submit.py) and by the OpenRLHF launcher
(jobs/train/openrlhf_launch.py). Three things Ray's `JobSubmissionClient` leaves to the caller are done here:

- **Auth token.** Ray 2.60 clusters use token authentication by default. The token is taken from
  `$RAY_AUTH_TOKEN`, else the file `$RAY_AUTH_TOKEN_PATH`, else `~/.ray/auth_token` (the places Ray itself
  reads), and sent as `Authorization: Bearer ...` on every call.
- **Fast, one-line failures.** The client's requests carry no timeout, so the address is probed first with
  one; an unreachable address, a missing or wrong token, or a non-Ray server each become one `ConfigError`
  line naming the setting to fix.
- **Following a job** to its end, printing each status change and the log tail of a failed job.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from distill_ray.errors import ConfigError

log = logging.getLogger(__name__)

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
_POLL_FAILURES = 5  # consecutive failed status polls before giving up on following a job


def auth_token() -> str | None:
    """The cluster token, from where Ray looks for it; None when there is none."""
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if token:
        return token
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
    try:
        return Path(path).expanduser().read_text().strip() or None
    except OSError:
        return None


def normalize_address(address: str | None, key: str) -> str:
    """`http[s]://host:port` of a Jobs API, from an address or `$RAY_ADDRESS`; a ConfigError naming `key` else."""
    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        raise ConfigError(key, "no Ray Jobs API address: give it (e.g. http://head:8265) or set $RAY_ADDRESS")
    if address in ("auto", "local") or address.startswith("ray://"):
        raise ConfigError(key, f"'{address}' is not a Jobs API address; use http://<head>:8265")
    return (address if "://" in address else f"http://{address}").rstrip("/")


def connect(address: str, timeout_s: float, key: str):
    """A `JobSubmissionClient` for `address` that has been checked to answer and to accept our token.

    Raises a one-line ConfigError naming `key` (the setting that holds the address) when it does not.
    """
    token = auth_token()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    _probe(f"{address}/api/version", headers, timeout_s, key, address)  # reachable, and a Ray dashboard
    _probe(f"{address}/api/jobs/", headers, timeout_s, key, address)  # the token is accepted

    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address, headers=headers or None)
    except Exception as exc:  # noqa: BLE001 - version mismatch and the like: "cannot use this address", one line
        raise ConfigError(key, f"Ray Jobs API at {address}: {first_line(exc)}") from None


def _probe(url: str, headers: dict[str, str], timeout_s: float, key: str, address: str) -> None:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            if url.endswith("/api/version"):
                json.loads(response.read() or b"{}")  # a Ray dashboard answers JSON here
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            what = "needs an auth token" if exc.code == 401 else "rejected the auth token"
            hint = "set RAY_AUTH_TOKEN to the cluster's token (`ray get-auth-token` on the head node)"
            raise ConfigError(key, f"the Ray Jobs API at {address} {what} (HTTP {exc.code}): {hint}") from None
        raise ConfigError(key, f"{address} is not a Ray Jobs API: GET {url} answered HTTP {exc.code}") from None
    except ValueError:
        raise ConfigError(key, f"{address} is not a Ray Jobs API: GET {url} did not answer JSON") from None
    except OSError as exc:
        reason = getattr(exc, "reason", exc)
        raise ConfigError(key, f"cannot reach the Ray Jobs API at {address}: {reason}") from None


def follow(
    client, submission_id: str, interval_s: float, label: str = "job", log_tail: int = 20
) -> tuple[str, str | None]:
    """Poll a job until it ends, printing each status change; returns (status, Ray's message when it failed).

    Ctrl-C stops the waiting, not the job (which goes on in the cluster).
    """
    last, failures, status = None, 0, None
    try:
        while True:
            try:
                status = client.get_job_status(submission_id).value
                failures = 0
            except OSError as exc:  # requests' errors are OSErrors: ride out a few network blips
                failures += 1
                if failures >= _POLL_FAILURES:
                    raise RuntimeError(f"lost the Jobs API while following '{submission_id}' "
                                       f"(it may still run): {first_line(exc)}") from None  # fmt: skip
                time.sleep(interval_s)
                continue
            if status != last:
                log.info("%s '%s': %s", label, submission_id, status)
                last = status
            if status in TERMINAL:
                break
            time.sleep(interval_s)
    except KeyboardInterrupt:
        log.info("stopped waiting; the job goes on (`distill-ray jobs stop %s` ends it)", submission_id)
        raise
    message = None
    if status != "SUCCEEDED":
        message = client.get_job_info(submission_id).message
        logs = client.get_job_logs(submission_id).splitlines()
        log.error("\n".join(["last lines of the job's log:", *logs[-log_tail:]]))
    return status, message


def job_record(info: Any) -> dict[str, Any]:
    """The fields of a JobDetails / JobInfo worth showing, JSON-ready."""
    fields = ("submission_id", "job_id", "status", "entrypoint", "message", "start_time", "end_time")
    out = {name: getattr(info, name, None) for name in fields}
    out["status"] = getattr(out["status"], "value", out["status"])
    return out


def first_line(exc: BaseException | str) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
