"""Config of the training jobs (sft, logits, kd, advdistill, dpo, rm, grpo, opd), documented field by field.

`TrainingConfig` holds what every Ray Train job shares (optimizer, schedule, batch shape, workers,
checkpoints); each job's own knobs live in a sub-section named after it (`training.kd`,
`training.advdistill`, `training.dpo`, `training.reward_model`, `training.grpo`, `training.opd`), and `training.curriculum` turns an
sft job into ordered stages. How the student is trained rather than what it learns sits beside them:
`training.lora` (low-rank adapters through peft, for every trainer) and `training.report_to` (experiment trackers,
written by rank 0); docs/training.md describes both. Defaults follow METHODS.md where the papers give a value.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import Field, ValidationInfo, field_validator, model_validator

from distill_ray.config.openrlhf import OpenRLHFConfig
from distill_ray.config.section import Section


class KDConfig(Section):
    """White-box KD (`logits` + `kd` jobs): the teacher's top-k log-probs per response token, stored once,
    then a divergence on those k entries mixed with cross-entropy (METHODS.md section 2)."""

    loss: Literal["forward_kl", "reverse_kl", "jsd"] = Field(
        "forward_kl", description="Divergence: KL(teacher||student), KL(student||teacher) or generalised JSD."
    )
    beta: float = Field(0.5, gt=0, lt=1, description="jsd only: weight of the teacher in the mixture (0.5 = symmetric).")
    tail: Literal["bucket", "renormalize", "ignore"] = Field(
        "bucket",
        description="The teacher mass outside its top-k: `bucket` compares k+1 outcomes (the k ids plus one 'rest' "
        "bucket); `renormalize` restricts both models to the k ids; `ignore` uses the k probs as stored "
        "(forward_kl only).",
    )
    top_k: int = Field(20, ge=1, description="Teacher log-probs stored per response token (logits job).")
    kd_ratio: float = Field(0.5, ge=0, le=1, description="Loss = kd_ratio * KD + (1 - kd_ratio) * cross-entropy.")
    temperature: float = Field(1.0, gt=0, description="Divides the student logits inside the KD term.")
    chunk_tokens: int = Field(
        1024, ge=1, description="Tokens whose full-vocabulary logits exist at once (memory bound of the KD loss)."
    )
    logits_path: str | None = Field(
        None, description="Folder of logits shards the kd job reads (the logits job writes `<stage>/logits`)."
    )
    logprob_dtype: Literal["float16", "float32"] = Field(
        "float16", description="Storage type of the top-k log-probs (float16: 6 bytes per entry with its int32 id)."
    )
    extract_batch_size: int = Field(4, ge=1, description="Rows per teacher forward pass in the logits job.")
    extract_concurrency: int = Field(1, ge=1, description="Teacher copies extracting logits at once (Ray Data actors, each with "
                                      "training.cpus_per_worker CPUs, or one GPU with use_gpu).")
    check_rows: int = Field(
        32, ge=1, description="kd: rows re-tokenized with the student tokenizer to prove it matches the teacher's."
    )

    @model_validator(mode="after")
    def _tail_fits_loss(self):
        if self.tail == "ignore" and self.loss != "forward_kl":
            raise ValueError("tail 'ignore' is only defined for loss 'forward_kl'")
        return self


class AdvDistillConfig(Section):
    """AdvDistill stage 2 (METHODS.md section 3): L = sum_i softmax(A/tau)_i CE_i + lam * sum_{i wrong} C_i,
    one problem's group of responses per micro-batch (per_device_train_batch_size is ignored)."""

    mode: Literal["advdistill", "sft_best"] = Field(
        "advdistill",
        description="`advdistill`: the group loss; `sft_best`: the paper's baseline, plain SFT on each group's "
        "highest-advantage response.",
    )
    tau: float = Field(0.5, gt=0, description="Temperature of the advantage softmax that weighs the responses.")
    lam: float = Field(0.5, ge=0, description="Weight (lambda) of the contrastive penalty on wrong responses.")
    p_max: float = Field(0.99, gt=0, lt=1, description="Cap of a wrong response's mean token probability in C_i.")
    normalize: Literal["response", "token"] = Field(
        "response",
        description="How the cross-entropy counts tokens. `response` (the paper's): CE_i is the mean over reply i's "
        "tokens and the step averages groups, so every reply weighs the same; `token`: the step's weighted token "
        "losses over its weighted token count (SFT's per-token mean; the penalty scaled to keep its share). Not in "
        "the paper; docs/training.md has why it exists.",
    )


