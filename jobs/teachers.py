"""Making teachers reachable for a stage: deploy the roster's Serve apps, hand back teachers with endpoints.

Used by the data stages (teachers and judges) and the eval job (the models under evaluation), so all talk
to models through exactly the same service machinery. The roster (`distill_ray.models.teachers`) says what
each teacher is; here each engine's teachers are deployed once: ours in one Serve application routed by the
OpenAI `model` field (a deployment each, with its own autoscaling), vllm teachers in one Ray Serve LLM app
of the same shape, and `openai` teachers are reached at their own endpoints.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from distill_ray.config import ServeConfig
from distill_ray.errors import ConfigError
from distill_ray.models.teachers import Endpoint, Teacher, by_engine


@contextmanager
def reach_teachers(teachers: list[Teacher], app_name: str, serve_cfg: ServeConfig) -> Iterator[list[Teacher]]:
    """Deploy what must be deployed and yield the teachers (same order) with their endpoints; the Serve
    apps deployed here (`app_name`, `app_name-vllm`) are deleted on the way out. `serve_cfg` (the job's
    `inference.serve`) gives what the app shares: the proxy's host and port, and the API key."""
    from serve.teacher import deploy_teachers, undeploy
    from serve.vllm_teacher import deploy_vllm_teachers

    groups = by_engine(teachers)
    for teacher in groups.get("openai", []):
        if not teacher.inference.base_url:
            raise ConfigError("inference.base_url", "engine 'openai' needs the endpoint's base URL")
    reached = {id(t): t for t in groups.get("openai", [])}
    with ExitStack() as stack:
        if ours := groups.get("transformers"):
            endpoint = deploy_teachers(ours, serve_cfg, app_name=app_name)
            stack.callback(undeploy, endpoint.app_name)
            for t in ours:  # in-cluster callers use the handle; HTTP callers (Ray Train workers) the URL
                reached[id(t)] = t.reached_at(Endpoint(endpoint.app_name, endpoint.base_url, serve_cfg.api_key))
        if on_vllm := groups.get("vllm"):  # Ray Serve LLM's OpenAI app, reached over HTTP like an external API
            vllm_app = f"{app_name}-vllm" if ours else app_name
            base_url = deploy_vllm_teachers(on_vllm, vllm_app)
            stack.callback(undeploy, vllm_app)
            for t in on_vllm:
                reached[id(t)] = t.reached_at(Endpoint(base_url=base_url))
        yield [reached[id(t)] for t in teachers]
