"""A client of the reward service's `/v1/rewards` (serve/reward.py), used by GRPO workers over HTTP.

Transient failures (connection errors, timeouts, 5xx) are retried with exponential backoff; a 4xx is a
bug in what we sent and fails at once with the service's message.
"""

from __future__ import annotations

import time
from typing import Any


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
        for attempt in range(self.max_retries + 1):
            try:
                self.calls += 1
                response = self._http.request(method, url, json=body)
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 400:
                    return response.json()
                error = _message(response)
                if response.status_code < 500:
                    raise RewardServiceError(f"reward service at {url} refused the request: {error}")
            if attempt < self.max_retries:
                time.sleep(min(8.0, 0.5 * 2**attempt))
        raise RewardServiceError(f"reward service at {url} unreachable after {self.max_retries + 1} tries: {error}")

    def close(self) -> None:
        self._http.close()


def _message(response) -> str:
    try:
        return f"{response.status_code} {response.json()['error']['message']}"
    except Exception:  # noqa: BLE001 - not our JSON error shape
        return f"{response.status_code} {response.text[:200]}"
