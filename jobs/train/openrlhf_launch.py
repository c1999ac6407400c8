"""GRPO on a GPU cluster: OpenRLHF's `train_ppo_ray` submitted as a Ray job (`training.grpo.engine: openrlhf`).

Where it sits: the grpo job (`jobs/train/grpo.py`) calls `run(job, stage)` here instead of its own Ray Train loop
when the engine is `openrlhf`. OpenRLHF is never imported by us: it pins its own Ray, transformers and
flash-attn (CUDA), so it only exists inside the submitted job's runtime_env on the GPU cluster. This
module turns our config into that job's command line and runtime_env, submits it through the Ray Jobs
API and, by default, waits for it. Rollouts are scored by our reward service: OpenRLHF's remote reward
client POSTs `{"query", "prompts", "labels"}` to `<reward.url>/get_reward`, which the service answers.

Every OpenRLHF flag name lives in `FLAGS` below, taken from `openrlhf/cli/train_ppo_ray.py` of OpenRLHF
0.11.0 (commit 3c3be623) and checked unchanged in the 0.11.2 wheel, so a version bump is an edit there.

Tested where: `build_command`, `runtime_env`, the config errors and a submission to an unreachable address
in tests/jobs/train/test_openrlhf_launch.py (no Ray cluster, no GPU); the training run itself only on a GPU
cluster (docs/openrlhf.md).
"""

from __future__ import annotations

import json
import logging
import re
import shlex
from pathlib import Path
from typing import Any

from cluster import jobs_api
from cluster.jobs_api import first_line
from distill_ray.config import JobConfig
from distill_ray.errors import ConfigError
from distill_ray.summary import StageResult
from jobs.stage import StageEnv

log = logging.getLogger(__name__)

MODULE = "openrlhf.cli.train_ppo_ray"
ADDRESS_KEY = "training.grpo.openrlhf.address"
REWARD_PATH = "/get_reward"  # the reward service's OpenRLHF-compatible endpoint, under reward.url

# Our name -> OpenRLHF train_ppo_ray flag (0.11.x: dotted, grouped names). The one place to edit on a bump.
FLAGS: dict[str, str] = {
    # models and data
    "pretrain": "--actor.model_name_or_path",
    "reward_url": "--reward.remote_url",
    "prompt_data": "--data.prompt_dataset",
    "input_key": "--data.input_key",
    "label_key": "--data.label_key",
    "apply_chat_template": "--data.apply_chat_template",
    "max_len": "--data.max_len",  # prompt + response tokens
    # algorithm: GRPO = group-normalised advantages + a k3 KL term in the loss
    "advantage_estimator": "--algo.advantage.estimator",
    "kl_coef": "--algo.kl.init_coef",
    "kl_use_loss": "--algo.kl.use_loss",
    "kl_estimator": "--algo.kl.estimator",
    "eps_clip": "--actor.eps_clip",
    "learning_rate": "--actor.adam.lr",
    # rollout
    "samples_per_prompt": "--rollout.n_samples_per_prompt",
    "max_new_tokens": "--rollout.max_new_tokens",
    "temperature": "--rollout.temperature",
    "top_p": "--rollout.top_p",
    "rollout_batch_size": "--rollout.batch_size",
    "micro_rollout_batch_size": "--rollout.micro_batch_size",
    # training schedule
    "train_batch_size": "--train.batch_size",
    "micro_train_batch_size": "--train.micro_batch_size",
    "max_epochs": "--train.max_epochs",
    "num_episodes": "--train.num_episodes",
    "seed": "--train.seed",
    # GPU layout
    "actor_num_nodes": "--actor.num_nodes",
    "actor_num_gpus_per_node": "--actor.num_gpus_per_node",
    "ref_num_nodes": "--ref.num_nodes",
    "ref_num_gpus_per_node": "--ref.num_gpus_per_node",
    "vllm_num_engines": "--vllm.num_engines",
    "vllm_tensor_parallel_size": "--vllm.tensor_parallel_size",
    "vllm_gpu_memory_utilization": "--vllm.gpu_memory_utilization",
    "vllm_enable_sleep": "--vllm.enable_sleep",
    "ds_enable_sleep": "--ds.enable_sleep",
    "colocate_all": "--train.colocate_all",
    "colocate_actor_ref": "--train.colocate_actor_ref",
    # DeepSpeed
    "zero_stage": "--ds.zero_stage",
    "param_dtype": "--ds.param_dtype",
    "gradient_checkpointing": "--actor.gradient_checkpointing_enable",
    # outputs and logging
    "save_path": "--ckpt.output_dir",
    "ckpt_path": "--ckpt.path",
    "save_steps": "--ckpt.save_steps",
    "save_total_limit": "--ckpt.max_num",
    "logging_steps": "--logger.logging_steps",
}

