"""Making a teacher reachable for a job: deploy our Serve app, or point at an external OpenAI API.

Used by the data stages (teachers and judges) and the eval job (the model under evaluation), so all
talk to models through exactly the same service machinery. `teacher_pools` deploys several teachers
at once: ours in one Serve application, routed by the OpenAI `model` field, each with its own replicas and
autoscaling.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from actors.teacher_client import TeacherTarget
from distill_ray.config import InferenceConfig, JobConfig
from distill_ray.errors import ConfigError
from distill_ray.models import derive_served_name


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
    from serve.teacher import deploy_teacher, undeploy

    if inference.engine == "vllm":  # Ray Serve LLM's OpenAI app, reached over HTTP like an external API
        from serve.vllm_teacher import deploy_vllm_teacher

        name = inference.model_name or derive_served_name(model_spec)
        base_url = deploy_vllm_teacher(model_spec, inference, app_name, name)
        try:
            yield TeacherTarget(base_url=base_url, model=name, **common)
        finally:
            undeploy(app_name)
        return

    endpoint = deploy_teacher(model_spec, inference.serve, app_name=app_name, served_name=inference.model_name)
    try:
        yield TeacherTarget(app_name=endpoint.app_name, model=endpoint.served_name, **common)
    finally:
        undeploy(endpoint.app_name)


@dataclass(frozen=True)
class TeacherPool:
    """A reachable teacher plus how to call it: its name in the data, settings and caller count."""

    name: str
    target: TeacherTarget
    inference: InferenceConfig


@contextmanager
def teacher_pools(job: JobConfig, stage_name: str) -> Iterator[list[TeacherPool]]:
    """Every teacher of the job (`models.teachers`, else `models.teacher`). Teachers on our engine share one
    Serve app (one router, a deployment each with its own autoscaling), vllm teachers share one Ray Serve LLM
    app (the same shape), and `openai` teachers are reached at their own endpoints."""
    from serve.teacher import deploy_teachers, served_teachers, undeploy
    from serve.vllm_teacher import deploy_vllm_teachers, vllm_teachers

    if not job.models.teachers:
        with teacher_target(job.models.teacher, job.inference, f"teacher-{stage_name}") as target:
            yield [TeacherPool(target.model or job.models.teacher, target, job.inference)]
        return
    settings = {name: t[1] for name, t in job.teacher_settings().items()}
    calls = {name: dict(timeout_s=i.request_timeout_s, max_retries=i.max_retries) for name, i in settings.items()}
    ours, on_vllm = served_teachers(job), vllm_teachers(job)
    with ExitStack() as stack:
        targets: dict[str, TeacherTarget] = {}
        if ours:
            endpoint = deploy_teachers(list(ours.values()), job.inference.serve, app_name=f"teacher-{stage_name}")
            stack.callback(undeploy, endpoint.app_name)
            for name, teacher in ours.items():
                targets[name] = TeacherTarget(app_name=endpoint.app_name, model=teacher.name, **calls[name])
        if on_vllm:  # one Ray Serve LLM app for all of them, reached over HTTP
            app_name = f"teacher-{stage_name}-vllm"
            base_url = deploy_vllm_teachers(list(on_vllm.values()), app_name)
            stack.callback(undeploy, app_name)
            for name, (_, _, served) in on_vllm.items():
                targets[name] = TeacherTarget(base_url=base_url, model=served, **calls[name])
        for name, spec in job.models.teachers.items():
            if name not in targets:
                targets[name] = stack.enter_context(teacher_target(spec.model, settings[name],
                                                                   f"teacher-{stage_name}-{name}"))  # fmt: skip
        yield [TeacherPool(name, targets[name], settings[name]) for name in job.models.teachers]
