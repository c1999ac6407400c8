"""Config errors name real keys (never pydantic's union/validator labels) and every problem comes in one error."""

import re
from typing import Literal

import pytest
from pydantic import Field, ValidationError, field_validator

from distill_ray.config import build_config, load_config
from distill_ray.config.error_report import ErrorReport, key_path
from distill_ray.config.schema import JobConfig
from distill_ray.config.section import Section
from distill_ray.errors import ConfigError


def _error(raw: dict) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        build_config(raw)
    return err.value


@pytest.mark.parametrize(
    "raw, key",
    [
        ({"inference": {"temperature": "hot"}}, "inference.temperature"),
        ({"inference": {"temperature": [0.6, "hot"]}}, "inference.temperature[1]"),
        ({"inference": {"temperature": [0.6, 9]}}, "inference.temperature"),  # the field validator's own error
        ({"models": {"teachers": {"big": {"model": "m", "temperature": "hot"}}}}, "models.teachers.big.temperature"),
        ({"models": {"teachers": {"big": {"model": "m", "temperature": [1, "x"]}}}},
         "models.teachers.big.temperature[1]"),
        ({"training": {"deepspeed": 5}}, "training.deepspeed"),
        ({"reward": {"rv_interval": [0.1, "x"]}}, "reward.rv_interval[1]"),
        ({"processing": {"collect": {"task_weights": {"gsm8k": "x"}}}}, "processing.collect.task_weights.gsm8k"),
        ({"processing": {"collect": {"task_weights": {7: 1.0}}}}, "processing.collect.task_weights.7"),  # `[key]`
        ({"evaluation": {"benchmarks": [{"name": "a"}, {"name": "b c"}]}}, "evaluation.benchmarks[1].name"),
        ({"evaluation": {"benchmarks": [{"preset": "gsm8k"}]}}, "evaluation.benchmarks[0].name"),
        ({"training": {"kd": {"loss": "l2"}}}, "training.kd.loss"),
    ],
)  # fmt: skip
def test_error_names_the_real_key(raw, key):
    err = _error({"job_type": "generate", **raw})
    assert err.key == key
    head = str(err).split(": ")[1]  # "config error: KEY: problem"
    assert head == key and re.fullmatch(r"[\w.]+(\[\d+\][\w.]*)*", head)  # names and [i] only, no labels


class _Inner(Section):
    x: int = 0


class _Odd(Section):
    """Unions of other kinds than float | list[float], and a validator on one, to show the labels are not
    special-cased: whatever pydantic calls a branch is left out of the key."""

    mode: Literal["a", "b"] | list[int] = "a"
    pick: dict[str, int | list[int]] = Field(default_factory=dict)
    checked: int | str = 0
    sub: _Inner | int = 0
    either: dict[str, int] | int = 0

    @field_validator("checked")
    @classmethod
    def _small(cls, v):
        if isinstance(v, int) and v > 3:
            raise ValueError("at most 3")
        return v


@pytest.mark.parametrize(
    "raw, key",
    [({"mode": "c"}, "mode"), ({"mode": [1, "x"]}, "mode[1]"), ({"pick": {"k": "x"}}, "pick.k"),
     ({"pick": {"k": [1, "x"]}}, "pick.k[1]"), ({"checked": 7}, "checked"), ({"checked": [1]}, "checked"),
     ({"sub": {"x": "y"}}, "sub.x"), ({"sub": {"z": 1}}, "sub.z"), ({"either": {"k": "x"}}, "either.k")],
)  # fmt: skip
def test_labels_of_any_union_or_validator_are_left_out(raw, key):
    with pytest.raises(ValidationError) as exc:
        _Odd.model_validate(raw)
    paths = {"".join(text for _, text in key_path(_Odd, err["loc"])).lstrip(".") for err in exc.value.errors()}
    report = ErrorReport()
    report.add(exc.value, _Odd)
    assert report.error().key == key
    assert all(path == key or key.startswith(path) for path in paths)  # every location reduced to a real key


def test_every_unknown_key_and_every_other_problem_in_one_error():
    training = {"learning_rte": 1e-4, "max_lenght": 9, "warmup_ratio": 2}
    err = _error({"job_type": "sft", "inference": {"foo": 1, "temperature": "hot"}, "training": training,
                  "dataset": {"bar": 1}})  # fmt: skip
    assert err.key == "dataset.bar, inference.foo, training.learning_rte, training.max_lenght"
    text = str(err)
    assert text.startswith(f"config error: {err.key}: unknown keys")
    assert "inference.temperature: " in text and "training.warmup_ratio: " in text and "\n" not in text


def test_a_single_unknown_key_reads_as_before():
    err = _error({"job_type": "sft", "training": {"learning_rte": 1e-4}})
    assert err.key == "training.learning_rte" and str(err).endswith(": unknown key")


def test_pipeline_reports_all_stages_and_names_shared_keys_once():
    err = _error({
        "job_type": "pipeline", "extra": 1, "inference": {"foo": 1}, "training": {"learning_rate": -1},
        "stages": [
            {"name": "gen", "job_type": "generate", "inference": {"bar": 1}},
            {"name": "sft", "job_type": "sft", "training": {"baz": 1}, "inference": {"max_new_tokens": 0}},
        ],
    })  # fmt: skip
    # `inference.foo` and `training.learning_rate` are the pipeline's own, merged into both stages: named once.
    assert err.key == "extra, inference.foo, stages.gen.inference.bar, stages.sft.training.baz"
    problems = str(err).split("; ")[1:]
    assert [p.split(": ")[0] for p in problems] == ["training.learning_rate", "stages.sft.inference.max_new_tokens"]


def test_cli_prints_one_line_and_exits_2(tmp_path, capsys):
    from jobs.cli import main

    path = tmp_path / "c.yaml"
    path.write_text("job_type: sft\ninference: {foo: 1, bar: 2}\ntraining: {dpo: {beta: .inf}}\n")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "inference.foo, inference.bar: unknown keys" in err and "training.dpo.beta" in err


def test_file_and_overrides_share_the_report(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("job_type: sft\ntraining: {learning_rte: 1}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, ["inference.nope=1"])
    assert err.value.key == "inference.nope, training.learning_rte"


def test_job_config_schema_is_the_walked_one():
    # key_path follows the real model: a field name of one section is not taken for a key of another.
    assert [text for _, text in key_path(JobConfig, ("inference", "vllm", "gpu_memory_utilization"))] == [
        ".inference", ".vllm", ".gpu_memory_utilization"]  # fmt: skip
    assert [text for _, text in key_path(JobConfig, ("inference", "temperature", "list[float]", 2))] == [
        ".inference", ".temperature", "[2]"]  # fmt: skip
