"""`distill-ray serve teacher`: prints a base URL the openai client can use, and stops cleanly on SIGINT and SIGTERM.

The CLI is started as a script starts a background job (SIGINT ignored, inherited): it must stop on SIGINT anyway
(exit 130) and on SIGTERM, what systemd, Docker and Kubernetes send (exit 143), and leave no process behind.
"""

import shutil
import signal
import urllib.request

import pytest
from conftest import free_port
from signal_fixtures import cleanup, start_background_cli, stop_and_wait, survivors, wait_for_line

pytestmark = [pytest.mark.ray, pytest.mark.timeout(400)]


@pytest.fixture
def teacher_config(tmp_path):
    state_dir = f"/tmp/dr-serve-{free_port()}"  # short: Ray's socket paths live below it
    cfg = tmp_path / "teacher.yaml"
    cfg.write_text(
        "job_type: generate\n"
        "models: {teacher: 'tiny:smollm2'}\n"
        "dataset: {instruction_path: 'procedural:arithmetic'}\n"
        f"inference: {{serve: {{port: {free_port()}, api_key: sekret}}}}\n"
        f"ray: {{state_dir: {state_dir}}}\n"
    )
    yield str(cfg)
    shutil.rmtree(state_dir, ignore_errors=True)


def test_serve_teacher_prints_url_answers_openai_and_stops_on_sigint(tmp_path, teacher_config):
    import openai

    proc, lines = start_background_cli(["serve", "teacher", teacher_config], tmp_path / "err.log")
    try:
        url = wait_for_line(proc, lines, "http", timeout=240)  # Ray may forward worker output before the URL
        assert url.startswith("http://127.0.0.1:") and url.endswith("/teacher/v1"), url
        client = openai.OpenAI(base_url=url, api_key="sekret", max_retries=0)
        reply = client.chat.completions.create(model="tiny-smollm2", max_tokens=4,
                                               messages=[{"role": "user", "content": "hi"}])  # fmt: skip
        assert reply.choices[0].finish_reason in ("stop", "length")
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url, api_key="wrong", max_retries=0).models.list()
        assert stop_and_wait(proc, signal.SIGINT) == 130
        assert not survivors(proc), "Ray processes outlived the CLI"
        assert "stopped by SIGINT" in (tmp_path / "err.log").read_text()
    finally:
        cleanup(proc)


def test_serve_teacher_stops_on_sigterm_and_leaves_no_process(tmp_path, teacher_config):
    proc, lines = start_background_cli(["serve", "teacher", teacher_config], tmp_path / "err.log")
    try:
        url = wait_for_line(proc, lines, "http", timeout=240)
        with urllib.request.urlopen(url.removesuffix("/v1") + "/health", timeout=30) as answer:
            assert answer.status == 200
        assert stop_and_wait(proc, signal.SIGTERM) == 143  # before: abort (134) in Ray's crash handler
        left = survivors(proc)
        assert not left, f"outlived the CLI: {left}"  # before: the dashboard and runtime-env agents
        err = (tmp_path / "err.log").read_text()
        assert "stopping the teacher service" in err and "SIGTERM received" not in err  # no crash handler stack
    finally:
        cleanup(proc)
