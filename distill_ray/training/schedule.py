"""How long a training run is and how its learning rate moves: phases, step counts, LR schedules.

Where it sits: trainer job drivers (`jobs/train/sft.py`, `kd.py`, ...) size their runs with these before
calling `jobs/train/loop.py: fit`, whose workers follow `lr_factor`. A run is one or more `Phase`s trained
in order (curriculum SFT: one per curriculum stage). Pure Python, no Ray.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from distill_ray.config import TrainingConfig


@dataclass(frozen=True)
class Phase:
    """Rows trained for `steps` optimizer steps (their own epochs), before the next phase's rows."""

    name: str
    rows_path: str
    rows: int
    steps: int


def epoch_steps(n_rows: int, world: int, micro_batch: int, accum: int, epochs: float) -> int:
    """Optimizer steps for `epochs` passes over n_rows split across `world` ranks."""
    per_rank = math.ceil(n_rows / world)  # DistributedSampler pads ranks to equal length
    micro_per_epoch = math.ceil(per_rank / micro_batch)
    return max(1, math.ceil(epochs * micro_per_epoch / accum))


def total_steps(t: TrainingConfig, n_rows: int, world: int, micro_batch: int | None = None) -> int:
    """Optimizer steps of a single-phase run: max_steps, else epochs x micro-batches per epoch / accumulation."""
    if t.max_steps:
        return t.max_steps
    micro = micro_batch or t.per_device_train_batch_size
    return epoch_steps(n_rows, world, micro, t.gradient_accumulation_steps, t.num_train_epochs)


def cap_phases(phases: list[Phase], max_steps: int | None) -> list[Phase]:
    """Cut the phase list at max_steps total (a curriculum's training.max_steps)."""
    if not max_steps:
        return phases
    kept, left = [], max_steps
    for p in phases:
        if left <= 0:
            break
        kept.append(Phase(p.name, p.rows_path, p.rows, min(p.steps, left)))
        left -= p.steps
    return kept


def lr_factor(kind: str, step: int, warmup: int, total: int) -> float:
    """LR multiplier at `step`: linear warmup from 0, then cosine/linear decay to 0, or constant."""
    if step < warmup:
        return step / max(1, warmup)
    if kind == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if kind == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))
