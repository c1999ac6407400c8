"""The vLLM teacher (`inference.engine: vllm`): Ray Serve LLM (`ray.serve.llm`) serving one model with vLLM.

Where it sits: the GPU-cluster counterpart of `serve/teacher.py`. `jobs/` and the CLI call
`deploy_vllm_teacher(s)` instead of `deploy_teacher(s)` when the engine is vllm (several vllm teachers of a
job share one app, routed by `model`, each its own autoscaled deployment); callers then speak the
OpenAI API to the base URL it returns, exactly as they do to our transformers teacher. Ray Serve LLM
brings the routes (`/v1/chat/completions`, `/v1/completions`, `/v1/models`, ...), the vLLM engine per
replica and the autoscaling; this module only maps our config onto its `LLMConfig`.

`vllm_llm_config` is pure (plain dict in, plain dict out) and needs neither vLLM nor a running Ray, so
the mapping is tested in the main CPU lane. `ray.serve.llm` refuses to import without vLLM (or SGLang),
so it is imported only when an app is built.

Auth: Ray Serve LLM's OpenAI app has no API-key check, so with `inference.serve.api_key` set the
vllm engine refuses to start (fail closed) instead of serving without the key.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distill_ray.config.schema import InferenceConfig
from distill_ray.errors import ConfigError
from distill_ray.models.loading import resolve_model
from distill_ray.models.teachers import Teacher

if TYPE_CHECKING:
    from ray.serve import Application

INSTALL_HINT = "pip install 'ray[serve,llm]==2.60.0' on the GPU cluster's image (docs/vllm.md)"


def check_vllm_inference(inference: InferenceConfig) -> None:
    """Raise ConfigError for settings the vllm engine cannot honour (needs no vLLM, no Ray)."""
    if inference.serve.api_key:
        raise ConfigError(
            "inference.serve.api_key",
            "engine 'vllm' cannot enforce an API key (Ray Serve LLM's OpenAI app has no key check); "
            "unset it and keep inference.serve.host on a private network, or use engine 'transformers'",
        )


def vllm_model_source(model_spec: str) -> str:
    """Where vLLM loads weights from: our builtin:/tiny: specs and local folders resolve to a local folder
    (materialised on this node); anything else (a hub name, an s3:// or gs:// URI) passes through unchanged."""
    kind, _, rest = model_spec.partition(":")
    if (kind in ("builtin", "tiny") and rest) or Path(model_spec).expanduser().exists():
        return str(resolve_model(model_spec, key="models.teacher"))
    return model_spec


def vllm_llm_config(model_spec: str, inference: InferenceConfig, served_name: str) -> dict[str, Any]:
    """The keyword arguments of Ray Serve LLM's `LLMConfig` for this teacher, as a plain dict."""
    check_vllm_inference(inference)
    serve_cfg, vllm_cfg = inference.serve, inference.vllm
    config: dict[str, Any] = {
        "model_loading_config": {"model_id": served_name, "model_source": vllm_model_source(model_spec)},
        "deployment_config": {
            "autoscaling_config": serve_cfg.autoscaling_config(),
            "max_ongoing_requests": serve_cfg.max_ongoing_requests,
            "ray_actor_options": {"num_cpus": serve_cfg.num_cpus},
            "graceful_shutdown_wait_loop_s": serve_cfg.graceful_shutdown_wait_loop_s,
        },
        "engine_kwargs": vllm_cfg.vllm_engine_kwargs(),
        "accelerator_config": {"kind": vllm_cfg.device},
    }
    if vllm_cfg.accelerator_type:
        config["accelerator_type"] = vllm_cfg.accelerator_type
    return config


def build_vllm_teachers_app(teachers: Sequence[Teacher]) -> Application:
    """Ray Serve LLM's OpenAI app serving each teacher (its spec, under its served name, with its `inference`)
    as its own autoscaled deployment behind one ingress that routes by `model` (not deployed yet)."""
    for teacher in teachers:
        check_vllm_inference(teacher.inference)
    names = [t.served_name for t in teachers]
    if not teachers or len(set(names)) != len(names):
        raise ConfigError("models.teachers", f"vllm teachers need distinct served names, got {names}")
    try:
        from ray.serve.llm import build_openai_app
    except ImportError as exc:
        raise ConfigError("inference.engine", f"engine 'vllm' needs vLLM: {INSTALL_HINT} ({_one_line(exc)})") from None
    llm_configs = [vllm_llm_config(t.spec, t.inference, t.served_name) for t in teachers]
    try:
        return build_openai_app({"llm_configs": llm_configs})
    except ValueError as exc:  # pydantic's ValidationError included: a setting vLLM or Ray Serve LLM rejects
        raise ConfigError("inference.vllm", _one_line(exc)) from None


def build_vllm_teacher_app(model_spec: str, inference: InferenceConfig, served_name: str) -> Application:
    """Ray Serve LLM's OpenAI app serving `model_spec` as `served_name` (not deployed yet)."""
    return build_vllm_teachers_app([Teacher(served_name, model_spec, inference, served_name)])


def deploy_vllm_teachers(teachers: Sequence[Teacher], app_name: str) -> str:
    """Deploy the vLLM teachers as Serve app `app_name` and return its OpenAI base URL (`.../{app_name}/v1`).
    The proxy's host/port are the first teacher's `inference.serve` ones (all apps share one proxy). Blocks
    until the app is running, i.e. until every initial replica has loaded its model."""
    from ray import serve

    from serve.http import start_proxy

    app = build_vllm_teachers_app(teachers)
    host, port = start_proxy(teachers[0].inference.serve)
    serve.run(app, name=app_name, route_prefix=f"/{app_name}")
    return f"http://{host}:{port}/{app_name}/v1"


def deploy_vllm_teacher(model_spec: str, inference: InferenceConfig, app_name: str, served_name: str) -> str:
    """`deploy_vllm_teachers` for one teacher."""
    return deploy_vllm_teachers([Teacher(served_name, model_spec, inference, served_name)], app_name)


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
