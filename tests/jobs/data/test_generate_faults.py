"""Fault test: the teacher's only replica is killed (SIGKILL) in the middle of a `generate` stage. Serve starts a
replacement, the callers retry the requests the dead replica held, and the stage completes with every problem's
samples exactly once: 0 lost, 0 duplicated.

Loopback only, bounded: 16 tiny problems, one kill, the stage's own retry budget."""

from __future__ import annotations

import json
from collections import Counter

import pyarrow.parquet as pq
import pytest
from conftest import Background, ray_worker_pids, sigkill_ray_worker

from distill_ray.config import build_config
from distill_ray.data.part_store import MANIFESTS
from jobs.stage import StageEnv

pytestmark = pytest.mark.ray

PROBLEMS, SAMPLES, BATCH = 16, 2, 2
REPLICA = "ServeReplica:teacher-generate:TeacherDeployment"


def test_teacher_replica_killed_mid_generation_loses_and_repeats_nothing(tmp_path, ray_cluster, serve_port):
    from jobs.data import generate

    rows = [{"question": f"What is {a} + {a}?", "answer": str(2 * a)} for a in range(PROBLEMS)]
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    job = build_config({
        "job_type": "generate",
        "output_dir": str(tmp_path / "out"),
        "dataset": {"instruction_path": str(tmp_path / "prompts.jsonl")},
        "models": {"teacher": "tiny:smollm2"},
        # One caller, small batches: parts commit one after another, so the kill lands mid-stage. The retry
        # budget (jittered backoff up to 8 s a wait) outlasts a replica's replacement on this box.
        "inference": {"max_new_tokens": 24, "temperature": 0.8, "num_samples": SAMPLES, "seed": 3, "concurrency": 1,
                      "batch_size": BATCH, "max_retries": 8, "serve": {"port": serve_port}},
        "distillation": {"keep": "all"},
    })  # fmt: skip
    env = StageEnv("generate", tmp_path / "out", tmp_path / "out" / "rejected", ray_cluster)
    run = Background(lambda: generate.run(job, env), timeout_s=300)
    manifests = tmp_path / "out" / "generations" / MANIFESTS
    run.wait_until(lambda: manifests.is_dir() and any(manifests.iterdir()), "a part", poll_s=0.05)  # first committed
    victim = sigkill_ray_worker(REPLICA)
    parts_at_kill = len(list(manifests.iterdir()))
    run.join()
    outcome = run.outcome

    assert not run.thread.is_alive(), "the stage did not finish after the kill"
    assert "error" not in outcome, f"the stage failed after the kill: {outcome.get('error')!r}"
    assert parts_at_kill < PROBLEMS // BATCH, "the kill came after the last part: nothing was tested"
    result = outcome["result"]
    samples = pq.read_table(tmp_path / "out" / "generations").to_pylist()
    per_problem = Counter(r["id"] for r in samples)
    # Every problem (ids are content hashes), each with its samples once.
    assert len(per_problem) == PROBLEMS and set(per_problem.values()) == {SAMPLES}, per_problem
    assert len({r["sample_id"] for r in samples}) == PROBLEMS * SAMPLES
    assert (result.rows_in, result.rows_out, result.rows_rejected) == (PROBLEMS, PROBLEMS, 0)
    # The replica was replaced (not merely restarted in the same process) while the stage ran.
    assert victim not in ray_worker_pids(REPLICA)
