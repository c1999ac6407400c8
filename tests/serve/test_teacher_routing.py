"""Several teachers in one Serve app (serve/teacher.py): routed by the OpenAI `model` field, listed by
`GET /v1/models`, each its own deployment with its own autoscaling, behind one API key."""

from __future__ import annotations

import httpx
import openai
import pytest

from distill_ray.config import ServeConfig

pytestmark = pytest.mark.ray

MSG = [{"role": "user", "content": "What is 2 + 3?"}]
APP = "teachers-test"


@pytest.fixture(scope="module")
def teachers(ray_cluster, serve_port):
    from distill_ray.config import InferenceConfig
    from distill_ray.models.teachers import Teacher
    from serve.teacher import deploy_teachers, undeploy

    alpha = ServeConfig(port=serve_port, num_cpus=0.25, max_replicas=2, target_ongoing_requests=3)
    beta = ServeConfig(port=serve_port, num_cpus=0.25, max_replicas=3, target_ongoing_requests=5, max_batch_size=2)
    endpoint = deploy_teachers(
        [Teacher("alpha", "tiny:smollm2", InferenceConfig(serve=alpha), "alpha"),
         Teacher("beta", "tiny:smollm2?layers=1", InferenceConfig(serve=beta), "beta")],
        ServeConfig(port=serve_port, api_key="k3y"),
        app_name=APP,
    )
    yield endpoint
    undeploy(APP)


@pytest.fixture(scope="module")
def client(teachers):
    return openai.OpenAI(base_url=teachers.base_url, api_key="k3y", max_retries=0, timeout=120)


def test_models_lists_every_teacher_and_needs_the_key(teachers, client):
    assert [m.id for m in client.models.list().data] == ["alpha", "beta"]
    assert teachers.served_names == ["alpha", "beta"]
    with pytest.raises(ValueError, match="several models"):
        teachers.served_name  # noqa: B018 - a one-teacher accessor on a two-teacher app
    keyless = openai.OpenAI(base_url=teachers.base_url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        keyless.models.list()
    assert httpx.get(teachers.base_url.removesuffix("/v1") + "/health").json()["models"] == ["alpha", "beta"]


def test_the_model_field_picks_the_deployment(teachers, client):
    before = {name: teachers.handle.stats.remote(name).result()["sequences"] for name in ("alpha", "beta")}
    out = client.chat.completions.create(model="beta", messages=MSG, max_tokens=4, n=2, temperature=1.0)
    assert out.model == "beta" and len(out.choices) == 2
    after = {name: teachers.handle.stats.remote(name).result()["sequences"] for name in ("alpha", "beta")}
    assert after["beta"] - before["beta"] == 2 and after["alpha"] == before["alpha"]

    out = client.completions.create(model="alpha", prompt=["1 + 1 =", "2 + 2 ="], max_tokens=3)
    assert out.model == "alpha" and len(out.choices) == 2
    assert teachers.handle.stats.remote("alpha").result()["sequences"] - after["alpha"] == 2
    # The spec a teacher was deployed from is accepted too; in-cluster handle calls route the same way.
    by_spec = teachers.handle.chat.remote({"model": "tiny:smollm2?layers=1", "messages": MSG, "max_tokens": 2})
    assert by_spec.result()["model"] == "beta"


def test_missing_or_unknown_model_is_a_client_error(client):
    with pytest.raises(openai.BadRequestError, match="'alpha', 'beta'") as missing:
        client.post("/chat/completions", body={"messages": MSG, "max_tokens": 2}, cast_to=dict)
    assert missing.value.body["param"] == "model"
    with pytest.raises(openai.NotFoundError) as unknown:
        client.chat.completions.create(model="gamma", messages=MSG, max_tokens=2)
    assert unknown.value.body["code"] == "model_not_found"
    # A replica's own 4xx comes through the router unchanged.
    with pytest.raises(openai.BadRequestError) as bad_n:
        client.chat.completions.create(model="alpha", messages=MSG, max_tokens=2, n=0)
    assert bad_n.value.body["param"] == "n"


def test_each_teacher_has_its_own_deployment_and_autoscaling(teachers):
    from ray.serve.context import _get_global_client

    details = _get_global_client().get_serve_details()["applications"][APP]["deployments"]
    assert set(details) == {"TeacherRouter", "TeacherDeployment-alpha", "TeacherDeployment-beta"}
    scaling = {name: details[f"TeacherDeployment-{name}"]["deployment_config"]["autoscaling_config"]
               for name in ("alpha", "beta")}  # fmt: skip
    assert (scaling["alpha"]["max_replicas"], scaling["alpha"]["target_ongoing_requests"]) == (2, 3)
    assert (scaling["beta"]["max_replicas"], scaling["beta"]["target_ongoing_requests"]) == (3, 5)
    router = details["TeacherRouter"]["deployment_config"]
    assert router["ray_actor_options"]["num_cpus"] == 0
    assert router["max_ongoing_requests"] == 2 * 32 + 3 * 32  # room for every teacher replica's requests
