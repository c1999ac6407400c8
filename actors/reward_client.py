"""A client of the reward service's `/v1/rewards` (serve/reward.py), used by GRPO workers over HTTP.

Transient failures (connection errors, timeouts, 5xx) are retried with exponential backoff; a 4xx is a
bug in what we sent and fails at once with the service's message (the one policy: `distill_ray.retry`).
"""

from __future__ import annotations

from typing import Any

from distill_ray.errors import one_line
from distill_ray.retry import call_with_retries, is_transient


class RewardServiceError(RuntimeError):
    """The reward service refused a request or stayed unreachable through every retry."""


class RewardClient:
    def __init__(self, base_url: str, api_key: str | None = None, timeout_s: float = 120.0, max_retries: int = 4):
        import httpx

        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url.rstrip("/")
        self.max_retries = max_retries
        self._http = httpx.Client(headers=headers, timeout=timeout_s)
        self.calls = 0

    def rewards(self, items: list[dict[str, Any]], setting: str | None = None) -> list[dict]:
        """[{prompt, response, reference}] -> the service's per-item results, in order."""
        body: dict[str, Any] = {"items": items}
        if setting:
            body["setting"] = setting
        return self._request("POST", "/v1/rewards", body)["results"]

    def health(self) -> dict:
        return self._request("GET", "/health", None)

    def _request(self, method: str, path: str, body: dict | None) -> dict:
        import httpx

        url = self.base_url + path

        def once() -> dict:
            self.calls += 1
            response = self._http.request(method, url, json=body)
            response.raise_for_status()
            return response.json()

        try:
            return call_with_retries(once, attempts=self.max_retries + 1)
        except httpx.HTTPError as exc:
            response = getattr(exc, "response", None) if isinstance(exc, httpx.HTTPStatusError) else None
            error = _message(response) if response is not None else one_line(exc)
            if is_transient(exc):
                raise RewardServiceError(f"reward service at {url} unreachable after {self.max_retries + 1} tries: "
                                         f"{error}") from None  # fmt: skip
            raise RewardServiceError(f"reward service at {url} refused the request: {error}") from None

    def close(self) -> None:
        self._http.close()


def _message(response) -> str:
    try:
        return f"{response.status_code} {response.json()['error']['message']}"
    except Exception:  # noqa: BLE001 - not our JSON error shape
        return f"{response.status_code} {response.text[:200]}"
