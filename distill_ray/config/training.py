"""Config of the training jobs (sft and, later, kd / advdistill / dpo / rm), documented field by field."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from distill_ray.config.section import Section


class TrainingConfig(Section):
    """Ray Train SFT settings (HF TrainingArguments names where they exist)."""

    num_train_epochs: float = Field(1, gt=0, description="Passes over the training rows.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps (overrides epochs).")
    learning_rate: float = Field(1e-4, gt=0, description="AdamW peak learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="Fraction of steps for linear warmup.")
    lr_scheduler_type: Literal["cosine", "linear", "constant"] = Field("cosine", description="LR schedule.")
    per_device_train_batch_size: int = Field(4, ge=1, description="Sequences per worker per micro-batch.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    max_length: int = Field(512, ge=8, description="Tokens per sequence (prompt + response), truncated.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient-norm clip.")
    num_workers: int = Field(2, ge=1, description="Ray Train workers (DDP over gloo on CPU).")
    cpus_per_worker: float = Field(0.5, gt=0, description="CPU share per worker (fractional avoids deadlocks).")
    use_gpu: bool = Field(False, description="Train on GPUs (NCCL) instead of CPU (gloo).")
    save_steps: int = Field(50, ge=1, description="Checkpoint every N optimizer steps (and at the end).")
    logging_steps: int = Field(1, ge=1, description="Report loss every N optimizer steps.")
    seed: int = Field(42, description="Seed for init, shuffling and dropout.")
