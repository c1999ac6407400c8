"""DeepSpeed ZeRO for the Ray Train loop (`training.strategy: deepspeed`): the config, the engine and its checkpoints.

Where it sits: `jobs/train/loop.py` calls these on every worker when the strategy is `deepspeed`; the driver calls
`deepspeed_config` and `check_objective` first, so a bad config fails before any worker starts. Ray Train has
already set up torch.distributed (gloo on CPU, NCCL on GPU); DeepSpeed joins that process group.

What ZeRO partitions over the N workers (Rajbhandari et al. 2020, "ZeRO: Memory Optimizations Toward Training
Trillion Parameter Models", section 5): stage 2 the optimizer state (fp32 master weights, AdamW's two moments) and
the gradients, so a worker holds the weights plus about 14/N bytes a parameter; stage 3 the weights too, gathered
layer by layer for each forward and backward, about 16/N bytes a parameter.

The loop keeps its own accumulation and loss normalisation (each micro-batch's loss is already divided by the
whole step's units; see the loop's docstring), so `backward` is called with `scale_wrt_gas=False`, and AdamW and
the LR schedule are the trainers' own, handed to DeepSpeed as client objects.

Checkpoints: every worker writes its shard with DeepSpeed's `save_checkpoint` into `step_N/deepspeed/` (tag
`state`); the loop's own state and the tokenizer sit beside it. DeepSpeed also copies its `zero_to_fp32.py` there,
which consolidates a checkpoint offline. A sharded checkpoint resumes with the same number of workers (DeepSpeed's
universal-checkpoint conversion, `ds_to_universal`, is the route to another count). The final model is gathered
into one HF folder: under stage 3 through `_zero3_consolidated_16bit_state_dict` (a DeepSpeed engine method
without a public twin that returns a state dict; `save_16bit_model` writes a .bin, not the safetensors HF folder
the teacher service and vLLM load).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from distill_ray.errors import ConfigError

CHECKPOINT_DIR = "deepspeed"  # inside step_N/
TAG = "state"
# Keys of a DeepSpeed config that training.* owns: the value they must have, and the training key to change.
OWNED = {
    "train_micro_batch_size_per_gpu": "per_device_train_batch_size",
    "gradient_accumulation_steps": "gradient_accumulation_steps",
    "gradient_clipping": "max_grad_norm",
}
REFUSED = {
    "optimizer": "the trainers own AdamW: set training.learning_rate and training.weight_decay",
    "scheduler": "the trainers own the LR schedule: set training.lr_scheduler_type and training.warmup_ratio",
    "fp16": "fp16 needs loss scaling the loop does not do; use training.mixed_precision: bf16",
}
# Objectives that cannot run under stage 3, and why (they touch whole weights outside a forward pass of all ranks).
STAGE3_UNSUPPORTED = {
    "kd": "kd multiplies the output layer's weight outside the model's forward pass, and stage 3 partitions it",
    "grpo": "grpo generates rollouts with HF generate and evaluates on rank 0 alone; stage 3 needs every rank in "
    "every forward pass",
    "opd": "opd generates rollouts with HF generate and evaluates on rank 0 alone; stage 3 needs every rank in "
    "every forward pass",
}


def use_bf16(training) -> bool:
    """training.mixed_precision resolved: `auto` is bf16 on GPU, fp32 on CPU."""
    mode = training.mixed_precision
    return mode == "bf16" or (mode == "auto" and training.use_gpu)


def deepspeed_config(training) -> dict[str, Any]:
    """The DeepSpeed config for `training` (a TrainingConfig): ours from training.*, with the user's
    training.deepspeed merged over it (theirs wins, `auto` values take ours).

    Raises ConfigError (key `training.deepspeed...`) for a file that does not load, a key that disagrees with the
    training.* key owning it, or a refused section (REFUSED)."""
    user = _user_config(training.deepspeed)
    ours: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": training.per_device_train_batch_size,
        "gradient_accumulation_steps": training.gradient_accumulation_steps,
        "gradient_clipping": training.max_grad_norm,
        "zero_optimization": {
            "stage": training.zero_stage,
            "overlap_comm": training.use_gpu,
            "contiguous_gradients": True,
            "reduce_bucket_size": 5e7,
            "stage3_gather_16bit_weights_on_model_save": True,
        },
        "bf16": {"enabled": use_bf16(training)},
        "zero_allow_untested_optimizer": True,  # torch's AdamW, handed over as a client optimizer
        "steps_per_print": 10**9,  # the loop logs; DeepSpeed's own step lines would repeat it on every rank
        "wall_clock_breakdown": False,
    }
    for key, reason in REFUSED.items():
        if key in user and not (key == "fp16" and not _enabled(user[key])):
            raise ConfigError(f"training.deepspeed.{key}", reason)
    for key, owner in OWNED.items():
        value = user.get(key, "auto")
        if value != "auto" and value != ours[key]:
            raise ConfigError(f"training.deepspeed.{key}", f"{value!r} disagrees with training.{owner} "
                              f"({ours[key]!r}); set training.{owner} instead")  # fmt: skip
    for key in ("train_batch_size",):
        if user.get(key, "auto") != "auto":
            raise ConfigError(f"training.deepspeed.{key}", "it follows from training.per_device_train_batch_size x "
                              "gradient_accumulation_steps x num_workers; set those instead")  # fmt: skip
    merged = _merge(ours, user)
    merged.pop("train_batch_size", None)
    return merged


def zero_stage(config: dict[str, Any]) -> int:
    return int(config.get("zero_optimization", {}).get("stage", 0))


def check_objective(job_type: str, config: dict[str, Any], lora: bool) -> None:
    """ConfigError when `job_type` (or LoRA) cannot train under the config's ZeRO stage."""
    if zero_stage(config) != 3:
        return
    if job_type in STAGE3_UNSUPPORTED:
        raise ConfigError("training.zero_stage", f"{STAGE3_UNSUPPORTED[job_type]}; use zero_stage: 2")
    if lora:
        raise ConfigError("training.zero_stage", "LoRA with stage 3 is not wired in (merging needs the gathered "
                          "base weights); use zero_stage: 2, which already shards the adapters' optimizer state")  # fmt: skip