_LOCAL_ONLY_SPECS = ("builtin:", "tiny:", "procedural:", "bundled:")  # resolved by us, unknown to OpenRLHF
_SECRET_NAMES = re.compile(r"(key|token|secret|password|passwd|credential)", re.IGNORECASE)  # env var names
_SECRET_FLAG = re.compile(r"(api_)?(key|token|secret|password)", re.IGNORECASE)  # a flag's last part


def build_command(job: JobConfig, reward_url: str, prompt_data: str, save_path: str | None = None) -> list[str]:
    """The job's argv: `python -m openrlhf.cli.train_ppo_ray` with our config mapped onto its flags."""
    grpo, tr, o = job.training.grpo, job.training, job.training.grpo.openrlhf
    pretrain = o.pretrain or job.models.student
    if not pretrain:
        raise ConfigError("training.grpo.openrlhf.pretrain", "no policy model: set it or models.student")
    if pretrain.startswith(_LOCAL_ONLY_SPECS):
        key = "training.grpo.openrlhf.pretrain" if o.pretrain else "models.student"
        raise ConfigError(key, f"'{pretrain}' is a distill-ray spec; OpenRLHF needs a hub name or a cluster path")
    actor_gpus = o.actor_num_nodes * o.actor_num_gpus_per_node
    if grpo.group_size * o.rollout_batch_size // o.micro_rollout_batch_size < actor_gpus:
        raise ConfigError(
            "training.grpo.openrlhf.micro_rollout_batch_size",
            f"group_size * rollout_batch_size / micro_rollout_batch_size must reach the actor's {actor_gpus} GPUs",
        )
    save_path = save_path or o.save_path or str(Path(job.output_dir).resolve() / "model")
    settings: list[tuple[str, Any]] = [
        ("pretrain", pretrain),
        ("reward_url", reward_url),
        ("prompt_data", prompt_data),
        ("input_key", job.dataset.prompt_field),
        ("label_key", job.dataset.answer_field),  # None: no label, the verifier has nothing to check against
        ("apply_chat_template", True),
        ("max_len", o.prompt_max_len + grpo.max_new_tokens),
        ("advantage_estimator", "group_norm"),
        ("kl_coef", grpo.beta),
        ("kl_use_loss", True),
        ("kl_estimator", "k3"),
        ("eps_clip", grpo.clip_epsilon),
        ("learning_rate", tr.learning_rate),
        ("samples_per_prompt", grpo.group_size),
        ("max_new_tokens", grpo.max_new_tokens),
        ("temperature", grpo.temperature),
        ("top_p", grpo.top_p),
        ("rollout_batch_size", o.rollout_batch_size),
        ("micro_rollout_batch_size", o.micro_rollout_batch_size),
        ("train_batch_size", o.train_batch_size or o.rollout_batch_size * grpo.group_size),
        ("micro_train_batch_size", o.micro_train_batch_size),
        ("max_epochs", o.max_epochs),
        ("num_episodes", o.num_episodes),
        ("seed", tr.seed),
        ("actor_num_nodes", o.actor_num_nodes),
        ("actor_num_gpus_per_node", o.actor_num_gpus_per_node),
        ("ref_num_nodes", o.ref_num_nodes or o.actor_num_nodes),
        ("ref_num_gpus_per_node", o.ref_num_gpus_per_node or o.actor_num_gpus_per_node),
        ("vllm_num_engines", o.vllm_num_engines),
        ("vllm_tensor_parallel_size", o.vllm_tensor_parallel_size),
        ("vllm_gpu_memory_utilization", o.vllm_gpu_memory_utilization),
        ("colocate_all", o.colocate == "all"),
        ("colocate_actor_ref", o.colocate == "actor_ref"),
        ("vllm_enable_sleep", o.colocate == "all"),  # vLLM and DeepSpeed take turns on shared GPUs
        ("ds_enable_sleep", o.colocate == "all"),
        ("zero_stage", o.zero_stage),
        ("param_dtype", "bf16" if o.bf16 else "fp16"),
        ("gradient_checkpointing", o.gradient_checkpointing),
        ("save_path", save_path),
        ("ckpt_path", f"{save_path.rstrip('/')}/checkpoints"),
        ("save_steps", tr.save_steps),
        ("save_total_limit", tr.save_total_limit),
        ("logging_steps", tr.logging_steps),
    ]
    cmd = ["python", "-m", MODULE]
    for name, value in settings:
        if value is None or value is False:
            continue
        cmd.append(FLAGS[name])
        if value is not True:  # True: a store_true switch, no value
            cmd.append(str(value))
    return cmd + list(o.extra_args)


