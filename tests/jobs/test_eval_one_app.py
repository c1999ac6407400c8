"""The eval job deploys every evaluated model once, in one multi-model Serve app, and warns once when its callers
cannot fill the engines' slots."""

import logging
import threading
import time

import pyarrow.parquet as pq
import pytest

from distill_ray.config import InferenceConfig, build_config
from jobs.stage import StageEnv


def test_the_models_answer_to_their_labels_and_share_one_replicas_cpu():
    from jobs.eval import eval_roster

    inference = InferenceConfig(serve={"num_cpus": 0.6, "num_gpus": 1, "max_batch_size": 4})
    roster = eval_roster({"before": "tiny:smollm2", "after": "tiny:smollm2", "third": "tiny:smollm2?seed=1"}, inference)
    assert [t.served_name for t in roster] == ["before", "after", "third"]
    assert [t.inference.serve.num_cpus for t in roster] == pytest.approx([0.2] * 3)
    assert {t.inference.serve.max_batch_size for t in roster} == {4} and inference.serve.num_cpus == 0.6
    assert {t.inference.serve.num_gpus for t in roster} == {1}  # loaded at once: each keeps its GPU share


def test_eval_batches_fill_the_slots_unless_configured():
    from jobs.data.generate import warn_if_underfilled
    from jobs.eval import eval_batch_size, eval_roster

    models = {"before": "tiny:smollm2", "after": "tiny:smollm2?seed=1"}
    # callers sized for generation's two temperatures (the quickstart's, once); eval asks one: 4 rows fill 8 of 16
    inference = InferenceConfig(concurrency=2, batch_size=4, temperature=0.0, num_samples=1,
                                serve={"max_batch_size": 16})  # fmt: skip
    assert eval_batch_size(models, inference, None) == 8
    filled = inference.model_copy(update={"batch_size": 8})
    assert warn_if_underfilled("eval", eval_roster(models, filled)) is None
    assert eval_batch_size(models, inference, 3) == 3  # evaluation.batch_size wins
    wide = inference.model_copy(update={"batch_size": 32})
    assert eval_batch_size(models, wide, None) == 32  # never below inference.batch_size
    two_samples = inference.model_copy(update={"num_samples": 2, "serve": inference.serve.model_copy(
        update={"max_replicas": 2})})  # fmt: skip
    assert eval_batch_size(models, two_samples, None) == 8  # 2 replicas x 16 slots / (2 callers x 2 samples)


@pytest.mark.ray
def test_eval_of_two_models_deploys_one_app_serving_both(tmp_path, ray_cluster, serve_port, caplog):
    from ray import serve

    from jobs import eval as eval_job

    job = build_config({
        "job_type": "eval",
        "output_dir": str(tmp_path / "out"),
        # 1 caller x 1 row x 1 sample < 8 slots: the stage warns, once for both models and both benchmarks.
        "inference": {"max_new_tokens": 4, "concurrency": 1, "batch_size": 1, "serve": {"port": serve_port}},
        "evaluation": {
            "models": {"tiny_a": "tiny:smollm2", "tiny_b": "tiny:smollm2?seed=1"},
            "benchmarks": [{"name": "arith", "preset": "arithmetic", "limit": 2},
                           {"name": "arith2", "preset": "arithmetic", "limit": 1}],
            "batch_size": 1,  # as configured: eval would otherwise size its batches to fill the slots
        },
    })  # fmt: skip
    env = StageEnv("eval", tmp_path / "out", tmp_path / "out" / "rejected", ray_cluster)
    seen: dict[str, set] = {}  # eval app -> the deployments it had while the stage ran
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            for name, app in serve.status().applications.items():
                if name.startswith("eval-"):
                    seen.setdefault(name, set()).update(app.deployments)
            time.sleep(0.1)

    logger = logging.getLogger("jobs.data.generate")
    own = not logger.propagate  # once configured, the package loggers do not propagate (distill_ray/log.py)
    if own:
        logger.addHandler(caplog.handler)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with caplog.at_level(logging.WARNING, logger="jobs.data.generate"):
            result = eval_job.run(job, env)
    finally:
        stop.set()
        watcher.join(timeout=10)
        if own:
            logger.removeHandler(caplog.handler)

    assert seen == {"eval-eval": {"TeacherRouter", "TeacherDeployment-tiny_a", "TeacherDeployment-tiny_b"}}
    assert not [name for name in serve.status().applications if name.startswith("eval-")]  # deleted at the end
    assert result.rows_out == 2 * (2 + 1)
    for label in ("tiny_a", "tiny_b"):
        for bench, problems in (("arith", 2), ("arith2", 1)):
            assert pq.read_table(tmp_path / "out" / "results" / label / bench).num_rows == problems
    warnings = [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "engine slots" in r.getMessage()
    ]
    assert len(warnings) == 1 and warnings[0].startswith("eval: teacher "), warnings
    assert warnings[0].count("1 caller x 1 row x 1 temperature x 1 sample = 1 sequence in flight < 8") == 2