def _user_config(value: dict | str | None) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return copy.deepcopy(value)
    path = Path(value).expanduser()
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError("training.deepspeed", f"cannot read the DeepSpeed config {path}: {exc}") from exc
    if not isinstance(loaded, dict):
        raise ConfigError("training.deepspeed", f"{path} holds a {type(loaded).__name__}, not a JSON object")
    return loaded


def _enabled(section: Any) -> bool:
    return isinstance(section, dict) and section.get("enabled") not in (False, "false", None)


def _merge(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """`theirs` over `ours`, one level of mappings deep at a time; an `auto` of theirs keeps ours."""
    out = dict(ours)
    for key, value in theirs.items():
        if value == "auto" and key in ours:
            continue
        if isinstance(value, dict) and isinstance(ours.get(key), dict):
            out[key] = _merge(ours[key], value)
        elif value != "auto":
            out[key] = value
    return out


# ----------------------------------------------------------------------------- worker side


def zero3_init(config: dict[str, Any]):
    """For stage 3, transformers' handle that makes `from_pretrained` build the model already partitioned
    (`deepspeed.zero.Init`); the caller keeps it alive while loading. None for stage 2."""
    if zero_stage(config) != 3:
        return None
    from transformers.integrations.deepspeed import HfDeepSpeedConfig

    return HfDeepSpeedConfig(config)


def initialize(model, optimizer, scheduler, config: dict[str, Any]):
    """The DeepSpeed engine around `model`, with the loop's AdamW and LR scheduler as client objects."""
    import deepspeed

    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config=config,
                                           dist_init_required=False)  # fmt: skip
    return engine


def frozen(model, config: dict[str, Any]):
    """A frozen model (a DPO/GRPO reference) placed like the trained one: partitioned by a stage-3 engine without
    optimizer under stage 3; as it is (the caller moves it) otherwise."""
    if zero_stage(config) != 3:
        return model
    import deepspeed

    inference = {k: v for k, v in config.items() if k not in ("gradient_accumulation_steps", "gradient_clipping")}
    engine, *_ = deepspeed.initialize(model=model, config=inference, dist_init_required=False)
    engine.eval()
    return engine


def save(engine, folder: Path) -> None:
    """Every worker writes its shard of weights, optimizer and scheduler to `folder` (collective)."""
    engine.save_checkpoint(str(folder), tag=TAG, save_latest=False)


def load(engine, folder: Path) -> None:
    """Every worker loads its shard back (collective); raises ConfigError when the shards do not fit this run."""
    try:
        path, _ = engine.load_checkpoint(str(folder), tag=TAG, load_optimizer_states=True,
                                         load_lr_scheduler_states=True)  # fmt: skip
    except (AssertionError, RuntimeError, FileNotFoundError) as exc:
        raise ConfigError("training.num_workers", f"the ZeRO checkpoint in {folder} does not load into this run "
                          f"({exc}); resume with the worker count that wrote it") from exc  # fmt: skip
    if path is None:
        raise ConfigError("training.num_workers", f"no ZeRO checkpoint found in {folder}")


def consolidated_state_dict(engine) -> dict | None:
    """The full weights of a stage-3 engine on rank 0 (None elsewhere; collective). None for stage 2 too, where
    every worker's `engine.module` already holds them all."""
    if engine.zero_optimization_stage() != 3:
        return None
    return engine._zero3_consolidated_16bit_state_dict()