def runtime_env(job: JobConfig) -> dict[str, Any]:
    """The submitted job's runtime_env; empty or unset pieces are left out."""
    o = job.training.grpo.openrlhf
    env: dict[str, Any] = {"pip": list(o.pip), "env_vars": dict(o.env_vars), "working_dir": o.working_dir}
    return {k: v for k, v in env.items() if v}


def entrypoint(cmd: list[str]) -> str:
    """The shell command line Ray runs for the job."""
    return shlex.join(cmd)


def reward_endpoint(job: JobConfig) -> str:
    """`<reward.url>/get_reward`: the URL OpenRLHF's vLLM engines POST rollouts to."""
    if not job.reward.url:
        raise ConfigError(
            "reward.url",
            "the openrlhf engine needs a running reward service the GPU cluster can reach "
            "(e.g. `distill-ray serve reward CONFIG` on the cluster)",
        )
    if job.reward.serve.api_key:
        raise ConfigError(
            "reward.serve.api_key",
            "OpenRLHF's reward client sends no Authorization header; serve the reward app without an api_key",
        )
    base = job.reward.url.rstrip("/")
    return base if base.endswith(REWARD_PATH) else base + REWARD_PATH


def prompt_source(job: JobConfig) -> str:
    """The prompt dataset as OpenRLHF loads it on the cluster (hub name, or a file/folder on its nodes)."""
    spec = job.dataset.instruction_path
    if not spec:
        raise ConfigError("dataset.instruction_path", "the openrlhf engine needs a prompt dataset")
    if spec.startswith(_LOCAL_ONLY_SPECS):
        raise ConfigError(
            "dataset.instruction_path",
            f"'{spec}' is a distill-ray source; OpenRLHF needs a hub dataset or a .jsonl/.json/.parquet on the cluster",
        )
    return spec


def jobs_address(job: JobConfig) -> str:
    """The GPU cluster's Jobs API address (http[s]://host:port) from the config or $RAY_ADDRESS."""
    return jobs_api.normalize_address(job.training.grpo.openrlhf.address, ADDRESS_KEY)


