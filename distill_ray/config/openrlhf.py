"""Config of the OpenRLHF launcher (`job_type: grpo` with `training.grpo.engine: openrlhf`), for GPU clusters.

The grpo job's own knobs (group_size, max_new_tokens, temperature, top_p, beta, clip_epsilon), the shared
training ones (learning_rate, seed, save_steps, save_total_limit, logging_steps) and the dataset fields are mapped onto
OpenRLHF's flags by `jobs/train/openrlhf_launch.py`; this section holds only what OpenRLHF needs beyond them:
where to submit, the job's runtime_env, the GPU layout, DeepSpeed and batch shapes. See docs/openrlhf.md.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from distill_ray.config.section import Section

# The newest OpenRLHF release whose train_ppo_ray flags jobs/train/openrlhf_launch.py was written against.
OPENRLHF_PIP = "openrlhf[vllm]==0.11.2"


class OpenRLHFConfig(Section):
    """How the grpo job builds and submits `python -m openrlhf.cli.train_ppo_ray` as a Ray job."""

    # Where and how the job is submitted.
    address: str | None = Field(
        None, description="Ray Jobs API address of the GPU cluster (e.g. http://head:8265); default: $RAY_ADDRESS."
    )
    connect_timeout_s: float = Field(
        10.0, gt=0, description="How long to wait for the Jobs API to answer before giving up on the address."
    )
    submission_id: str | None = Field(
        None, description="Ray job submission id (must be unused on the cluster); None: Ray picks one."
    )
    wait: bool = Field(
        True,
        description="Wait for the job to finish, printing its status changes; a FAILED or STOPPED job fails the "
        "stage. False: the stage ends once the job is submitted.",
    )
    poll_interval_s: float = Field(10.0, gt=0, description="wait: seconds between two job status queries.")

    # The job's runtime_env on the cluster.
    pip: list[str] = Field(
        default_factory=lambda: [OPENRLHF_PIP],
        description="runtime_env pip packages installed for the job (empty: the cluster image already has "
        "OpenRLHF, vLLM and flash-attn, e.g. OpenRLHF's docker image).",
    )
    env_vars: dict[str, str] = Field(
        default_factory=dict, description="runtime_env environment variables of the job (e.g. NCCL_DEBUG, HF_HOME)."
    )
    working_dir: str | None = Field(
        None, description="runtime_env working_dir: a local folder (uploaded) or a remote URI; None: none."
    )

    # Models and GPU layout.
    pretrain: str | None = Field(
        None,
        description="Policy model as the cluster sees it (hub name or a path on the nodes); default: models.student.",
    )
    actor_num_nodes: int = Field(1, ge=1, description="Nodes of the policy (actor) model.")
    actor_num_gpus_per_node: int = Field(8, ge=1, description="GPUs per node of the policy model.")
    ref_num_nodes: int | None = Field(None, ge=1, description="Nodes of the frozen reference model; default: actor's.")
    ref_num_gpus_per_node: int | None = Field(
        None, ge=1, description="GPUs per node of the reference model; default: actor's."
    )
    vllm_num_engines: int = Field(8, ge=1, description="vLLM engines generating the rollouts.")
    vllm_tensor_parallel_size: int = Field(1, ge=1, description="GPUs per vLLM engine (tensor parallel).")
    vllm_gpu_memory_utilization: float = Field(
        0.6, gt=0, le=1, description="Share of each GPU's memory vLLM may take (keep it low when colocated)."
    )
    colocate: Literal["all", "actor_ref", "none"] = Field(
        "all",
        description="`all`: actor, reference and vLLM share the same GPUs (vLLM and DeepSpeed sleep in turn; "
        "needs actor GPUs == vllm_num_engines * vllm_tensor_parallel_size); `actor_ref`: actor and reference "
        "share GPUs, vLLM has its own; `none`: every model on its own GPUs.",
    )

    # DeepSpeed.
    zero_stage: Literal[0, 1, 2, 3] = Field(3, description="DeepSpeed ZeRO stage of actor and reference.")
    bf16: bool = Field(True, description="Train in bfloat16 (False: float16).")
    gradient_checkpointing: bool = Field(True, description="Recompute activations in the backward pass.")

    # Batch shapes and schedule.
    rollout_batch_size: int = Field(128, ge=1, description="Prompts per rollout (each gets group_size responses).")
    micro_rollout_batch_size: int = Field(
        16, ge=1, description="Responses per GPU per forward pass when scoring rollouts (log-probs)."
    )
    train_batch_size: int | None = Field(
        None,
        ge=1,
        description="Responses per policy update; default: rollout_batch_size * group_size (one update per rollout).",
    )
    micro_train_batch_size: int = Field(4, ge=1, description="Responses per GPU per training micro-batch.")
    max_epochs: int = Field(1, ge=1, description="Passes over each rollout's responses.")
    num_episodes: int = Field(1, ge=1, description="Passes over the prompt dataset.")
    prompt_max_len: int = Field(
        1024, ge=1, description="Prompt tokens; OpenRLHF's max_len is this plus grpo.max_new_tokens."
    )

    # Outputs.
    save_path: str | None = Field(
        None,
        description="Where the trained policy is saved, as the cluster's nodes see it (checkpoints go to "
        "<save_path>/checkpoints); default: <stage output folder>/model, right when submitting from the head "
        "node or from shared storage.",
    )
    extra_args: list[str] = Field(
        default_factory=list,
        description="More train_ppo_ray arguments, appended verbatim (e.g. ['--logger.wandb.key', 'KEY']).",
    )

    @model_validator(mode="after")
    def _layout(self):
        actor = (self.actor_num_nodes, self.actor_num_gpus_per_node)
        ref = (self.ref_num_nodes or actor[0], self.ref_num_gpus_per_node or actor[1])
        if self.colocate != "none" and ref != actor:
            raise ValueError(f"colocate '{self.colocate}' needs the reference layout {ref} to be the actor's {actor}")
        if self.colocate == "all":
            vllm_gpus = self.vllm_num_engines * self.vllm_tensor_parallel_size
            if vllm_gpus != actor[0] * actor[1]:
                raise ValueError(
                    f"colocate 'all' needs vllm_num_engines * vllm_tensor_parallel_size ({vllm_gpus}) to equal "
                    f"actor_num_nodes * actor_num_gpus_per_node ({actor[0] * actor[1]})"
                )
        return self
