"""Reading a config file: YAML/JSON -> `--set` overrides -> `{output_dir}` interpolation -> pydantic.

Every failure becomes a `ConfigError` naming the key (or an `InputFileError` naming the file), which
the CLI prints as one line with exit code 2.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from distill_ray.config.schema import JobConfig, PipelineConfig, Stage
from distill_ray.errors import ConfigError, InputFileError

SECTIONS = ("dataset", "inference", "models", "distillation", "training", "processing", "evaluation", "reward", "ray")


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise InputFileError(str(path), "config file not found")
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        line = exc.lineno if isinstance(exc, json.JSONDecodeError) else (line + 1 if line is not None else None)
        raise InputFileError(str(path), "not valid YAML/JSON", line=line) from None
    if not isinstance(data, dict):
        raise InputFileError(str(path), "expected a mapping of sections at the top level")
    return data


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `key.sub=value` overrides; values are parsed as YAML scalars (`8`, `0.5`, `[0.6, 0.9]`, `null`).

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
        node[node_key] = yaml.safe_load(value) if value != "" else ""
    return raw


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


def _validation_error(exc: ValidationError, prefix: str = "") -> ConfigError:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"] if p not in ("job",))
    key = f"{prefix}{loc}" if loc else prefix.rstrip(".") or "<root>"
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif err["type"] == "missing":
        msg = "required key is missing"
    elif "input" in err and not isinstance(err["input"], (dict, list)):
        msg = f"{msg} (got {err['input']!r})"
    return ConfigError(key, msg)


def build_config(raw: dict[str, Any]) -> JobConfig | PipelineConfig:
    """Validate a raw mapping into a JobConfig, or a PipelineConfig whose stages are full JobConfigs."""
    if "job_type" not in raw:
        raise ConfigError("job_type", "required key is missing (generate | sft | eval | pipeline)")
    output_dir = str(raw.get("output_dir", "runs/default"))
    raw = _interpolate(raw, output_dir)
    if raw["job_type"] != "pipeline":
        try:
            return JobConfig.model_validate(raw)
        except ValidationError as exc:
            raise _validation_error(exc) from None
    return _build_pipeline(raw, output_dir)


def _build_pipeline(raw: dict[str, Any], output_dir: str) -> PipelineConfig:
    stages_raw = raw.get("stages")
    if not isinstance(stages_raw, list) or not stages_raw:
        raise ConfigError("stages", "a pipeline needs a non-empty list of stages")
    unknown = set(raw) - {"job_type", "output_dir", "stages", *SECTIONS}
    if unknown:
        raise ConfigError(sorted(unknown)[0], "unknown key")
    defaults = {k: raw[k] for k in SECTIONS if k in raw}
    stages, seen = [], set()
    for idx, stage_raw in enumerate(stages_raw):
        if not isinstance(stage_raw, dict) or "name" not in stage_raw:
            raise ConfigError(f"stages.{idx}", "each stage needs a `name` and a `job_type`")
        name = str(stage_raw["name"])
        if name in seen:
            raise ConfigError(f"stages.{name}.name", "stage names must be unique")
        seen.add(name)
        job_raw = _deep_merge(defaults, {k: v for k, v in stage_raw.items() if k != "name"})
        job_raw["output_dir"] = str(Path(output_dir) / name)
        if job_raw.get("job_type") == "pipeline":
            raise ConfigError(f"stages.{name}.job_type", "pipelines cannot nest")
        try:
            job = JobConfig.model_validate(job_raw)
            stages.append(Stage(name=name, job=job))
        except ValidationError as exc:
            raise _validation_error(exc, prefix=f"stages.{name}.") from None
    try:
        return PipelineConfig(job_type="pipeline", output_dir=output_dir, ray=raw.get("ray", {}), stages=stages)
    except ValidationError as exc:
        raise _validation_error(exc) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> JobConfig | PipelineConfig:
    return build_config(apply_overrides(read_config_file(path), overrides or []))
