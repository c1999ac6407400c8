"""What generated / evaluated answers are stored under (jobs.data.generate.store_settings): no Ray, no model."""

from distill_ray.config import DatasetConfig, DistillationConfig, InferenceConfig
from distill_ray.data.part_store import fingerprint
from distill_ray.models.teachers import Endpoint, model_teacher
from jobs.data.generate import store_settings


def _print(spec, port, engine="transformers", **inference):
    teacher = model_teacher(spec, InferenceConfig(engine=engine, **inference))
    url = f"http://127.0.0.1:{port}/eval-eval/v1"
    reached = teacher.reached_at(Endpoint(app_name=None if engine == "openai" else "eval-eval", base_url=url))
    return fingerprint(store_settings([reached], DistillationConfig(), DatasetConfig()))


def test_a_deployed_teacher_keeps_its_answers_on_another_port():
    # benchmarks deploy on a new free port each run: the answers of unchanged models must stay reusable
    assert _print("tiny:smollm2", 8000) == _print("tiny:smollm2", 8123)
    assert _print("tiny:smollm2", 8000) != _print("tiny:smollm2", 8000, temperature=0.5)
    assert _print("tiny:smollm2", 8000) != _print("tiny:smollm2?seed=1", 8000)


def test_an_external_endpoint_is_part_of_what_its_answers_depend_on():
    kwargs = {"engine": "openai", "base_url": "http://127.0.0.1:9/v1"}
    assert _print("gpt-x", 8000, **kwargs) != _print("gpt-x", 8123, **kwargs)
