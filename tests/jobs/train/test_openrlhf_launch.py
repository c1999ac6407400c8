"""The OpenRLHF launcher without a GPU or a Ray cluster: the argv and runtime_env it builds from a grpo
config, the config errors it raises before any network call, a submission to an address nobody listens
on, and the submit/wait bookkeeping against a stand-in Jobs API client. The training run itself is only
exercised on a GPU cluster (docs/openrlhf.md).
"""

from __future__ import annotations

import json
import shlex
import time

import pytest

from distill_ray.config import build_config
from distill_ray.errors import ConfigError, UserError
from jobs.stage import StageEnv
from jobs.train import openrlhf_launch as launch

REWARD_BASE = "http://10.1.2.3:8000/reward"


def _config(**over):
    """A grpo job on the openrlhf engine; `over` replaces top-level sections (shallow)."""
    raw = {
        "job_type": "grpo",
        "output_dir": "runs/openrlhf-test",
        "models": {"student": "Qwen/Qwen2.5-0.5B-Instruct"},
        "dataset": {"instruction_path": "/shared/prompts.jsonl", "prompt_field": "problem", "answer_field": "solution"},
        "reward": {"url": REWARD_BASE},
        "training": {
            "learning_rate": 1e-6,
            "seed": 7,
            "grpo": {
                "engine": "openrlhf",
                "group_size": 8,
                "beta": 0.02,
                "max_new_tokens": 256,
                "temperature": 0.9,
                "openrlhf": {
                    "address": "http://head:8265",
                    "env_vars": {"NCCL_DEBUG": "INFO", "WANDB_API_KEY": "s3cret"},
                    "rollout_batch_size": 32,
                    "extra_args": ["--logger.wandb.key", "s3cret", "--eval.steps", "5"],
                },
            },
        },
    }
    raw.update(over)
    return build_config(raw)


def _grpo(**openrlhf):
    cfg = _config()
    raw = cfg.model_dump()
    raw["training"]["grpo"]["openrlhf"].update(openrlhf)
    return build_config(raw)


def _value(cmd: list[str], flag: str) -> str:
    assert cmd.count(flag) == 1, f"{flag} appears {cmd.count(flag)} times in {cmd}"
    return cmd[cmd.index(flag) + 1]


def _is_switch(cmd: list[str], flag: str) -> bool:
    i = cmd.index(flag)
    return i + 1 == len(cmd) or cmd[i + 1].startswith("--")


def _stage(tmp_path) -> StageEnv:
    return StageEnv(name="grpo", output_dir=tmp_path, rejected_dir=tmp_path / "rejected", ray=None)


def test_command_maps_the_grpo_config_onto_train_ppo_ray_flags():
    job = _config()
    cmd = launch.build_command(job, launch.reward_endpoint(job), launch.prompt_source(job), save_path="/ckpt/run1")
    assert cmd[:3] == ["python", "-m", "openrlhf.cli.train_ppo_ray"]
    assert _value(cmd, "--algo.advantage.estimator") == "group_norm"
    assert _value(cmd, "--reward.remote_url") == REWARD_BASE + "/get_reward"
    assert int(_value(cmd, "--rollout.n_samples_per_prompt")) == 8
    assert float(_value(cmd, "--algo.kl.init_coef")) == 0.02
    assert _value(cmd, "--algo.kl.estimator") == "k3" and _is_switch(cmd, "--algo.kl.use_loss")
    assert _value(cmd, "--actor.model_name_or_path") == "Qwen/Qwen2.5-0.5B-Instruct"
    assert _value(cmd, "--data.prompt_dataset") == "/shared/prompts.jsonl"
    assert _value(cmd, "--data.input_key") == "problem"
    assert _value(cmd, "--data.label_key") == "solution"
    assert _is_switch(cmd, "--data.apply_chat_template")
    assert float(_value(cmd, "--actor.adam.lr")) == 1e-6
    assert _value(cmd, "--train.seed") == "7"
    assert float(_value(cmd, "--rollout.temperature")) == 0.9
    assert _value(cmd, "--rollout.max_new_tokens") == "256"
    assert _value(cmd, "--data.max_len") == str(1024 + 256)  # prompt_max_len + max_new_tokens
    assert _value(cmd, "--rollout.batch_size") == "32"
    assert _value(cmd, "--train.batch_size") == str(32 * 8)  # default: one update per rollout
    assert _value(cmd, "--ckpt.output_dir") == "/ckpt/run1"
    assert _value(cmd, "--ckpt.path") == "/ckpt/run1/checkpoints"
    # default layout: everything colocated on one 8-GPU node, vLLM and DeepSpeed sleeping in turn
    assert _value(cmd, "--actor.num_gpus_per_node") == "8" and _value(cmd, "--ref.num_gpus_per_node") == "8"
    assert _value(cmd, "--vllm.num_engines") == "8"
    for switch in ("--train.colocate_all", "--vllm.enable_sleep", "--ds.enable_sleep"):
        assert _is_switch(cmd, switch)
    assert "--train.colocate_actor_ref" not in cmd
    assert _value(cmd, "--ds.zero_stage") == "3" and _value(cmd, "--ds.param_dtype") == "bf16"
    assert cmd[-4:] == ["--logger.wandb.key", "s3cret", "--eval.steps", "5"]  # extra_args last, verbatim
    assert shlex.split(launch.entrypoint(cmd)) == cmd


