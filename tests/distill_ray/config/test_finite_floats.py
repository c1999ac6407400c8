"""Every float config key refuses inf, -inf and nan (`Section`'s allow_inf_nan=False), naming the key."""

import math
import typing

import pytest
from pydantic import BaseModel, ValidationError

from distill_ray.config import JobConfig, PipelineConfig, build_config
from distill_ray.errors import ConfigError

NON_FINITE = [math.inf, -math.inf, math.nan]
CASES = [
    ("dpo", {"training": {"dpo": {"beta": "X"}}}, "training.dpo.beta"),
    ("sft", {"training": {"learning_rate": "X"}}, "training.learning_rate"),
    ("generate", {"inference": {"temperature": "X"}}, "inference.temperature"),
    ("generate", {"inference": {"temperature": [0.6, "X"]}}, "inference.temperature[1]"),
    ("generate", {"models": {"teachers": {"t": {"model": "m", "temperature": ["X"]}}}},
     "models.teachers.t.temperature[0]"),
    ("grpo", {"reward": {"url": "http://r", "w_format": "X"}}, "reward.w_format"),
    ("grpo", {"reward": {"url": "http://r", "rv_interval": [0.1, "X"]}}, "reward.rv_interval[1]"),
    ("generate", {"distillation": {"w_cos": "X"}}, "distillation.w_cos"),
    ("collect", {"processing": {"collect": {"task_weights": {"gsm8k": "X"}}}}, "processing.collect.task_weights.gsm8k"),
    ("generate", {"inference": {"vllm": {"gpu_memory_utilization": "X"}}}, "inference.vllm.gpu_memory_utilization"),
]  # fmt: skip


def _put(tree, value):
    if tree == "X":
        return value
    if isinstance(tree, dict):
        return {k: _put(v, value) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_put(v, value) for v in tree]
    return tree


@pytest.mark.parametrize("value", NON_FINITE, ids=["inf", "-inf", "nan"])
@pytest.mark.parametrize("job_type, raw, key", CASES, ids=[c[2] for c in CASES])
def test_non_finite_float_is_refused_by_key(job_type, raw, key, value):
    with pytest.raises(ConfigError) as err:
        build_config({"job_type": job_type, **_put(raw, value)})
    assert err.value.key == key and "finite" in str(err.value)


@pytest.mark.parametrize("job_type, raw, key", CASES, ids=[c[2] for c in CASES])
def test_finite_values_of_the_same_keys_pass(job_type, raw, key):
    build_config({"job_type": job_type, **_put(raw, 0.5)})


def test_pipeline_defaults_and_overrides_are_checked_too():
    with pytest.raises(ConfigError) as err:
        build_config({"job_type": "pipeline", "training": {"dpo": {"beta": math.inf}},
                      "stages": [{"name": "d", "job_type": "dpo"}]})  # fmt: skip
    assert err.value.key == "training.dpo.beta"
    cfg = build_config({"job_type": "dpo"})
    with pytest.raises(ValidationError):
        cfg.training.dpo.beta = math.nan  # validate_assignment: a later assignment cannot sneak one in


def _models(model: type[BaseModel], seen: set) -> set:
    """Every pydantic model reachable from `model`'s field annotations (lists, dicts and unions included)."""
    if model in seen:
        return seen
    seen.add(model)
    for field in model.model_fields.values():
        todo = [field.annotation]
        while todo:
            tp = todo.pop()
            todo.extend(typing.get_args(tp))
            if isinstance(tp, type) and issubclass(tp, BaseModel):
                _models(tp, seen)
    return seen


def _has_float(annotation) -> bool:
    return annotation is float or any(_has_float(a) for a in typing.get_args(annotation))


def test_every_model_with_a_float_key_refuses_non_finite_values():
    models = _models(JobConfig, set()) | _models(PipelineConfig, set())
    with_floats = [m for m in models if any(_has_float(f.annotation) for f in m.model_fields.values())]
    assert len(with_floats) > 10  # the walk found the sections
    assert [m.__name__ for m in with_floats if m.model_config.get("allow_inf_nan", True)] == []
