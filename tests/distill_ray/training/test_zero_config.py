"""training.strategy / zero_stage / deepspeed / mixed_precision / gradient_checkpointing: the DeepSpeed config
built from training.*, what a user's config may change, and the one-line errors for what it may not; the
driver's checks of a job and a checkpoint against the strategy. No workers (test_zero_strategy.py trains)."""

from __future__ import annotations

import json

import pytest

from distill_ray.config import TrainingConfig
from distill_ray.errors import ConfigError
from distill_ray.training import zero


def _t(**kw) -> TrainingConfig:
    return TrainingConfig(strategy="deepspeed", **kw)


def test_the_config_follows_training_keys():
    cfg = zero.deepspeed_config(_t(per_device_train_batch_size=3, gradient_accumulation_steps=5, max_grad_norm=0.5,
                                   zero_stage=2))  # fmt: skip
    assert cfg["train_micro_batch_size_per_gpu"] == 3 and cfg["gradient_accumulation_steps"] == 5
    assert cfg["gradient_clipping"] == 0.5 and zero.zero_stage(cfg) == 2
    assert cfg["bf16"] == {"enabled": False}  # auto on CPU
    assert zero.deepspeed_config(_t(use_gpu=True))["bf16"] == {"enabled": True}
    assert zero.deepspeed_config(_t(mixed_precision="no", use_gpu=True))["bf16"] == {"enabled": False}
    assert "train_batch_size" not in cfg  # DeepSpeed derives it with the world size


def test_user_keys_win_and_auto_keeps_ours(tmp_path):
    user = {"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}, "reduce_bucket_size": "auto"},
            "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": 1, "train_batch_size": "auto"}
    cfg = zero.deepspeed_config(_t(deepspeed=user))
    z = cfg["zero_optimization"]
    assert z["stage"] == 2 and z["offload_optimizer"] == {"device": "cpu"}
    assert z["reduce_bucket_size"] == 5e7 and z["contiguous_gradients"] is True  # ours kept beside theirs
    assert cfg["train_micro_batch_size_per_gpu"] == 4
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(user))
    assert zero.deepspeed_config(_t(deepspeed=str(path))) == cfg


@pytest.mark.parametrize(
    ("user", "key", "hint"),
    [
        ({"gradient_accumulation_steps": 8}, "training.deepspeed.gradient_accumulation_steps",
         "set training.gradient_accumulation_steps"),
        ({"train_micro_batch_size_per_gpu": 1}, "training.deepspeed.train_micro_batch_size_per_gpu",
         "per_device_train_batch_size"),
        ({"gradient_clipping": 0.1}, "training.deepspeed.gradient_clipping", "max_grad_norm"),
        ({"train_batch_size": 64}, "training.deepspeed.train_batch_size", "num_workers"),
        ({"optimizer": {"type": "Adam"}}, "training.deepspeed.optimizer", "learning_rate"),
        ({"scheduler": {"type": "WarmupLR"}}, "training.deepspeed.scheduler", "lr_scheduler_type"),
        ({"fp16": {"enabled": True}}, "training.deepspeed.fp16", "mixed_precision: bf16"),
    ],
)  # fmt: skip
def test_keys_training_owns_are_refused_with_the_key_to_set(user, key, hint):
    with pytest.raises(ConfigError) as err:
        zero.deepspeed_config(_t(deepspeed=user))
    assert err.value.key == key and hint in str(err.value)


def test_fp16_switched_off_is_accepted():
    assert zero.deepspeed_config(_t(deepspeed={"fp16": {"enabled": False}}))["fp16"] == {"enabled": False}


def test_a_config_file_that_does_not_load_names_the_key(tmp_path):
    for text in ("{not json", "[1, 2]"):
        path = tmp_path / "ds.json"
        path.write_text(text)
        with pytest.raises(ConfigError) as err:
            zero.deepspeed_config(_t(deepspeed=str(path)))
        assert err.value.key == "training.deepspeed"
    with pytest.raises(ConfigError, match="cannot read"):
        zero.deepspeed_config(_t(deepspeed=str(tmp_path / "missing.json")))


def test_a_deepspeed_config_without_the_strategy_is_an_error_naming_it():
    from distill_ray.config.loader import build_config

    with pytest.raises(ConfigError) as err:
        build_config({"job_type": "sft", "training": {"deepspeed": {"zero_optimization": {"stage": 2}}}})
    assert err.value.key == "training.deepspeed" and "strategy: deepspeed" in str(err.value)
    with pytest.raises(ConfigError) as err:
        build_config({"job_type": "sft", "training": {"strategy": "fsdp"}})
    assert err.value.key == "training.strategy"


