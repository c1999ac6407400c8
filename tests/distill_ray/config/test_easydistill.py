"""EasyDistill's keys: its vLLM keys under `inference` land in `inference.vllm`; its README's sample config
loads after one round trip that names every key with no place here."""

import json

import pytest

from distill_ray.config import InferenceConfig, build_config, load_config
from distill_ray.config.easydistill import VLLM_KEYS_UNDER_INFERENCE
from distill_ray.config.vllm import VLLMConfig
from distill_ray.errors import ConfigError

# EasyDistill's README (github.com/modelscope/easydistill), its black-box KD sample, with our job type.
README_SAMPLE = {
    "job_type": "generate",
    "dataset": {"instruction_path": "train.json", "labeled_path": "train_labeled.json",
                "template": "chat_template/chat_template_kd.jinja", "seed": 42},
    "inference": {"enable_chunked_prefill": True, "seed": 777, "gpu_memory_utilization": 0.9, "temperature": 0.8,
                  "trust_remote_code": True, "enforce_eager": False, "max_model_len": 4096, "max_new_tokens": 512},
    "models": {"teacher": "teacher/Qwen/Qwen2.5-7B-Instruct/", "student": "student/Qwen/Qwen2.5-0.5B-Instruct/"},
    "training": {"output_dir": "./result/", "num_train_epochs": 3, "per_device_train_batch_size": 1,
                 "gradient_accumulation_steps": 8, "save_steps": 1000, "max_length": 512, "logging_steps": 1,
                 "learning_rate": 2e-5, "weight_decay": 0.05, "warmup_ratio": 0.1, "lr_scheduler_type": "cosine"},
}  # fmt: skip


def test_readme_sample_fails_once_naming_every_key_with_no_place_here(tmp_path):
    path = tmp_path / "kd_black_box_local.json"
    path.write_text(json.dumps(README_SAMPLE))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.key == "dataset.template, training.output_dir"
    text = str(err.value)
    assert ": unknown keys (" in text and "top-level output_dir" in text and "tokenizer" in text and "\n" not in text
    # The one round trip: drop the two keys (the output folder moves to the top level) and it loads.
    fixed = json.loads(path.read_text())
    del fixed["dataset"]["template"]
    fixed["output_dir"] = fixed["training"].pop("output_dir")
    path.write_text(json.dumps(fixed))
    cfg = load_config(path)
    assert cfg.output_dir == "./result/" and cfg.dataset.instruction_path == "train.json" and cfg.dataset.seed == 42
    assert cfg.inference.seed == 777 and cfg.inference.temperatures == [0.8] and cfg.inference.max_new_tokens == 512
    vllm = cfg.inference.vllm
    assert (vllm.gpu_memory_utilization, vllm.max_model_len, vllm.enforce_eager) == (0.9, 4096, False)
    assert vllm.engine_kwargs == {"enable_chunked_prefill": True, "trust_remote_code": True}
    training = cfg.training
    assert (training.num_train_epochs, training.per_device_train_batch_size, training.gradient_accumulation_steps,
            training.save_steps, training.max_length, training.logging_steps) == (3, 1, 8, 1000, 512, 1)  # fmt: skip
    assert (training.learning_rate, training.weight_decay, training.warmup_ratio) == (2e-5, 0.05, 0.1)


@pytest.mark.parametrize("key", sorted(VLLM_KEYS_UNDER_INFERENCE))
def test_each_vllm_key_reaches_the_engine_arguments(key):
    value = {"gpu_memory_utilization": 0.55, "max_model_len": 1234}.get(key, True)
    raw = {"job_type": "generate", "inference": {"engine": "vllm", key: value}}
    cfg = build_config(raw)
    assert cfg.inference.vllm.vllm_engine_kwargs()[key] == value
    assert raw["inference"] == {"engine": "vllm", key: value}  # the input mapping is left as it was


@pytest.mark.parametrize("key", ["gpu_memory_utilization", "trust_remote_code"])
def test_a_key_in_both_places_must_agree(key):
    *parents, leaf = VLLM_KEYS_UNDER_INFERENCE[key]

    def inference(ours, theirs):
        vllm = {leaf: theirs}
        for part in parents:
            vllm = {part: vllm}
        return {"job_type": "generate", "inference": {key: ours, "vllm": vllm}}

    with pytest.raises(ConfigError) as err:
        build_config(inference(0.8, 0.5))
    text = str(err.value)
    assert err.value.key == "inference" and f"inference.{key} (0.8)" in text and "inference.vllm." in text
    assert build_config(inference(0.5, 0.5)).inference.vllm.vllm_engine_kwargs()[key] == 0.5


def test_moved_keys_are_still_checked_and_named_where_they_land():
    with pytest.raises(ConfigError) as err:
        build_config({"job_type": "generate", "inference": {"gpu_memory_utilization": 1.5}})
    assert err.value.key == "inference.vllm.gpu_memory_utilization"


def test_direct_construction_and_a_vllm_section_object():
    inference = InferenceConfig(max_model_len=2048, vllm=VLLMConfig(tensor_parallel_size=2))
    assert inference.vllm.max_model_len == 2048 and inference.vllm.tensor_parallel_size == 2


def test_pipeline_stage_overrides_the_pipeline_in_either_spelling():
    cfg = build_config({
        "job_type": "pipeline", "inference": {"gpu_memory_utilization": 0.9},
        "stages": [{"name": "a", "job_type": "generate", "inference": {"vllm": {"gpu_memory_utilization": 0.5}}},
                   {"name": "b", "job_type": "generate"}],
    })  # fmt: skip
    assert [s.job.inference.vllm.gpu_memory_utilization for s in cfg.stages] == [0.5, 0.9]
