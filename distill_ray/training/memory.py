"""Analytic per-GPU training memory of a student under each training.strategy: weights, gradients, optimizer state.

Where it sits: `benchmarks/train_memory.py` prints these figures for a 1.5B and a 7B student on 8 GPUs next to what
it measures on this box; docs and capacity planning can call `per_gpu_bytes` directly. Nothing here imports torch.

The accounting is the ZeRO paper's (Rajbhandari et al. 2020, "ZeRO: Memory Optimizations Toward Training Trillion
Parameter Models", section 3.1 for the model states, section 5 for what each stage partitions). Mixed-precision
Adam over Ψ parameters holds 2Ψ bytes of bf16 weights, 2Ψ bytes of bf16 gradients and KΨ bytes of optimizer state,
K = 12 (an fp32 master copy and Adam's two fp32 moments, 4 + 4 + 4 bytes a parameter): 16Ψ in all. On N GPUs:

- ddp: every GPU holds all three, 2Ψ + 2Ψ + 12Ψ.
- zero2 (P_os+g): optimizer state and gradients partitioned, 2Ψ + (2 + 12)Ψ / N.
- zero3 (P_os+g+p): the weights too, (2 + 2 + 12)Ψ / N.
- lora (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models"): the base weights are frozen (2Ψ
  bf16, no gradient, no optimizer state); only the adapters' Φ = fΨ parameters train, each with the full
  2 + 2 + 12 bytes, replicated as under DDP. `lora_parameters` gives Φ for adapters of rank r on every linear layer
  of a Llama/Qwen-style decoder; its ratio to Ψ is the trainable fraction f.
- zero2_lora: LoRA under ZeRO-2, the adapters' gradients and optimizer state partitioned over the N GPUs.

Left out: activations (they depend on batch, sequence length and gradient checkpointing, not on the strategy), the
temporary buffers (DDP's gradient buckets, ZeRO-3's gathered layer, communication buckets), fragmentation and the
CUDA context. The figures are a floor on what a GPU needs, not a prediction of its peak.
"""

from __future__ import annotations

from dataclasses import dataclass

WEIGHT_BYTES = 2  # bf16 working weights
GRAD_BYTES = 2  # bf16 gradients
OPTIMIZER_BYTES = 12  # K: fp32 master weight + Adam's first and second moments, 4 bytes each
STRATEGIES = ("ddp", "zero2", "zero3", "lora", "zero2_lora")
GB = 1e9


@dataclass(frozen=True)
class PerGPU:
    """Bytes one GPU holds for the model states."""

    weights: float
    gradients: float
    optimizer: float

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer


def per_gpu_bytes(params: float, gpus: int, strategy: str, trainable_fraction: float | None = None) -> PerGPU:
    """Model-state bytes per GPU for `params` parameters trained on `gpus` GPUs with bf16 mixed-precision AdamW.

    `trainable_fraction` (LoRA strategies only, required there): adapter parameters over base parameters.
    Raises ValueError for an unknown strategy, a non-positive size or a missing/invalid fraction."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r} (known: {', '.join(STRATEGIES)})")
    if params <= 0 or gpus < 1:
        raise ValueError("params must be positive and gpus at least 1")
    lora = strategy in ("lora", "zero2_lora")
    if lora != (trainable_fraction is not None):
        raise ValueError("trainable_fraction is given for the LoRA strategies, and only for them")
    if lora and not 0 < trainable_fraction <= 1:
        raise ValueError("trainable_fraction must be in (0, 1]")
    if strategy == "ddp":
        return PerGPU(WEIGHT_BYTES * params, GRAD_BYTES * params, OPTIMIZER_BYTES * params)
    if strategy == "zero2":
        return PerGPU(WEIGHT_BYTES * params, GRAD_BYTES * params / gpus, OPTIMIZER_BYTES * params / gpus)
    if strategy == "zero3":
        return PerGPU(WEIGHT_BYTES * params / gpus, GRAD_BYTES * params / gpus, OPTIMIZER_BYTES * params / gpus)
    adapters = trainable_fraction * params
    shards = gpus if strategy == "zero2_lora" else 1
    return PerGPU(WEIGHT_BYTES * (params + adapters), GRAD_BYTES * adapters / shards,
                  OPTIMIZER_BYTES * adapters / shards)  # fmt: skip


def lora_parameters(hidden: int, intermediate: int, kv_dim: int, layers: int, r: int) -> int:
    """Adapter parameters of rank `r` on every linear layer of a Llama/Qwen-style decoder (q, k, v, o, gate, up,
    down; not the output head): each adapted `in x out` layer gets A (r x in) and B (out x r), r(in + out)."""
    shapes = [(hidden, hidden), (hidden, kv_dim), (hidden, kv_dim), (hidden, hidden),
              (hidden, intermediate), (hidden, intermediate), (intermediate, hidden)]  # fmt: skip
    return layers * sum(r * (fan_in + fan_out) for fan_in, fan_out in shapes)


# Students the benchmark tabulates: parameter count and decoder shape (config.json of each model).
STUDENTS = {
    "1.5B (Qwen2.5-1.5B)": {"params": 1.54e9, "hidden": 1536, "intermediate": 8960, "kv_dim": 256, "layers": 28},
    "7B (Qwen2.5-7B)": {"params": 7.6e9, "hidden": 3584, "intermediate": 18944, "kv_dim": 512, "layers": 28},
}


def student_table(gpus: int = 8, r: int = 16) -> list[dict]:
    """One row per (student, strategy): GB per GPU of weights, gradients, optimizer state and their total."""
    rows = []
    for name, s in STUDENTS.items():
        fraction = lora_parameters(s["hidden"], s["intermediate"], s["kv_dim"], s["layers"], r) / s["params"]
        for strategy in STRATEGIES:
            b = per_gpu_bytes(s["params"], gpus, strategy, fraction if "lora" in strategy else None)
            rows.append({"student": name, "strategy": strategy, "gpus": gpus,
                         "trainable_fraction": round(fraction, 5) if "lora" in strategy else 1.0,
                         "weights_gb": b.weights / GB, "gradients_gb": b.gradients / GB,
                         "optimizer_gb": b.optimizer / GB, "total_gb": b.total / GB})  # fmt: skip
    return rows
