"""Reading a config file: YAML/JSON -> `--set` overrides -> `{output_dir}` interpolation -> pydantic.

YAML, in files and in `--set` values alike, is read with the YAML 1.2 core schema's scalars (`yaml12.py`: `no`
stays a string). Every failure becomes one `ConfigError` naming the keys, every unknown key and every other
problem at once (`error_report.py`), or an `InputFileError` naming the file; the CLI prints either as one
line with exit code 2.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from distill_ray.config.easydistill import move_vllm_keys
from distill_ray.config.error_report import ErrorReport
from distill_ray.config.schema import JobConfig, PipelineConfig, Stage
from distill_ray.config.yaml12 import load_yaml
from distill_ray.errors import ConfigError, InputFileError

SECTIONS = ("dataset", "inference", "models", "distillation", "training", "processing", "evaluation", "reward", "ray")


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise InputFileError(str(path), "config file not found")
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix == ".json" else load_yaml(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        line = exc.lineno if isinstance(exc, json.JSONDecodeError) else (line + 1 if line is not None else None)
        raise InputFileError(str(path), "not valid YAML/JSON", line=line) from None
    if not isinstance(data, dict):
        raise InputFileError(str(path), "expected a mapping of sections at the top level")
    return data


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `key.sub=value` overrides; values are read as YAML 1.2 (`8`, `0.5`, `[0.6, 0.9]`, `null`, `true`;
    `no`, `0x10`, `1_000` stay strings, as in config files) and an empty value is the empty string.

    Inside `stages`, a stage can be named by its `name` or its index: `stages.sft.training.max_steps=2`.
    """
    raw = copy.deepcopy(raw)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(item, "--set expects key=value")
        parts = key.split(".")
        node: Any = raw
        for i, part in enumerate(parts[:-1]):
            node = _step_into(node, part, ".".join(parts[: i + 1]))
        node_key = parts[-1]
        if isinstance(node, list):
            raise ConfigError(key, "cannot replace a whole stage with --set")
        node[node_key] = _override_value(key, value)
    return raw


def _override_value(key: str, value: str) -> Any:
    if value == "":
        return ""
    try:
        return load_yaml(value)
    except yaml.YAMLError as exc:
        problem = str(getattr(exc, "problem", None) or "cannot be read").strip()
        raise ConfigError(key, f"--set value {value!r} is not valid YAML: {problem}") from None


def _step_into(node: Any, part: str, where: str) -> Any:
    if isinstance(node, list):
        for idx, stage in enumerate(node):
            if str(idx) == part or (isinstance(stage, dict) and stage.get("name") == part):
                return stage
        raise ConfigError(where, "no stage with that name or index")
    if not isinstance(node, dict):
        raise ConfigError(where, "is not a section")
    return node.setdefault(part, {})


def _interpolate(value: Any, output_dir: str) -> Any:
    if isinstance(value, str):
        return value.replace("{output_dir}", output_dir)
    if isinstance(value, dict):
        return {k: _interpolate(v, output_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, output_dir) for v in value]
    return value


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def build_config(raw: dict[str, Any]) -> JobConfig | PipelineConfig:
    """Validate a raw mapping into a JobConfig, or a PipelineConfig whose stages are full JobConfigs."""
    if "job_type" not in raw:
        raise ConfigError("job_type", "required key is missing (generate | sft | eval | pipeline)")
    output_dir = str(raw.get("output_dir", "runs/default"))
    raw = _interpolate(raw, output_dir)
    if raw["job_type"] == "pipeline":
        return _build_pipeline(raw, output_dir)
    try:
        return JobConfig.model_validate(raw)
    except ValidationError as exc:
        raise _one_error(exc, JobConfig) from None


def _one_error(exc: ValidationError, model: type[BaseModel]) -> ConfigError:
    report = ErrorReport()
    report.add(exc, model)
    return report.error() or ConfigError("<root>", str(exc).splitlines()[0])  # a ValidationError has an error


def _build_pipeline(raw: dict[str, Any], output_dir: str) -> PipelineConfig:
    """Each stage is the pipeline's sections deep-merged with the stage's own, validated as a JobConfig. Every
    stage is validated before anything is reported, so one error names the problems of all of them."""
    stages_raw = _named_stages(raw)
    report = ErrorReport()
    for key in sorted(set(raw) - {"job_type", "output_dir", "stages", *SECTIONS}):
        report.unknown_key(key)
    defaults = _with_vllm_keys_moved({k: raw[k] for k in SECTIONS if k in raw})
    stages = []
    for name, stage_raw in stages_raw.items():
        own = _with_vllm_keys_moved({k: v for k, v in stage_raw.items() if k != "name"})
        job_raw = {**_deep_merge(defaults, own), "output_dir": str(Path(output_dir) / name)}
        stages.append(_stage(name, job_raw, own, report))
    report.raise_if_any()
    try:
        return PipelineConfig(job_type="pipeline", output_dir=output_dir, ray=raw.get("ray", {}), stages=stages)
    except ValidationError as exc:
        raise _one_error(exc, PipelineConfig) from None


def _stage(name: str, job_raw: dict[str, Any], own: dict[str, Any], report: ErrorReport) -> Stage | None:
    """One validated stage, or None with its problems added to `report` (keys the stage wrote itself, in
    `own`, are named under `stages.NAME.`; those it took from the pipeline's sections are not)."""
    prefix = f"stages.{name}."
    try:
        job = JobConfig.model_validate(job_raw)
    except ValidationError as exc:
        report.add(exc, JobConfig, prefix, written=own)
        return None
    try:
        return Stage(name=name, job=job)
    except ValidationError as exc:
        report.add(exc, Stage, prefix)
        return None


def _named_stages(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The pipeline's stages by name, after the checks of their shape (raised at once: nothing else can be
    checked without them)."""
    stages_raw = raw.get("stages")
    if not isinstance(stages_raw, list) or not stages_raw:
        raise ConfigError("stages", "a pipeline needs a non-empty list of stages")
    named: dict[str, dict[str, Any]] = {}
    for idx, stage_raw in enumerate(stages_raw):
        if not isinstance(stage_raw, dict) or "name" not in stage_raw:
            raise ConfigError(f"stages[{idx}]", "each stage needs a `name` and a `job_type`")
        name = str(stage_raw["name"])
        if name in named:
            raise ConfigError(f"stages.{name}.name", "stage names must be unique")
        if stage_raw.get("job_type") == "pipeline":
            raise ConfigError(f"stages.{name}.job_type", "pipelines cannot nest")
        named[name] = stage_raw
    return named


def _with_vllm_keys_moved(sections: dict[str, Any]) -> dict[str, Any]:
    """`sections` with EasyDistill's vLLM keys under `inference` moved to `inference.vllm` before the merge, so
    a stage's `inference.vllm.X` overrides the pipeline's `inference.X` as it would the same spelling. A
    conflict is left in place for validation to report."""
    inference = sections.get("inference")
    try:
        return {**sections, "inference": move_vllm_keys(inference)} if isinstance(inference, dict) else sections
    except ValueError:
        return sections


def load_config(path: str | Path, overrides: list[str] | None = None) -> JobConfig | PipelineConfig:
    return build_config(apply_overrides(read_config_file(path), overrides or []))