def run(job: JobConfig, stage: StageEnv) -> StageResult:
    """Submit the GRPO job to the GPU cluster; with `wait`, follow it to the end (FAILED/STOPPED fail the stage)."""
    o = job.training.grpo.openrlhf
    # Settings of our own train loop that OpenRLHF would silently go without: refused, with where its own live.
    if job.training.lora is not None:
        raise ConfigError("training.lora", "the openrlhf engine trains with its own LoRA flags; pass them in "
                          "training.grpo.openrlhf.extra_args instead")  # fmt: skip
    if job.training.report_to:
        raise ConfigError("training.report_to", "the openrlhf engine logs with its own logger flags (W&B, "
                          "TensorBoard); pass them in training.grpo.openrlhf.extra_args instead")  # fmt: skip
    reward_url = reward_endpoint(job)
    prompt_data = prompt_source(job)
    save_path = o.save_path or str((stage.output_dir / "model").resolve())
    cmd = build_command(job, reward_url, prompt_data, save_path=save_path)
    env = runtime_env(job)
    address = jobs_address(job)
    if _is_loopback(reward_url):
        log.warning("reward URL %s is loopback; every vLLM engine's node must reach it (single-node clusters with "
                    "the reward service on that node only)", reward_url)  # fmt: skip

    client = _connect(address, o.connect_timeout_s)
    try:
        submission_id = client.submit_job(entrypoint=entrypoint(cmd), runtime_env=env, submission_id=o.submission_id)
    except (RuntimeError, ValueError) as exc:
        raise RuntimeError(f"the Jobs API at {address} refused the submission: {first_line(exc)}") from None
    log.info("submitted OpenRLHF job '%s' to %s", submission_id, address)

    record: dict[str, Any] = {
        "submission_id": submission_id,
        "address": address,
        "entrypoint": entrypoint(_redact_argv(cmd)),
        "runtime_env": _redact_env(env),
        "reward_url": reward_url,
        "prompt_data": prompt_data,
        "save_path": save_path,
        "status": "SUBMITTED",
    }
    record_path = stage.output_dir / "openrlhf_job.json"
    _write(record_path, record)
    result = StageResult(name=stage.name, job_type=job.job_type)
    result.outputs = {"openrlhf_job": str(record_path), "model": save_path, "submission_id": submission_id,
                      "entrypoint": record["entrypoint"]}  # fmt: skip
    result.metrics = {"engine": "openrlhf", "submission_id": submission_id, "status": "SUBMITTED",
                      "runtime_env": record["runtime_env"]}  # fmt: skip
    if not o.wait:
        return result

    status, message = jobs_api.follow(client, submission_id, o.poll_interval_s, label="OpenRLHF job")
    record.update(status=status, message=message)
    result.metrics["status"] = status
    _write(record_path, record)
    if status != "SUCCEEDED":
        raise RuntimeError(f"OpenRLHF job '{submission_id}' ended {status}: {first_line(message or 'no message')}")
    return result


def _connect(address: str, timeout_s: float):
    """A checked JobSubmissionClient, or a one-line ConfigError naming the address key."""
    return jobs_api.connect(address, timeout_s, ADDRESS_KEY)


def _is_loopback(url: str) -> bool:
    host = url.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


def _redact_env(env: dict[str, Any]) -> dict[str, Any]:
    """runtime_env as recorded: secret-looking env var values are masked."""
    out = dict(env)
    if "env_vars" in out:
        out["env_vars"] = {k: "***" if _SECRET_NAMES.search(k) else v for k, v in out["env_vars"].items()}
    return out


def _redact_argv(cmd: list[str]) -> list[str]:
    """argv as recorded: the value after a flag whose last part is a secret (e.g. --logger.wandb.key) is masked."""
    out, mask_next = [], False
    for arg in cmd:
        if mask_next:
            out.append("***")
            mask_next = False
            continue
        flag, eq, _ = arg.partition("=")
        secret = arg.startswith("--") and _SECRET_FLAG.fullmatch(flag.rsplit(".", 1)[-1].lstrip("-")) is not None
        out.append(f"{flag}=***" if secret and eq else arg)
        mask_next = secret and not eq
    return out


def _write(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
