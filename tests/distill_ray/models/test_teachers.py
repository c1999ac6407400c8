"""The teacher roster: names, engines and endpoints of a job's teachers, read once from the config."""

from __future__ import annotations

import pytest


def test_teacher_roster_of_a_job_config():
    from distill_ray.config import JobConfig
    from distill_ray.errors import ConfigError
    from distill_ray.models.teachers import by_engine, teacher_roster

    job = JobConfig.model_validate({
        "job_type": "generate",
        "inference": {"serve": {"port": 9100, "max_replicas": 2}},
        "models": {"teachers": {
            "big": {"model": "tiny:smollm2", "serve": {"max_replicas": 4, "port": 1}},
            "named": {"model": "tiny:smollm2?layers=1", "model_name": "small-one"},
            "api": {"model": "gpt-x", "engine": "openai", "base_url": "http://127.0.0.1:1/v1"},
        }},
    })  # fmt: skip
    roster = teacher_roster(job)
    groups = by_engine(roster)
    served = {t.name: t for t in groups["transformers"]}
    assert list(served) == ["big", "named"] and [t.name for t in groups["openai"]] == ["api"]
    assert served["big"].served_name == "big" and served["named"].served_name == "small-one"
    assert served["big"].inference.serve.max_replicas == 4 and served["big"].inference.serve.port == 9100
    assert served["named"].inference.serve.max_replicas == 2
    api = groups["openai"][0]  # an external teacher is asked by its own model id, where the config says
    assert api.served_name == "gpt-x" and api.endpoint.base_url == "http://127.0.0.1:1/v1"
    assert served["big"].endpoint is None  # reached only once deployed
    job.models.teachers["named"].model_name = "big"
    with pytest.raises(ConfigError, match="models.teachers"):
        teacher_roster(job)
    single = teacher_roster(JobConfig(job_type="generate", models={"teacher": "tiny:smollm2"}))
    assert [(t.name, t.served_name, t.engine) for t in single] == [("tiny-smollm2", "tiny-smollm2", "transformers")]
