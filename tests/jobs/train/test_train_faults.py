"""Fault test: a Ray Train worker killed (SIGKILL) in the middle of an `sft` run. Ray Train restarts the worker
group (`training.max_failures`) and the new worker resumes from the newest checkpoint: the run ends at its last
step with the same number of steps, having redone at most `save_steps` of them.

Loopback only, bounded: one tiny student, one kill."""

from __future__ import annotations

import threading
import time

import pytest
from conftest import sigkill_ray_worker
from test_sft import _job, _stage, _write_rows

pytestmark = pytest.mark.ray

STEPS, SAVE = 30, 5


def test_worker_killed_mid_run_resumes_from_its_last_checkpoint(tmp_path, ray_cluster):
    from distill_ray.training.checkpoints import latest_checkpoint, latest_step
    from jobs.train import sft

    rows = tmp_path / "labeled.parquet"
    _write_rows(rows)
    stage = _stage(tmp_path / "run", ray_cluster)
    job = _job(rows, tmp_path / "run", num_workers=1, max_steps=STEPS, save_steps=SAVE, gradient_accumulation_steps=1)
    outcome: dict = {}

    def train() -> None:
        try:
            outcome["result"] = sft.run(job, stage)
        except BaseException as exc:  # noqa: BLE001 - asserted below
            outcome["error"] = exc

    runner = threading.Thread(target=train, daemon=True)
    runner.start()
    checkpoints = stage.output_dir / "checkpoints"
    deadline = time.time() + 400
    while (latest_step(latest_checkpoint(checkpoints)) or 0) < SAVE:  # a complete checkpoint exists
        assert runner.is_alive() and time.time() < deadline, outcome.get("error", "the run ended before a checkpoint")
        time.sleep(0.02)
    sigkill_ray_worker("RayTrainWorker")
    runner.join(timeout=max(1.0, deadline - time.time()))

    assert not runner.is_alive(), "the run did not finish after the kill"
    assert "error" not in outcome, f"the run failed after the kill: {outcome.get('error')!r}"
    metrics = outcome["result"].metrics
    assert metrics["steps"] == STEPS
    # The surviving run is the restarted one: it began at a checkpoint the killed worker wrote, not at step 0.
    assert SAVE <= metrics["resumed_from_step"] < STEPS, metrics["resumed_from_step"]
    assert (stage.output_dir / "model" / "config.json").exists()