def test_every_flag_comes_from_the_one_table():
    job = _config()
    cmd = launch.build_command(job, launch.reward_endpoint(job), launch.prompt_source(job))
    flags = [a for a in cmd[3:-4] if a.startswith("--")]
    assert set(flags) <= set(launch.FLAGS.values())
    assert len(set(launch.FLAGS.values())) == len(launch.FLAGS)


def test_command_options():
    job = _grpo(pretrain="/models/policy", colocate="actor_ref", vllm_num_engines=2, bf16=False,
                gradient_checkpointing=False, train_batch_size=64, extra_args=[])  # fmt: skip
    raw = job.model_dump()
    raw["dataset"]["answer_field"] = None
    job = build_config(raw)
    cmd = launch.build_command(job, "http://rm/get_reward", "org/prompts")
    assert _value(cmd, "--actor.model_name_or_path") == "/models/policy"  # openrlhf.pretrain wins over student
    assert "--data.label_key" not in cmd
    assert _is_switch(cmd, "--train.colocate_actor_ref") and "--train.colocate_all" not in cmd
    assert "--vllm.enable_sleep" not in cmd and "--actor.gradient_checkpointing_enable" not in cmd
    assert _value(cmd, "--ds.param_dtype") == "fp16"
    assert _value(cmd, "--train.batch_size") == "64"
    assert "--ckpt.max_num" not in cmd  # save_total_limit unset: OpenRLHF's own default
    raw["training"]["save_total_limit"] = 2
    limited = launch.build_command(build_config(raw), "http://rm/get_reward", "org/prompts")
    assert _value(limited, "--ckpt.max_num") == "2"
    assert cmd[-1] == "1"  # no extra args: the last flag is logging_steps' value
    # default save path: the job's output folder
    assert _value(cmd, "--ckpt.output_dir").endswith("runs/openrlhf-test/model")


def test_runtime_env():
    env = launch.runtime_env(_config())
    assert env == {"pip": ["openrlhf[vllm]==0.11.2"], "env_vars": {"NCCL_DEBUG": "INFO", "WANDB_API_KEY": "s3cret"}}
    env = launch.runtime_env(_grpo(pip=[], env_vars={}, working_dir="/src/project"))
    assert env == {"working_dir": "/src/project"}


def test_reward_url_is_the_services_get_reward():
    assert launch.reward_endpoint(_config(reward={"url": REWARD_BASE + "/"})) == REWARD_BASE + "/get_reward"
    assert launch.reward_endpoint(_config(reward={"url": REWARD_BASE + "/get_reward"})) == REWARD_BASE + "/get_reward"


