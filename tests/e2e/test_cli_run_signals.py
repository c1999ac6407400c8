"""`distill-ray run` stopped by SIGTERM mid-stage: the stage is named, its committed parts stay, Ray stops.

Started like a background job (SIGINT ignored), as `tests/e2e/test_cli_serve.py` does for the services.
"""

import json
import shutil
import signal
import time

import pytest
from conftest import free_port
from signal_fixtures import cleanup, start_background_cli, stop_and_wait, survivors

pytestmark = [pytest.mark.ray, pytest.mark.timeout(400)]

MESSAGE = "stage 'generate' interrupted by SIGTERM; completed parts kept, re-run to resume"


def _wait_for_parts(parts_dir, proc, timeout: float) -> None:
    deadline = time.time() + timeout
    while not any(parts_dir.glob("part-*.parquet")):
        assert proc.poll() is None, f"the run ended ({proc.returncode}) before committing a part"
        assert time.time() < deadline, f"no part in {parts_dir} within {timeout} s"
        time.sleep(0.2)


def test_run_stops_its_stage_on_sigterm_keeps_parts_and_names_the_stage(tmp_path):
    state_dir, out = f"/tmp/dr-run-{free_port()}", tmp_path / "out"
    cfg = tmp_path / "generate.yaml"
    cfg.write_text(
        "job_type: generate\n"
        f"output_dir: {out}\n"
        "models: {teacher: 'tiny:smollm2'}\n"
        "dataset: {instruction_path: 'procedural:arithmetic', limit: 400}\n"  # far more than the run gets through
        f"inference: {{max_new_tokens: 8, batch_size: 2, concurrency: 1, serve: {{port: {free_port()}}}}}\n"
        f"ray: {{state_dir: {state_dir}}}\n"
    )
    proc, _ = start_background_cli(["run", str(cfg)], tmp_path / "err.log")
    try:
        _wait_for_parts(out / "generations", proc, timeout=240)
        assert stop_and_wait(proc, signal.SIGTERM) == 143
        assert not survivors(proc), "Ray processes outlived the CLI"
        err = (tmp_path / "err.log").read_text()
        assert f"distill-ray: {MESSAGE}" in err.splitlines(), err[-2000:]
        summary = json.loads((out / "summary.json").read_text())
        assert summary["status"] == "failed" and summary["error"] == MESSAGE
        assert any((out / "generations").glob("part-*.parquet"))  # what was committed is kept for the re-run
    finally:
        cleanup(proc)
        shutil.rmtree(state_dir, ignore_errors=True)