class DPOConfig(Section):
    """Preference training on (problem, chosen, rejected) pairs against a frozen reference model."""

    loss: Literal["sigmoid", "cogpo"] = Field(
        "sigmoid",
        description="`sigmoid`: DPO with one beta; `cogpo`: each pair's own `beta` column (null -> dpo.beta).",
    )
    beta: float = Field(0.1, gt=0, description="Strength of the KL anchor to the reference model.")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="Assumed chance that a pair's label is flipped.")
    reference_model: str | None = Field(
        None, description="Frozen reference model spec (default: models.student, the policy's starting point)."
    )


class RewardModelConfig(Section):
    """Reward-model training (`rm` job): a scalar head on models.student (a sequence-classification model
    with one label), saved in HF format with `distill_ray_reward.json` describing its output."""

    objective: Literal["pointwise", "pairwise"] = Field(
        "pointwise",
        description="`pointwise`: regress a judge score (DistilQwen RV / CD regressors); `pairwise`: "
        "Bradley-Terry on preference pairs.",
    )
    target: Literal["rv", "cd"] = Field("rv", description="pointwise: the judged-CoT column to regress.")
    score_low: float = Field(0.0, description="pointwise: lowest judge score (maps to 0).")
    score_high: float = Field(9.0, description="pointwise: highest judge score (maps to 1).")

    @model_validator(mode="after")
    def _range(self):
        if self.score_high <= self.score_low:
            raise ValueError("score_high must be greater than score_low")
        return self


class GRPOConfig(Section):
    """GRPO (`grpo` job): G rollouts per prompt from the policy, rewards from the reward service over HTTP
    (`reward` section), group-normalised advantages, a clipped policy-gradient loss and a KL penalty to the
    frozen start model (METHODS.md section 1; DeepSeekMath's GRPO with one policy update per rollout)."""

    engine: Literal["transformers", "openrlhf"] = Field(
        "transformers",
        description="`transformers`: Ray Train workers roll out with HF generate (CPU or GPU); `openrlhf`: "
        "submit OpenRLHF's train_ppo_ray (vLLM rollouts, GPU clusters) as a Ray job.",
    )
    group_size: int = Field(4, ge=2, description="G: rollouts per prompt (advantages are relative within them).")
    max_new_tokens: int = Field(64, ge=1, description="Tokens per rollout.")
    temperature: float = Field(1.0, gt=0, description="Rollout sampling temperature.")
    top_p: float = Field(1.0, gt=0, le=1, description="Rollout nucleus sampling threshold.")
    beta: float = Field(0.04, ge=0, description="Weight of the KL penalty to the reference (k3 estimator).")
    clip_epsilon: float = Field(0.2, gt=0, lt=1, description="PPO ratio clip: [1 - eps, 1 + eps].")
    advantage_eps: float = Field(1e-6, gt=0, description="eps in A = (r - mean) / (std + eps).")
    eval_steps: int = Field(0, ge=0, description="Evaluate every N steps (and at the end) on eval prompts; 0: never.")
    eval_path: str | None = Field(
        None, description="Eval prompts (a source spec, as dataset.instruction_path); default: the training prompts."
    )
    eval_limit: int = Field(16, ge=1, description="Eval prompts used (greedy, one rollout each).")
    openrlhf: OpenRLHFConfig = Field(default_factory=OpenRLHFConfig, description="engine=openrlhf only.")


