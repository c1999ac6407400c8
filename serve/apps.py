"""Application builders for Ray Serve config files, `serve run` and KubeRay RayServices.

Where it sits: `distill-ray serve teacher|reward CONFIG` deploys from Python (`jobs.runner.serve_forever`);
these two functions are the same apps for Serve's declarative path, where an application is named by an
`import_path` and gets its `args` mapping (Ray Serve's "application builder" pattern):

    serve run serve.apps:teacher config=recipes/quickstart.yaml
    serve run serve.apps:reward config=recipes/rm_grpo.yaml set=reward.rv_model=/models/rv,reward.cd_model=/models/cd

or, in a Serve config file / a RayService's `serveConfigV2` (see cluster/kuberay/rayservice-*.yaml):

    applications:
      - name: teacher
        import_path: serve.apps:teacher
        route_prefix: /teacher
        args: {config: recipes/quickstart.yaml, set: ["inference.serve.max_replicas=4"]}

Args (the same for both builders):
- `config` (required): path of a distill-ray YAML/JSON config, relative to the working directory (the
  runtime_env's working_dir on a cluster, the current directory for `serve run`).
- `set`: `key=value` overrides as `distill-ray --set` takes them; a list, or one string separated by commas
  (a comma only splits where a new `key=` follows, so `inference.temperature=[0.6, 1.0]` stays whole).
- `stage`: which pipeline stage's settings to use (default: the first, as `distill-ray serve` does).
- `api_key_env`: name of an environment variable holding the service's API key (e.g. one a Kubernetes
  Secret fills in); it becomes `inference.serve.api_key` (teacher) or `reward.serve.api_key` (reward), so
  the key is never written into a manifest or a config file. The variable must be set and non-empty.

Each builder only loads the config and binds deployments: it starts no Ray and no replicas. Serve calls it
once per deploy (on the cluster, in a task that runs with the app's runtime_env), then starts the replicas.
Deployment options in the config file (autoscaling_config, ray_actor_options, ...) override the ones the
builders set from the distill-ray config.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from ray import serve

from distill_ray.config import load_config
from distill_ray.config.schema import JobConfig, PipelineConfig

KNOWN_ARGS = ("config", "set", "stage", "api_key_env")

# A comma followed by `key=` (a dotted config key) starts the next override; other commas belong to values.
_NEXT_OVERRIDE = re.compile(r",\s*(?=[A-Za-z0-9_][A-Za-z0-9_.-]*=)")


def teacher(args: dict[str, Any]) -> serve.Application:
    """The OpenAI-compatible teacher app from a config's `models.teachers` (routed by `model`) or
    `models.teacher`, with `inference`: ours (`serve/teacher.py`) or, on engine vllm, Ray Serve LLM's
    (`serve/vllm_teacher.py`)."""
    from distill_ray.models.teachers import by_engine, teacher_roster
    from serve.teacher import build_teachers_app
    from serve.vllm_teacher import build_vllm_teachers_app

    job = _job_from_args(args)
    groups = by_engine(teacher_roster(job))
    ours, on_vllm = groups.get("transformers", []), groups.get("vllm", [])
    if ours and on_vllm:
        raise ValueError("models.teachers: one app serves one engine; split transformers and vllm teachers "
                         "into two applications (e.g. with two configs)")  # fmt: skip
    if on_vllm:
        with_key = [t.with_inference(t.inference.model_copy(update={"serve": _with_api_key(t.inference.serve, args)}))
                    for t in on_vllm]  # fmt: skip
        return build_vllm_teachers_app(with_key)
    if not ours:
        raise ValueError("models.teachers: no teacher runs on the transformers or vllm engine; nothing to serve")
    return build_teachers_app(ours, _with_api_key(job.inference.serve, args).api_key)


def reward(args: dict[str, Any]) -> serve.Application:
    """The reward service (`serve/reward.py`: RV/CD models, verifier, ingress) from a config's `reward`."""
    from serve.reward import build_reward_app

    cfg = _job_from_args(args).reward
    cfg.check_model_folders()
    cfg = cfg.model_copy(update={"serve": _with_api_key(cfg.serve, args)})
    return build_reward_app(cfg)


def parse_overrides(value: Any) -> list[str]:
    """The `set` arg as a list of `key=value` strings (accepts a list, one string, or nothing)."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        items = _NEXT_OVERRIDE.split(value)
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise ValueError(f"arg 'set' must be a list of key=value strings or one comma-separated string, "
                         f"got {type(value).__name__}")  # fmt: skip
    out = []
    for item in items:
        if not isinstance(item, str) or "=" not in item or item.startswith("="):
            raise ValueError(f"arg 'set': expected key=value, got {item!r}")
        out.append(item.strip())
    return out


def _job_from_args(args: Mapping[str, Any]) -> JobConfig:
    if not isinstance(args, Mapping):
        raise ValueError(f"application args must be a mapping, got {type(args).__name__}")
    unknown = sorted(set(args) - set(KNOWN_ARGS))
    if unknown:
        raise ValueError(f"unknown arg {unknown[0]!r}; known args: {', '.join(KNOWN_ARGS)}")
    path = args.get("config")
    if not path or not isinstance(path, str):
        raise ValueError("arg 'config' is required: the path of a distill-ray config file, e.g. "
                         "config=recipes/quickstart.yaml")  # fmt: skip
    cfg = load_config(path, parse_overrides(args.get("set")))
    return _pick_stage(cfg, args.get("stage"))


def _pick_stage(cfg: JobConfig | PipelineConfig, stage: str | None) -> JobConfig:
    # Not jobs.runner.stages_of: serve/ must not import jobs/ (imports point jobs -> serve -> distill_ray).
    if isinstance(cfg, PipelineConfig):
        if not stage:
            return cfg.stages[0].job
        for s in cfg.stages:
            if s.name == stage:
                return s.job
        raise ValueError(f"arg 'stage': no stage {stage!r}; stages: {', '.join(s.name for s in cfg.stages)}")
    if stage and stage != cfg.job_type:
        raise ValueError(f"arg 'stage': the config is a single {cfg.job_type!r} job, not a pipeline")
    return cfg


def _with_api_key(serve_cfg, args: Mapping[str, Any]):
    env_name = args.get("api_key_env")
    if not env_name:
        return serve_cfg
    key = os.environ.get(str(env_name), "")
    if not key:
        # Fail closed: a service meant to need a key must not come up open because a Secret is missing.
        raise ValueError(f"arg 'api_key_env': environment variable {env_name!r} is not set or empty")
    return serve_cfg.model_copy(update={"api_key": key})
