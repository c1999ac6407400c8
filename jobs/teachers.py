"""Making a teacher reachable for a job: deploy our Serve app, or point at an external OpenAI API.

Used by the generation job (the teacher) and the eval job (the model under evaluation), so both
talk to models through exactly the same service machinery.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from actors.teacher_client import TeacherTarget
from distill_ray.config import InferenceConfig
from distill_ray.errors import ConfigError


@contextmanager
def teacher_target(model_spec: str, inference: InferenceConfig, app_name: str) -> Iterator[TeacherTarget]:
    """Yield where to send requests; a Serve app deployed here is deleted on the way out."""
    common = dict(timeout_s=inference.request_timeout_s, max_retries=inference.max_retries)
    if inference.engine == "openai":
        if not inference.base_url:
            raise ConfigError("inference.base_url", "engine 'openai' needs the endpoint's base URL")
        yield TeacherTarget(base_url=inference.base_url, api_key=inference.api_key,
                            model=inference.model_name or model_spec, **common)  # fmt: skip
        return
    if inference.engine == "vllm":
        raise ConfigError("inference.engine", "'vllm' runs on GPU clusters only and is not in this build yet")
    from serve.teacher import deploy_teacher, undeploy

    endpoint = deploy_teacher(model_spec, inference.serve, app_name=app_name, served_name=inference.model_name)
    try:
        yield TeacherTarget(app_name=endpoint.app_name, model=endpoint.served_name, **common)
    finally:
        undeploy(endpoint.app_name)
