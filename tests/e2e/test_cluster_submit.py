"""`distill-ray submit` and `distill-ray jobs` against a real Ray head started here, on loopback, with token auth.

The head is `ray start --head --block` in its own session (so the whole process group can be killed at the end),
its dashboard (the Jobs API) bound to 127.0.0.1 on a free port and `RAY_AUTH_MODE=token` with a fresh token.
The CLI runs as a subprocess, as a user would run it; it finds the token in `$RAY_AUTH_TOKEN`.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import error_lines, free_port

pytestmark = pytest.mark.ray

from conftest import REPO  # noqa: E402 - the repository root, wherever this file sits

VENV_BIN = str(Path(sys.executable).parent)
RECIPE = "recipes/cluster_smoke.yaml"


@pytest.fixture(scope="module")
def ray_head():
    token = secrets.token_hex(16)
    temp_dir = tempfile.mkdtemp(prefix="drh-", dir="/tmp")  # short: Ray's socket paths sit below it
    dashboard = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,
           "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}"}  # the job's `python` is this venv's  # fmt: skip
    env.pop("RAY_ADDRESS", None)
    cmd = [f"{VENV_BIN}/ray", "start", "--head", "--block", "--node-ip-address=127.0.0.1",
           f"--port={free_port()}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
           f"--ray-client-server-port={free_port()}", "--num-cpus=2", f"--temp-dir={temp_dir}",
           # The test session's own embedded cluster also runs on 127.0.0.1 and holds the agent's default port
           # (52365); a second loopback node on one machine needs its own, or its Jobs API has no agent.
           f"--dashboard-agent-listen-port={free_port()}"]  # fmt: skip
    log = open(Path(temp_dir) / "head.log", "w")
    head = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{dashboard}"
    try:
        _wait_for_jobs_api(url, token, head, timeout_s=120)
        yield url, token
    finally:
        _kill_group(head)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _wait_for_jobs_api(url: str, token: str, head: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    request = urllib.request.Request(f"{url}/api/jobs/", headers={"Authorization": f"Bearer {token}"})
    while time.monotonic() < deadline:
        if head.poll() is not None:
            raise RuntimeError(f"ray start exited with {head.returncode}")
        try:
            urllib.request.urlopen(request, timeout=5).close()
            return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"the Jobs API at {url} did not come up in {timeout_s} s")


def _kill_group(proc: subprocess.Popen) -> None:
    """`ray start --block` ignores a plain SIGTERM for a while; its processes share its session's group."""
    for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            if sig == signal.SIGKILL:
                return
        except subprocess.TimeoutExpired:
            continue


def cli(*args: str, token: str | None, timeout: float = 300, **env_extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_AUTH_TOKEN_PATH": "/nonexistent/auth_token", **env_extra}
    env.pop("RAY_ADDRESS", None)
    env.pop("RAY_AUTH_TOKEN", None)
    if token is not None:
        env["RAY_AUTH_TOKEN"] = token
    return subprocess.run([f"{VENV_BIN}/distill-ray", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def test_submit_waits_for_a_small_recipe_to_succeed_and_jobs_commands_see_it(ray_head, tmp_path):
    url, token = ray_head
    out = tmp_path / "smoke"
    job_id = f"smoke-{secrets.token_hex(3)}"
    proc = cli("submit", RECIPE, "--address", url, "--wait", "--submission-id", job_id,
               "--set", f"output_dir={out}", "--set", f"inference.serve.port={free_port()}", token=token)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"job '{job_id}': SUCCEEDED" in proc.stderr  # a status message, logged
    summary = json.loads((out / "summary.json").read_text())  # written by the job, on the cluster
    assert summary["status"] == "ok"
    stage = summary["stages"][0]
    assert stage["rows_in"] == 4 and stage["rows_out"] == 4

    listed = cli("jobs", "list", "--address", url, token=token)
    assert listed.returncode == 0, listed.stderr
    assert any(line.startswith(f"{job_id}\tSUCCEEDED") for line in listed.stdout.splitlines()), listed.stdout
    status = cli("jobs", "status", job_id, "--address", url, token=token)
    assert json.loads(status.stdout)["status"] == "SUCCEEDED"
    for follow in ([], ["--follow"]):  # --follow on an ended job prints it all and returns
        logs = cli("jobs", "logs", job_id, "--address", url, *follow, token=token, timeout=120)
        assert f"[distill-ray] ok: {out}/summary.json" in logs.stdout, follow


def test_jobs_stop_ends_a_running_submission(ray_head, tmp_path):
    url, token = ray_head
    job_id = f"stopped-{secrets.token_hex(3)}"
    proc = cli("submit", RECIPE, "--address", url, "--submission-id", job_id,
               "--set", f"output_dir={tmp_path / 'stopped'}", "--set", f"inference.serve.port={free_port()}",
               token=token)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "distill-ray jobs logs" in proc.stderr  # without --wait it says how to follow the job
    stop = cli("jobs", "stop", job_id, "--address", url, token=token)
    assert stop.returncode == 0, stop.stderr
    deadline, status = time.monotonic() + 120, None
    while time.monotonic() < deadline:
        status = json.loads(cli("jobs", "status", job_id, "--address", url, token=token).stdout)["status"]
        if status in ("STOPPED", "FAILED", "SUCCEEDED"):
            break
        time.sleep(2)
    assert status == "STOPPED"


def _one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    # Progress messages (e.g. a note about a relative output_dir) may sit around it; the error is one line.
    lines = error_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.mark.parametrize(("token", "expected"), [(None, "needs an auth token (HTTP 401)"),
                                                 ("wrong-token", "rejected the auth token (HTTP 403)")])  # fmt: skip
def test_missing_or_wrong_token_fails_in_one_line(ray_head, token, expected):
    url, _ = ray_head
    line = _one_line_error(cli("submit", RECIPE, "--address", url, token=token))
    assert expected in line and url in line and "RAY_AUTH_TOKEN" in line
    line = _one_line_error(cli("jobs", "list", "--address", url, token=token))
    assert expected in line


def test_bad_address_or_unknown_job_fails_in_one_line(ray_head):
    url, token = ray_head
    dead = f"http://127.0.0.1:{free_port()}"
    line = _one_line_error(cli("submit", RECIPE, "--address", dead, "--timeout", "3", token=token))
    assert line.startswith("distill-ray: config error: --address: cannot reach the Ray Jobs API") and dead in line
    line = _one_line_error(cli("jobs", "status", "no-such-job", "--address", url, token=token))
    assert "no-such-job" in line