def test_missing_address_names_the_key(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(ConfigError) as err:
        launch.jobs_address(_grpo(address=None))
    assert err.value.key == "training.grpo.openrlhf.address"
    monkeypatch.setenv("RAY_ADDRESS", "gpu-head:8265")
    assert launch.jobs_address(_grpo(address=None)) == "http://gpu-head:8265"
    monkeypatch.setenv("RAY_ADDRESS", "ray://gpu-head:10001")
    with pytest.raises(ConfigError, match="not a Jobs API address"):
        launch.jobs_address(_grpo(address=None))


@pytest.mark.parametrize(
    ("over", "key"),
    [
        ({"reward": {}}, "reward.url"),
        ({"reward": {"url": REWARD_BASE, "serve": {"api_key": "k"}}}, "reward.serve.api_key"),
        ({"dataset": {}}, "dataset.instruction_path"),
        ({"dataset": {"instruction_path": "procedural:arithmetic"}}, "dataset.instruction_path"),
        ({"models": {"student": "builtin:smollm2-135m-instruct"}}, "models.student"),
        ({"models": {}}, "training.grpo.openrlhf.pretrain"),
    ],
)
def test_config_errors_name_the_key(tmp_path, monkeypatch, over, key):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(ConfigError) as err:
        launch.run(_config(**over), _stage(tmp_path))
    assert err.value.key == key
    assert not (tmp_path / "openrlhf_job.json").exists()


@pytest.mark.parametrize(("setting", "key"), [({"lora": {"r": 8}}, "training.lora"),
                                              ({"report_to": ["tensorboard"]}, "training.report_to")])
def test_our_loops_lora_and_trackers_are_refused_not_dropped(tmp_path, setting, key):
    raw = _config().model_dump()
    raw["training"].update(setting)
    with pytest.raises(ConfigError) as err:
        launch.run(build_config(raw), _stage(tmp_path))
    assert err.value.key == key and "extra_args" in str(err.value)


def test_colocated_layout_is_checked_by_the_config():
    with pytest.raises(ConfigError, match="vllm_num_engines"):
        _grpo(vllm_num_engines=2)
    with pytest.raises(ConfigError, match="reference layout"):
        _grpo(ref_num_gpus_per_node=4)
    assert _grpo(colocate="none", vllm_num_engines=2, ref_num_gpus_per_node=4).training.grpo.openrlhf.colocate == "none"


def test_unreachable_address_fails_fast_in_one_line(tmp_path):
    job = _grpo(address="http://127.0.0.1:1", connect_timeout_s=2)
    started = time.monotonic()
    with pytest.raises(UserError) as err:
        launch.run(job, _stage(tmp_path))
    assert time.monotonic() - started < 5
    msg = str(err.value)
    assert "\n" not in msg and "http://127.0.0.1:1" in msg and "training.grpo.openrlhf.address" in msg
    assert not (tmp_path / "openrlhf_job.json").exists()


class _Status(str):
    @property
    def value(self):
        return str(self)


class FakeJobsClient:
    """Stands in for JobSubmissionClient: records the submission, then reports `statuses` one per query."""

    def __init__(self, statuses):
        self.statuses, self.submitted = list(statuses), None

    def submit_job(self, *, entrypoint, runtime_env, submission_id):
        self.submitted = {"entrypoint": entrypoint, "runtime_env": runtime_env, "submission_id": submission_id}
        return submission_id or "raysubmit_fake"

    def get_job_status(self, submission_id):
        return _Status(self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0])

    def get_job_info(self, submission_id):
        return type("Info", (), {"message": "Job entrypoint command failed with exit code 1\nmore"})()

    def get_job_logs(self, submission_id):
        return "AssertionError: n_samples_per_prompt\n"


def test_run_submits_waits_and_records(tmp_path, monkeypatch, capsys):
    from distill_ray.log import configure_logging

    configure_logging()  # as the CLI does: status changes are logged messages
    fake = FakeJobsClient(["PENDING", "RUNNING", "RUNNING", "SUCCEEDED"])
    monkeypatch.setattr(launch, "_connect", lambda address, timeout: fake)
    job = _grpo(submission_id="grpo-1", poll_interval_s=0.01)
    result = launch.run(job, _stage(tmp_path))

    assert fake.submitted["submission_id"] == "grpo-1"
    assert shlex.split(fake.submitted["entrypoint"])[-4:] == ["--logger.wandb.key", "s3cret", "--eval.steps", "5"]
    assert fake.submitted["runtime_env"]["env_vars"]["WANDB_API_KEY"] == "s3cret"  # the job gets the real value
    record = json.loads((tmp_path / "openrlhf_job.json").read_text())
    assert record["submission_id"] == "grpo-1" and record["status"] == "SUCCEEDED"
    assert record["runtime_env"]["env_vars"] == {"NCCL_DEBUG": "INFO", "WANDB_API_KEY": "***"}
    assert "s3cret" not in json.dumps(record) and "--logger.wandb.key '***'" in record["entrypoint"]
    assert record["save_path"] == str((tmp_path / "model").resolve())
    assert result.outputs["submission_id"] == "grpo-1" and result.metrics["status"] == "SUCCEEDED"
    assert result.outputs["openrlhf_job"] == str(tmp_path / "openrlhf_job.json")
    err = capsys.readouterr().err
    assert err.count("RUNNING") == 1 and "SUCCEEDED" in err  # each status change logged once


def test_run_failed_job_raises_and_records(tmp_path, monkeypatch):
    monkeypatch.setattr(launch, "_connect", lambda address, timeout: FakeJobsClient(["RUNNING", "FAILED"]))
    with pytest.raises(RuntimeError, match="ended FAILED: Job entrypoint command failed with exit code 1$"):
        launch.run(_grpo(poll_interval_s=0.01), _stage(tmp_path))
    record = json.loads((tmp_path / "openrlhf_job.json").read_text())
    assert record["status"] == "FAILED" and record["submission_id"] == "raysubmit_fake"


def test_run_without_wait_returns_after_submitting(tmp_path, monkeypatch):
    fake = FakeJobsClient(["FAILED"])  # never queried
    monkeypatch.setattr(launch, "_connect", lambda address, timeout: fake)
    result = launch.run(_grpo(wait=False), _stage(tmp_path))
    assert result.metrics["status"] == "SUBMITTED" and fake.statuses == ["FAILED"]
