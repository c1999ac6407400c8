"""The loss library: pure torch functions that trainers look up by the name a recipe gives.

Flow: a recipe's `distillation.loss` (or the job type) names a loss -> the trainer calls
`get_loss(name)` -> the function takes plain tensors and returns a scalar loss (the preference,
reward-model and AdvDistill losses also return a dict of float metrics). Nothing here knows
about Ray, models or data loading.

Registered names and what they map to:
  - "forward_kl", "reverse_kl", "jsd": `topk_kd.topk_kd_loss` with `kind` fixed to the name
    (KD against the teacher's stored top-k; for the memory-bounded path from hidden states a
    trainer calls `topk_kd.chunked_topk_kd_loss(..., kind=name)` with the same name).
  - "advdistill": `advdistill.advdistill_loss`.
  - "dpo": `preference.dpo_loss`; "cogpo": `preference.cogpo_loss` (per-pair beta).
  - "rm_pointwise": `reward_model.pointwise_regression_loss` (judge-score regression);
    "rm_pairwise": `reward_model.bradley_terry_loss`.
  - "grpo": `grpo.grpo_loss` (clipped policy gradient + k3 KL to the reference).
Adding a loss is one decorated function in one submodule, plus its import below.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

LOSSES: dict[str, Callable] = {}


def register_loss(name: str) -> Callable[[Callable], Callable]:
    """Decorator: make `fn` available as get_loss(name); a name can be registered once."""

    def add(fn: Callable) -> Callable:
        if name in LOSSES:
            raise ValueError(f"loss {name!r} is already registered")
        LOSSES[name] = fn
        return fn

    return add


def get_loss(name: str) -> Callable:
    """The loss registered under `name`; KeyError listing the known names otherwise."""
    try:
        return LOSSES[name]
    except KeyError:
        raise KeyError(f"unknown loss {name!r}; known losses: {', '.join(sorted(LOSSES))}") from None


# The submodules register themselves with the decorator above, so they are imported only after
# LOSSES and register_loss exist (a submodule's `from distill_ray.losses import register_loss`
# then finds them on this partly initialised package).
from distill_ray.losses import advdistill, grpo, preference, reward_model, topk_kd  # noqa: E402
from distill_ray.losses.topk_kd import KINDS as _KD_KINDS  # noqa: E402

for _kind in _KD_KINDS:
    register_loss(_kind)(partial(topk_kd.topk_kd_loss, kind=_kind))

__all__ = ["LOSSES", "register_loss", "get_loss", "advdistill", "grpo", "preference", "reward_model", "topk_kd"]
