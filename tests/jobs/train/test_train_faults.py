"""Fault test: a Ray Train worker killed (SIGKILL) in the middle of an `sft` run. Ray Train restarts the worker
group (`training.max_failures`) and the new worker resumes from the newest checkpoint: the run ends at its last
step with the same number of steps, having redone at most `save_steps` of them.

Loopback only, bounded: one tiny student, one kill."""

from __future__ import annotations

import pytest
from conftest import Background, sigkill_ray_worker
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
    run = Background(lambda: sft.run(job, stage), timeout_s=400)
    checkpoints = stage.output_dir / "checkpoints"
    run.wait_until(lambda: (latest_step(latest_checkpoint(checkpoints)) or 0) >= SAVE, "a checkpoint")  # complete
    sigkill_ray_worker("RayTrainWorker")
    run.join()
    outcome = run.outcome

    assert not run.thread.is_alive(), "the run did not finish after the kill"
    assert "error" not in outcome, f"the run failed after the kill: {outcome.get('error')!r}"
    metrics = outcome["result"].metrics
    assert metrics["steps"] == STEPS
    # The surviving run is the restarted one: it began at a checkpoint the killed worker wrote, not at step 0.
    assert SAVE <= metrics["resumed_from_step"] < STEPS, metrics["resumed_from_step"]
    assert (stage.output_dir / "model" / "config.json").exists()
