"""Keeping the teacher engine full: the in-flight numbers, the one warning, and a real run's sequences in flight."""

import json
import logging

import pytest

from distill_ray.config import build_config
from distill_ray.models.in_flight import FillPlan, fill_plan
from distill_ray.models.teachers import teacher_roster
from jobs.stage import StageEnv


def _job(tmp_path, inference: dict, **extra):
    return build_config({
        "job_type": "generate",
        "output_dir": str(tmp_path / "out"),
        "dataset": {"instruction_path": str(tmp_path / "prompts.jsonl")},
        "models": {"teacher": "tiny:smollm2"},
        "inference": inference,
        "distillation": {"keep": "all"},
        **extra,
    })  # fmt: skip


def test_the_plan_counts_callers_rows_temperatures_and_samples_against_the_slots(tmp_path):
    job = _job(tmp_path, {"serve": {"max_replicas": 2}})  # the defaults otherwise: 2 callers x 4 rows, n = 1
    [plan] = [fill_plan(t) for t in teacher_roster(job)]
    assert (plan.sequences, plan.slots) == (8, 16)
    assert plan.shortfall() == (
        "teacher 'tiny-smollm2': 2 callers x 4 rows x 1 temperature x 1 sample = 8 sequences in flight < 16 engine "
        "slots (2 replicas x 8); raise inference.concurrency or inference.batch_size (to 8 fills them)"
    )
    assert plan.rows_needed() == 8

    # Two temperatures x two samples fill them; the callers' threads are sized to a batch's requests.
    filled = FillPlan("t", callers=2, rows=4, requests_per_row=2, samples=2, replicas=2, slots_per_replica=8,
                      max_ongoing_requests=32)  # fmt: skip
    assert (filled.sequences, filled.requests_per_caller, filled.shortfall()) == (32, 8, None)


def test_max_ongoing_requests_caps_each_callers_requests_and_the_warning_says_so():
    capped = FillPlan("t", callers=2, rows=8, requests_per_row=1, samples=1, replicas=1, slots_per_replica=16,
                      max_ongoing_requests=4)  # fmt: skip
    assert capped.requests_per_caller == 2 and capped.sequences == 4
    assert "capped by 4 requests at once" in capped.shortfall()
    assert "raise inference.serve.max_ongoing_requests" in capped.shortfall()


def test_engines_with_unknown_slots_are_not_checked(tmp_path):
    job = _job(tmp_path, {"engine": "openai", "base_url": "http://127.0.0.1:9/v1", "concurrency": 1, "batch_size": 1})
    [plan] = [fill_plan(t) for t in teacher_roster(job)]
    assert plan.slots is None and plan.shortfall() is None and plan.requests_per_caller == 1


def test_the_stage_logs_one_warning_with_the_numbers(tmp_path, caplog):
    from jobs.data.generate import warn_if_underfilled

    job = _job(tmp_path, {"concurrency": 1, "batch_size": 2, "serve": {"max_batch_size": 16}})
    logger = logging.getLogger("jobs.data.generate")
    own = not logger.propagate  # once configured, the package loggers do not propagate (distill_ray/log.py)
    if own:
        logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING, logger="jobs.data.generate"):
            message = warn_if_underfilled("generate", teacher_roster(job))
            assert warn_if_underfilled("generate", teacher_roster(_job(tmp_path, {"batch_size": 8}))) is None
    finally:
        if own:
            logger.removeHandler(caplog.handler)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [message]
    assert (
        message.startswith("generate: teacher ")
        and "1 caller x 2 rows x 1 temperature x 1 sample = 2 sequences" in message
        and "< 16 engine slots (1 replica x 16)" in message
        and "(to 16 fills them)" in message
    )


CHAT_N2 = {
    "id": "c", "object": "chat.completion", "created": 0, "model": "m",
    "choices": [{"index": k, "message": {"role": "assistant", "content": "<think>t</think>\\boxed{2}"},
                 "finish_reason": "stop", "completion_tokens": 3} for k in range(2)],
    "usage": {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11},
}  # fmt: skip


@pytest.mark.ray
def test_every_caller_keeps_a_whole_batch_in_flight(tmp_path, ray_cluster, scripted):
    """16 problems read as one block, 2 callers x 2 rows x 2 temperatures x 2 samples: the server sees the 16
    sequences a 2-replica x 8-slot engine needs at once (one caller alone, as before the split, reaches 8)."""
    from jobs.data import generate

    rows = [{"question": f"What is {a} + {a}?", "answer": str(2 * a)} for a in range(16)]
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    scripted.update(default=(200, CHAT_N2), delay_s=0.5)
    job = _job(tmp_path, {"engine": "openai", "base_url": scripted["url"] + "/v1", "model_name": "m",
                          "temperature": [0.5, 1.0], "num_samples": 2, "concurrency": 2, "batch_size": 2,
                          "max_retries": 0})  # fmt: skip
    env = StageEnv("generate", tmp_path / "out", tmp_path / "out" / "rejected", ray_cluster)
    result = generate.run(job, env)

    assert (result.rows_in, result.rows_out, result.metrics["records_written"]) == (16, 16, 16 * 2 * 2)
    assert scripted["requests"] == 16 * 2
    engine = FillPlan("t", callers=2, rows=2, requests_per_row=2, samples=2, replicas=2, slots_per_replica=8,
                      max_ongoing_requests=32)  # fmt: skip
    assert engine.shortfall() is None and engine.sequences == 16
    assert scripted["max_sequences"] == engine.slots, scripted["max_sequences"]