class OPDConfig(Section):
    """On-policy distillation (`opd` job, issue 18): G rollouts per prompt from the student, every sampled
    token scored by the teacher service (its log-probabilities over the student's exact token ids), and one
    of the `distill_ray.losses.opd` objectives; optionally mixed with task rewards from the reward service."""

    loss: Literal["reverse_kl", "forward_kl", "jsd"] = Field(
        "reverse_kl",
        description="`reverse_kl`: log p_teacher - log p_student of each sampled token as its advantage, with "
        "a clipped policy gradient (the form of the public on-policy distillation reports); `forward_kl` / "
        "`jsd`: GKD's divergences over the teacher's top-k with a tail bucket at every sampled position.",
    )
    group_size: int = Field(2, ge=1, description="G: rollouts sampled per prompt per step.")
    max_new_tokens: int = Field(64, ge=1, description="Tokens per rollout.")
    temperature: float = Field(1.0, gt=0, description="Rollout sampling temperature (teacher scoring is at 1).")
    top_p: float = Field(1.0, gt=0, le=1, description="Rollout nucleus sampling threshold.")
    top_k: int = Field(
        20, ge=1, le=20, description="Teacher alternatives per position for forward_kl / jsd (the API allows 20)."
    )
    jsd_beta: float = Field(0.5, gt=0, lt=1, description="Teacher weight of the generalised JSD (loss=jsd).")
    clip_epsilon: float = Field(0.2, gt=0, lt=1, description="PPO ratio clip of the reverse_kl update.")
    reward_weight: float = Field(
        0.0, ge=0, description="Weight of the task-reward advantage (reward service, as grpo) added per token; 0: off."
    )
    eval_steps: int = Field(0, ge=0, description="Evaluate every N steps (and at the end) on eval prompts; 0: never.")
    eval_path: str | None = Field(
        None, description="Held-out eval prompts (a source spec, as dataset.instruction_path); default: the training "
        "prompts.",
    )
    eval_limit: int = Field(16, ge=1, description="Eval prompts (group_size sampled rollouts each, fixed seed).")

    @model_validator(mode="after")
    def _reward_needs_reverse_kl(self):
        if self.reward_weight > 0 and self.loss != "reverse_kl":
            raise ValueError("reward_weight adds a task-reward advantage to the reverse_kl policy gradient; "
                             f"loss '{self.loss}' has no advantage to add it to")
        return self


