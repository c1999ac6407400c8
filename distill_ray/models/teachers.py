"""The teacher roster: what each teacher of a job is, which engine serves it, and how it is reached.

Where it sits: every place that deploys or calls a teacher starts here. `teacher_roster(job)` reads the
config once (`models.teachers`, else the single `models.teacher` with `inference`); `by_engine` is the one
split by engine: teachers on our `transformers` engine share one Serve app (`serve/teacher.py`), `vllm`
teachers share one Ray Serve LLM app (`serve/vllm_teacher.py`), and `openai` teachers are external
endpoints. Deploying a teacher fills in its `endpoint` (`jobs/teachers.py`); the data-stage actors then
call it through that endpoint with its own timeout and retries (`actors/teacher_client.py`).

Names. `name` is the teacher's name in the data (the `teacher` column, per-teacher settings): the
`models.teachers` key, or for a single teacher its served name. `served_name` is the OpenAI `model` sent
with every request: `model_name` if set; else, on engine `openai`, the model spec itself (the external
API's own model id); else the `models.teachers` key, or for a single teacher a name derived from its spec.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from distill_ray.errors import ConfigError
from distill_ray.models.loading import derive_served_name

if TYPE_CHECKING:
    from distill_ray.config import InferenceConfig, JobConfig

ENGINES = ("transformers", "vllm", "openai")


@dataclass(frozen=True)
class Endpoint:
    """Where a reachable teacher answers: an in-cluster Serve app (called through its handle), or an
    OpenAI-compatible base URL (Ray Serve LLM's app, or an external API) with its key."""

    app_name: str | None = None
    base_url: str | None = None
    api_key: str | None = None


@dataclass(frozen=True)
class Teacher:
    """One teacher: its name in the data, model spec, settings (engine, sampling, serving), the `model` it
    answers to, and once deployed (or, on engine openai, from the config) its endpoint."""

    name: str
    spec: str
    inference: InferenceConfig
    served_name: str
    endpoint: Endpoint | None = None

    @property
    def engine(self) -> str:
        return self.inference.engine

    def reached_at(self, endpoint: Endpoint) -> Teacher:
        return replace(self, endpoint=endpoint)

    def with_inference(self, inference: InferenceConfig) -> Teacher:
        """The same teacher asked with other settings (e.g. an eval benchmark's user template)."""
        return replace(self, inference=inference)


def model_teacher(spec: str, inference: InferenceConfig) -> Teacher:
    """A single model as a teacher (`models.teacher`, a judge, a model under evaluation)."""
    served = inference.model_name or (spec if inference.engine == "openai" else derive_served_name(spec))
    return _with_config_endpoint(Teacher(served, spec, inference, served))


def teacher_roster(job: JobConfig) -> list[Teacher]:
    """Every teacher of the job, in config order: the `models.teachers` entries (each with its settings
    over `inference`), else the single `models.teacher`. Raises ConfigError if two teachers that share an
    app (same engine) would answer to one name, or if a teacher has no model spec."""
    if not job.models.teachers:
        if not job.models.teacher:
            raise ConfigError("models.teacher", "this job needs a teacher model")
        return [model_teacher(job.models.teacher, job.inference)]
    roster = []
    for key, entry in job.models.teachers.items():
        inference = entry.inference_for(job.inference)
        served = inference.model_name or (entry.model if inference.engine == "openai" else key)
        roster.append(_with_config_endpoint(Teacher(key, entry.model, inference, served)))
    for engine, teachers in by_engine(roster).items():
        names = [t.served_name for t in teachers]
        if engine != "openai" and len(set(names)) != len(names):
            raise ConfigError("models.teachers", f"two {engine} teachers would be served under one name: {names}")
    return roster


def by_engine(teachers: list[Teacher]) -> dict[str, list[Teacher]]:
    """The teachers grouped by engine (only engines with teachers appear), each group in roster order."""
    groups: dict[str, list[Teacher]] = {}
    for teacher in teachers:
        groups.setdefault(teacher.engine, []).append(teacher)
    return groups


def _with_config_endpoint(teacher: Teacher) -> Teacher:
    """An `openai` teacher is reached where the config says; the others get an endpoint when deployed."""
    if teacher.engine != "openai":
        return teacher
    return teacher.reached_at(Endpoint(base_url=teacher.inference.base_url, api_key=teacher.inference.api_key))