@pytest.mark.parametrize("job_type", ["kd", "grpo", "opd"])
def test_stage3_refuses_jobs_that_need_whole_weights_on_one_rank(job_type):
    cfg = zero.deepspeed_config(_t(zero_stage=3))
    with pytest.raises(ConfigError) as err:
        zero.check_objective(job_type, cfg, lora=False)
    assert err.value.key == "training.zero_stage" and "zero_stage: 2" in str(err.value)
    zero.check_objective(job_type, zero.deepspeed_config(_t(zero_stage=2)), lora=False)  # stage 2 trains them


def test_stage3_with_lora_is_refused_and_stage2_is_not():
    with pytest.raises(ConfigError, match="LoRA with stage 3"):
        zero.check_objective("sft", zero.deepspeed_config(_t(zero_stage=3)), lora=True)
    zero.check_objective("sft", zero.deepspeed_config(_t(zero_stage=2)), lora=True)
    zero.check_objective("dpo", zero.deepspeed_config(_t(zero_stage=3)), lora=False)


def _checkpoint(root, step: int, **state):
    folder = root / f"step_{step}"
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text(json.dumps({"step": step, **state}))


def test_a_checkpoint_of_another_strategy_or_worker_count_is_refused(tmp_path):
    pytest.importorskip("deepspeed")
    from jobs.train.loop import _check_strategy
    from jobs.train.sft import SFTObjective

    objective = SFTObjective("tiny:smollm2", "", "{problem}", TrainingConfig())
    _checkpoint(tmp_path / "ddp", 4)  # an older checkpoint: no strategy recorded, so ddp
    with pytest.raises(ConfigError) as err:
        _check_strategy(_t(), objective, tmp_path / "ddp")
    assert err.value.key == "training.strategy" and "'ddp'" in str(err.value)
    _check_strategy(TrainingConfig(), objective, tmp_path / "ddp")

    _checkpoint(tmp_path / "zero", 4, strategy="deepspeed", world_size=4)
    with pytest.raises(ConfigError) as err:
        _check_strategy(_t(num_workers=2), objective, tmp_path / "zero")
    assert err.value.key == "training.num_workers" and "4 workers" in str(err.value)
    _check_strategy(_t(num_workers=4), objective, tmp_path / "zero")


def test_gradient_checkpointing_is_set_on_the_student(tiny_model_dir):
    from jobs.train.loop import load_student
    from jobs.train.sft import SFTObjective

    for on in (False, True):
        for lora in (None, {"r": 4}):
            t = TrainingConfig(gradient_checkpointing=on, lora=lora)
            model = load_student(SFTObjective(str(tiny_model_dir), "", "{problem}", t), t, None)
            inner = model.get_base_model() if lora else model
            assert inner.is_activation_checkpointing is on


@pytest.mark.parametrize(("mode", "dtype"), [("bf16", "torch.bfloat16"), ("auto", "torch.float32")])
def test_mixed_precision_autocasts_the_ddp_forward(tmp_path, tiny_model_dir, monkeypatch, mode, dtype):
    """One real TrainRun step (world 1, Ray Train's calls stood in) records the dtype of the logits the loss saw:
    bf16 under `mixed_precision: bf16`; fp32 under `auto` on CPU. The weights stay fp32 either way."""
    from dataclasses import asdict

    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray.train
    import ray.train.torch

    from distill_ray.training.schedule import Phase
    from jobs.train.loop import TrainRun
    from jobs.train.sft import SFTObjective

    monkeypatch.setattr(ray.train, "report", lambda *a, **k: None)
    monkeypatch.setattr(ray.train.torch, "prepare_model", lambda model: model)
    seen = []

    class Recording(SFTObjective):
        def loss(self, model, batch, denom):
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            seen.append(str(out.logits.dtype))
            return super().loss(model, batch, denom)

    pq.write_table(pa.Table.from_pylist([{"problem": "1+1?", "response": "2"}] * 2), tmp_path / "rows.parquet")
    t = TrainingConfig(max_steps=1, num_workers=1, per_device_train_batch_size=2, mixed_precision=mode)
    config = {"objective": Recording(str(tiny_model_dir), "", "{problem}", t), "training": t, "fit_started": 0.0,
              "phases": [asdict(Phase("sft", str(tmp_path / "rows.parquet"), 2, 1))], "output_dir": str(tmp_path / "o"),
              "run_dir": str(tmp_path), "stage": "sft", "student": str(tiny_model_dir)}  # fmt: skip
    run = TrainRun(config, 0, 1, __import__("torch").device("cpu"))
    run.train()
    assert seen == [dtype]
    assert {str(p.dtype) for p in run.model.parameters()} == {"torch.float32"}
    assert run.state["losses"][0] > 0