class CurriculumStage(Section):
    """One stage of curriculum SFT: its rows (a file and/or a difficulty filter) and how long to train on them."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Label in logs, metrics and trainer state.")
    labeled_path: str | None = Field(None, description="Rows of this stage (default: dataset.labeled_path).")
    difficulty: list[str] | None = Field(
        None, description="Keep rows whose `difficulty` column is one of these (e.g. [medium, hard]); None: all."
    )
    num_train_epochs: float | None = Field(None, gt=0, description="Passes over this stage's rows (default: training's).")
    max_steps: int | None = Field(None, ge=1, description="Optimizer steps of this stage (overrides its epochs).")


Tracker = Literal["tensorboard", "wandb", "mlflow"]
TRACKERS: tuple[str, ...] = get_args(Tracker)
ALL_LINEAR = "all-linear"


class LoRAConfig(Section):
    """Low-rank adapters (LoRA, through `peft`) instead of full fine-tuning, for every trainer (sft, kd, advdistill,
    dpo, rm, grpo, opd). The student's weights stay frozen; only the adapters (and, for `rm`, the new score head)
    train, so the optimizer holds state for a fraction of the parameters. Checkpoints hold the adapter and its
    optimizer state (`checkpoints/step_N/adapter/`); at the end the job writes the adapter to `<stage>/adapter/`
    and the adapter merged into the student to `<stage>/model/` (safetensors + tokenizer), the folder the teacher
    service, the reward service and eval load. Frozen references (dpo, grpo) stay the unadapted model."""

    r: int = Field(16, ge=1, description="Rank of each adapter: the inner width of its two low-rank matrices.")
    alpha: float = Field(
        32.0, gt=0, description="Scaling numerator: an adapter's update is multiplied by alpha / r (peft's lora_alpha)."
    )
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on an adapter's input while training.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        ALL_LINEAR,
        description="Layers that get an adapter: `all-linear` (every linear layer but the output head), or a list "
        "of layer names matched against the end of each module's path (`q_proj` matches "
        "`model.layers.0.self_attn.q_proj`). Every name must match at least one linear, embedding or convolution "
        "layer of models.student (checked before training starts).",
    )

    @field_validator("target_modules", mode="before")
    @classmethod
    def _one_name(cls, value):
        return [value] if isinstance(value, str) and value != ALL_LINEAR else value  # `target_modules: q_proj`

    @field_validator("target_modules")
    @classmethod
    def _names(cls, value):
        if isinstance(value, list):
            if not value:
                raise ValueError(f"give at least one layer name, or '{ALL_LINEAR}'")
            blank = [v for v in value if not v.strip()]
            if blank:
                raise ValueError("layer names must not be empty")
            value = list(dict.fromkeys(v.strip() for v in value))
        return value


class TrainingConfig(Section):
    """Ray Train settings shared by the trainer jobs (HF TrainingArguments names where they exist),
    plus one sub-section per job type."""

    num_train_epochs: float = Field(1, gt=0, description="Passes over the training rows.")
    max_steps: int | None = Field(
        None, ge=1, description="Stop after this many optimizer steps (overrides epochs; caps a curriculum)."
    )
    learning_rate: float = Field(1e-4, gt=0, description="AdamW peak learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="Fraction of steps for linear warmup.")
    lr_scheduler_type: Literal["cosine", "linear", "constant"] = Field("cosine", description="LR schedule.")
    per_device_train_batch_size: int = Field(
        4, ge=1, description="Sequences (sft, kd, rm pointwise) or pairs (dpo, rm pairwise) per worker per micro-batch."
    )
    gradient_accumulation_steps: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    max_length: int = Field(512, ge=8, description="Tokens per sequence (prompt + response), truncated.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient-norm clip.")
    num_workers: int = Field(2, ge=1, description="Ray Train workers (over gloo on CPU, NCCL on GPU).")
    cpus_per_worker: float = Field(0.5, gt=0, description="CPU share per worker (fractional avoids deadlocks).")
    use_gpu: bool = Field(False, description="Train on GPUs (NCCL) instead of CPU (gloo).")
    save_steps: int = Field(50, ge=1, description="Checkpoint every N optimizer steps (and at the end).")
    save_total_limit: int | None = Field(
        None, ge=1, description="Keep at most this many checkpoints (`<stage>/checkpoints/step_N`): after each save "
        "the oldest beyond it are deleted, as transformers' `TrainingArguments.save_total_limit` does. A resume "
        "needs only the newest. A checkpoint holds the weights and the Adam state: 3x the model's fp32 size, or "
        "about 14 bytes per parameter under DeepSpeed bf16 (about 100 GB for 7B): set it on long runs. Unset: "
        "every checkpoint is kept. Under OpenRLHF it is `--ckpt.max_num` (unset: OpenRLHF's own default, 3); "
        "OpenRLHF deletes the oldest before it saves, so keep at least 2 there.",
    )  # fmt: skip
    max_failures: int = Field(
        3, ge=-1, description="Times Ray Train restarts the workers after one dies (a crash, a lost node) before "
        "the stage fails; each restart resumes from the newest complete checkpoint, so at most save_steps steps "
        "are redone. -1: no limit; 0: fail at once (re-running the command still resumes).",
    )  # fmt: skip
    logging_steps: int = Field(1, ge=1, description="Report loss every N optimizer steps.")
    seed: int = Field(42, description="Seed for init, shuffling and dropout.")
    kd: KDConfig = Field(default_factory=KDConfig, description="White-box KD: logits extraction and the kd loss.")
    advdistill: AdvDistillConfig = Field(default_factory=AdvDistillConfig, description="AdvDistill group loss.")
    dpo: DPOConfig = Field(default_factory=DPOConfig, description="DPO / CogPO on preference pairs.")
    reward_model: RewardModelConfig = Field(default_factory=RewardModelConfig, description="Reward-model training.")
    grpo: GRPOConfig = Field(default_factory=GRPOConfig, description="GRPO with rewards from the reward service.")
    opd: OPDConfig = Field(default_factory=OPDConfig, description="On-policy distillation from the teacher service.")
    curriculum: list[CurriculumStage] = Field(
        default_factory=list,
        description="sft: ordered stages trained in one run (one model, one optimizer and LR schedule), "
        "e.g. medium CoTs for 3 epochs, then medium + hard. Empty: plain SFT on dataset.labeled_path.",
    )
    lora: LoRAConfig | None = Field(
        None,
        description="Train low-rank adapters through peft instead of every weight (a mapping turns it on: "
        "`lora: {r: 16}`; unset: full fine-tuning). See docs/training.md.",
    )
    report_to: list[Tracker] = Field(
        default_factory=list,
        description="Experiment trackers rank 0 writes the training metrics to (`train/loss`, `train/lr`, "
        "`train/grad_norm`, `train/tokens_per_s`, each objective's own as `train/<name>`, evaluations as "
        "`eval/<name>`) every logging_steps: `tensorboard` (<run>/tensorboard/<stage>/), `wandb` (offline run under "
        "<run>/wandb/ unless WANDB_MODE says otherwise), `mlflow` (a file store in <run>/mlruns unless "
        "MLFLOW_TRACKING_URI is set). Empty: nothing is written or sent. wandb and mlflow need "
        "`pip install 'distill-ray[tracking]'`.",
    )
    strategy: Literal["ddp", "deepspeed"] = Field(
        "ddp",
        description="How the workers share the training: `ddp` = every worker holds the whole model, its gradients "
        "and AdamW state (16 bytes a parameter in fp32), gradients all-reduced; `deepspeed` = DeepSpeed ZeRO "
        "(stage `zero_stage`) partitions the optimizer state and gradients (stage 2) and the weights too (stage 3) "
        "over the workers, so a student that does not fit one device trains on several. Checkpoints are then "
        "DeepSpeed's sharded ones; the final model is consolidated into one HF folder. Needs "
        "`pip install deepspeed` (docs/training.md, 'Sharded training').",
    )
    zero_stage: Literal[2, 3] = Field(
        3,
        description="strategy: deepspeed: the ZeRO stage. 2 shards optimizer state and gradients (every worker keeps "
        "all weights: every trainer); 3 shards the weights too (sft, advdistill, dpo, rm; kd reads the output "
        "layer's weight outside the forward pass and grpo/opd generate on rank 0 alone, so those need stage 2). A "
        "`zero_optimization.stage` in training.deepspeed wins over this key.",
    )
    deepspeed: dict[str, Any] | str | None = Field(
        None,
        description="strategy: deepspeed: your own DeepSpeed config (a mapping, or a JSON file path) merged over "
        "the one built from training.* (ZeRO stage, micro-batch size, gradient accumulation, clipping, bf16); "
        "your keys win, e.g. `zero_optimization: {offload_optimizer: {device: cpu}}`. `auto` values are filled in. "
        "Batch sizes, gradient_accumulation_steps and gradient_clipping must agree with training.*, and "
        "`optimizer` / `scheduler` are refused: the trainers own AdamW and the LR schedule.",
    )
    mixed_precision: Literal["auto", "bf16", "no"] = Field(
        "auto",
        description="Compute dtype of forward and backward: `bf16` (autocast under ddp; DeepSpeed's bf16 mode, "
        "fp32 master weights in the optimizer, under deepspeed), `no` = fp32, `auto` = bf16 when use_gpu, else "
        "fp32.",
    )
    gradient_checkpointing: bool = Field(
        False,
        description="Activation checkpointing: keep only each layer's inputs and recompute the rest in backward "
        "(about a third more compute for a fraction of the activation memory; for long CoTs on big students).",
    )

    @field_validator("report_to", mode="before")
    @classmethod
    def _one_tracker_or_many(cls, value):
        if isinstance(value, str):  # `report_to: tensorboard`, `--set training.report_to=wandb`
            value = [] if value == "none" else [value]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            value = list(dict.fromkeys(value))  # a repeated name is one tracker
        return value

    @field_validator("deepspeed")
    @classmethod
    def _deepspeed_needs_strategy(cls, value, info: ValidationInfo):
        if value is not None and info.data.get("strategy") == "ddp":  # strategy is declared (so validated) first
            raise ValueError("a DeepSpeed config is only used with training.strategy: deepspeed; set that, or "
                             "remove this key")  # fmt: skip
        return value

    @model_validator(mode="after")
    def _curriculum_names_unique(self):
        names = [s.name for s in self.curriculum]
        if len(names) != len(set(names)):
            raise ValueError("curriculum stage names must be unique")
        return self
