"""Config YAML, in files and in `--set` values, is read with the YAML 1.2 core schema's scalars, not YAML 1.1's."""

import math

import pytest

from distill_ray.config import apply_overrides, build_config, load_config
from distill_ray.config.yaml12 import load_yaml
from distill_ray.errors import ConfigError, InputFileError

# YAML 1.1 (PyYAML's safe_load) reads each of these as a bool, an int, a date or a float; here they are text.
STRINGS = ["no", "yes", "on", "off", "y", "n", "No", "OFF", "0x10", "0o17", "1_000", "1:30", "2024-01-01", "1_0.5",
           "tRUE", "nUll", "=", "<<", ".", "1.2.3", "0b101", "+.5e", "inf", "nan"]  # fmt: skip
SCALARS = [
    ("true", True), ("True", True), ("TRUE", True), ("false", False), ("False", False), ("FALSE", False),
    ("null", None), ("Null", None), ("NULL", None), ("~", None),
    ("8", 8), ("-3", -3), ("+4", 4), ("012", 12), ("0", 0),
    ("0.5", 0.5), ("-1.5", -1.5), (".5", 0.5), ("1.", 1.0), ("2e-5", 2e-5), ("1E3", 1000.0), ("-1.5e+3", -1500.0),
    (".inf", math.inf), ("+.Inf", math.inf), ("-.INF", -math.inf),
]  # fmt: skip


@pytest.mark.parametrize("text", STRINGS)
def test_only_core_schema_scalars_are_typed(text):
    assert load_yaml(text) == text and type(load_yaml(text)) is str
    assert apply_overrides({}, [f"dataset.prompt_field={text}"])["dataset"]["prompt_field"] == text


@pytest.mark.parametrize("text, value", SCALARS)
def test_core_schema_scalars(text, value):
    out = apply_overrides({}, [f"inference.seed={text}"])["inference"]["seed"]
    assert out == value and type(out) is type(value)


@pytest.mark.parametrize("text", [".nan", ".NaN", ".NAN"])
def test_nan(text):
    assert math.isnan(load_yaml(text))


def test_flow_collections_quotes_and_empty_values():
    out = apply_overrides({}, ["inference.temperature=[0.6, 0.9]", "dataset.x={a: 1, b: no, c: [yes, 2]}",
                               "dataset.y='012'", "dataset.z="])  # fmt: skip
    assert out["inference"]["temperature"] == [0.6, 0.9]
    assert out["dataset"]["x"] == {"a": 1, "b": "no", "c": ["yes", 2]}
    assert out["dataset"]["y"] == "012" and out["dataset"]["z"] == ""


def test_bad_override_value_is_a_config_error():
    with pytest.raises(ConfigError) as err:
        apply_overrides({}, ["inference.temperature=[0.6,"])
    assert err.value.key == "inference.temperature" and "\n" not in str(err.value)


def test_config_files_use_the_same_rules(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "job_type: sft\n"
        "dataset: {prompt_field: no, answer_field: off, id_field: 0x1F}\n"
        "training: {learning_rate: 2e-5, seed: 010}\n"
        "evaluation: {max_new_tokens: &tokens 9}\n"
        "inference: {<<: {max_new_tokens: *tokens}, system_prompt: yes}\n"  # anchors and merge keys still work
    )
    cfg = load_config(path)
    assert (cfg.dataset.prompt_field, cfg.dataset.answer_field, cfg.dataset.id_field) == ("no", "off", "0x1F")
    assert cfg.training.learning_rate == 2e-5 and cfg.training.seed == 10  # 1.1: the string '2e-5', octal 8
    assert cfg.inference.max_new_tokens == 9 and cfg.inference.system_prompt == "yes"


def test_bool_keys_still_read_yes_and_no():
    # Only a key whose type is bool turns `on` / `no` into a boolean (pydantic's reading), never a text key.
    out = apply_overrides({"job_type": "sft"}, ["training.use_gpu=on", "dataset.prompt_field=on"])
    assert out["training"]["use_gpu"] == "on" and out["dataset"]["prompt_field"] == "on"
    cfg = build_config(out)
    assert cfg.training.use_gpu is True and cfg.dataset.prompt_field == "on"


def test_explicit_tags_accept_only_what_the_plain_form_would(tmp_path):
    assert load_yaml("[!!int 12, !!float 3, !!bool TRUE, !!str 5]") == [12, 3.0, True, "5"]
    for bad in ["!!int 0x10", "!!bool yes", "!!float abc"]:
        with pytest.raises(ConfigError) as err:
            apply_overrides({}, [f"inference.seed={bad}"])
        assert err.value.key == "inference.seed" and bad.split()[1] in str(err.value)
    path = tmp_path / "c.yaml"
    path.write_text("job_type: sft\ntraining:\n  use_gpu: !!bool no\n")
    with pytest.raises(InputFileError) as err:
        load_config(path)
    assert err.value.line == 3
