"""Every metric docs/metrics.md documents is scraped from the node's Prometheus endpoint after teacher traffic."""

from __future__ import annotations

import re
import time
import urllib.request

import httpx
import pytest

from distill_ray.config import ServeConfig

pytestmark = pytest.mark.ray

from conftest import REPO  # noqa: E402

DOC = REPO / "docs" / "metrics.md"
APP = "metrics-test"
PER_PROXY = {"ray_serve_num_ongoing_http_requests"}  # labelled by proxy node, not by application


def documented_names() -> list[str]:
    """The metric names in the doc's tables (first column, in backticks)."""
    return re.findall(r"^\| `(ray_[a-z_]+)` \|", DOC.read_text(), flags=re.MULTILINE)


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def series(text: str, name: str) -> list[str]:
    """Sample lines of a metric; a histogram's samples are its _bucket/_count/_sum lines."""
    return [line for line in text.splitlines()
            if re.match(rf"{name}(_bucket|_count|_sum)?[{{ ]", line)]  # fmt: skip


def test_documented_metrics_are_exported(ray_cluster, serve_port):
    from cluster.embedded import metrics_url
    from serve.teacher import deploy_teacher, undeploy

    names = documented_names()
    assert len(names) >= 12, names  # the doc's tables were found
    url = metrics_url()
    assert url and url.endswith("/metrics")
    endpoint = deploy_teacher("tiny:smollm2", ServeConfig(port=serve_port, num_cpus=0.25), app_name=APP,
                              served_name="metered")  # fmt: skip
    try:
        body = {"model": "metered", "messages": [{"role": "user", "content": "1 + 1?"}], "max_tokens": 4, "n": 2}
        for _ in range(3):
            assert httpx.post(f"{endpoint.base_url}/chat/completions", json=body, timeout=120).status_code == 200
        endpoint.handle.chat.remote(body).result()
        deadline, missing, text = time.monotonic() + 90, names, ""
        while missing and time.monotonic() < deadline:  # agents export on an interval
            text = scrape(url)
            missing = [n for n in names if not any(n in PER_PROXY or f'application="{APP}"' in s
                                                   or 'model="metered"' in s for s in series(text, n))]  # fmt: skip
            if missing:
                time.sleep(1)
        assert not missing, f"not exported for {APP}: {missing}"
        healthy = [s for s in series(text, "ray_serve_deployment_replica_healthy")
                   if f'application="{APP}"' in s and 'deployment="TeacherDeployment"' in s]  # fmt: skip
        assert sum(float(s.rsplit(" ", 1)[1]) for s in healthy) == 1  # one replica, as deployed
        sequences = [s for s in series(text, "ray_distill_ray_teacher_sequences_total") if 'model="metered"' in s]
        assert sum(float(s.rsplit(" ", 1)[1]) for s in sequences) == 4 * 2  # 4 requests x n=2
    finally:
        undeploy(APP)
