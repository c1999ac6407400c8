"""What `distill-ray run` prints (jobs/console.py): a bar and a summary per stage and warnings on the console, Ray's
INFO output (Serve access logs, Ray Data's progress dumps) in `<output_dir>/logs/`; `--verbose` shows it again.

One small real generate stage with --verbose, on its own embedded cluster, as a user runs it (the quiet console of a
whole run is checked by tests/e2e/test_quickstart.py); the routing itself is checked without a cluster.
"""

import re
import shutil
import subprocess
import sys

import pytest
from conftest import REPO, free_port

SUMMARY = re.compile(r"\[distill-ray\] stage 'generate' done in [\d.]+s: 4 in, 4 out, 0 rejected")


def _run(tmp_path, *flags: str) -> tuple[str, object]:
    state_dir, out = f"/tmp/dr-con-{free_port()}", tmp_path / "out"
    cfg = tmp_path / "generate.yaml"
    cfg.write_text(
        "job_type: generate\n"
        f"output_dir: {out}\n"
        "models: {teacher: 'tiny:smollm2'}\n"
        "dataset: {instruction_path: 'procedural:arithmetic', limit: 4}\n"
        f"inference: {{max_new_tokens: 4, batch_size: 2, concurrency: 1, serve: {{port: {free_port()}}}}}\n"
        f"ray: {{state_dir: {state_dir}}}\n"
    )
    try:
        proc = subprocess.run([sys.executable, "-m", "jobs.cli", "run", str(cfg), *flags], cwd=REPO, timeout=380,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)  # fmt: skip
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
    assert proc.returncode == 0, proc.stdout[-3000:]
    return proc.stdout, out


ROUTING_CHECK = """
import logging, os, sys
from pathlib import Path
from jobs.console import QUIET_ENV, RunConsole

before = os.environ.get("RAY_SERVE_LOG_TO_STDERR")
with RunConsole(Path(sys.argv[1])) as console:
    assert {k: os.environ[k] for k in QUIET_ENV} == QUIET_ENV  # what Ray's processes start with
    console.attach(ray_logs_dir=None)
    logging.getLogger("ray.data.demo").info("Execution plan of Dataset demo")
    logging.getLogger("ray.serve").warning("a replica is slow")
assert os.environ.get("RAY_SERVE_LOG_TO_STDERR") == before  # put back on the way out
"""


def test_ray_info_goes_to_the_run_log_and_warnings_stay_on_the_console(tmp_path):
    # In a process of its own, as the CLI runs: Ray's loggers start as Ray configures them at import, not as the
    # earlier tests of this session (their embedded clusters, Serve, Ray Data) left them.
    proc = subprocess.run([sys.executable, "-c", ROUTING_CHECK, str(tmp_path / "logs")], cwd=REPO,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Execution plan" not in proc.stderr and "a replica is slow" in proc.stderr, proc.stderr[-3000:]
    written = (tmp_path / "logs" / "ray.log").read_text()
    assert "Execution plan of Dataset demo" in written and "a replica is slow" in written


@pytest.mark.ray
@pytest.mark.timeout(400)
def test_verbose_brings_ray_output_back(tmp_path):
    console, out = _run(tmp_path, "--verbose")
    assert SUMMARY.search(console), console[-3000:]
    assert "CALL chat OK" in console and "Running Dataset" in console
    assert "Running Dataset" in (out / "logs" / "ray.log").read_text()


QUIET_WORKER_CHECK = """
import http.server, logging, os, sys, threading
import httpx, openai
from distill_ray.log import quiet_run
from jobs.console import QUIET_ENV, quiet_train_worker
from ray.train.v2._internal.execution import context

logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s %(message)s")  # as in a Ray Train worker
report_logger = context.logger  # the logger "Reporting training result" is written to
server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)  # loopback; answers 501
threading.Thread(target=server.serve_forever, daemon=True).start()
url = f"http://127.0.0.1:{server.server_port}/v1"
client = openai.OpenAI(base_url=url, api_key="x", max_retries=0)  # how an opd trainer calls its teacher


def requests(phase):  # one request through each client, as the trainers send them; their log lines say the phase
    print("PHASE", phase, flush=True)
    httpx.get(url)  # the reward client's (grpo)
    try:
        client.models.list()
    except openai.APIError:
        pass


assert quiet_train_worker(False) is False and report_logger.isEnabledFor(logging.INFO)  # --verbose: as Ray has it
requests("verbose")
assert quiet_train_worker(True) is True
assert not report_logger.isEnabledFor(logging.INFO) and report_logger.isEnabledFor(logging.WARNING)
requests("quiet")
assert not quiet_run()
os.environ.update(QUIET_ENV)
assert quiet_run()
"""


def test_a_quiet_train_worker_drops_ray_trains_per_step_report_line_and_http_lines_but_not_warnings():
    # The logger Ray Train writes "Reporting training result N" to, as a worker's quiet run sets it (the end-to-end
    # check that the line stays off the console is in tests/e2e/test_quickstart.py).
    proc = subprocess.run([sys.executable, "-c", QUIET_WORKER_CHECK], cwd=REPO, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    verbose, quiet = proc.stdout.split("PHASE quiet")
    # httpx and httpx2 (the openai client's fork, which logs under its own name) each log the request line
    assert {line.split()[0] for line in verbose.splitlines() if "HTTP Request: GET" in line} == {"httpx", "httpx2"}
    assert "HTTP Request" not in quiet, quiet
