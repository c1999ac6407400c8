"""GRPO's policy loss: a clipped policy gradient on group-normalised advantages plus a KL penalty.

Per completion token t of rollout i (DeepSeekMath's GRPO objective, negated to be minimised):

    ratio = exp(logp - old_logp)
    pg    = -min(ratio * A_i, clip(ratio, 1 - eps, 1 + eps) * A_i)
    kl    = exp(ref_logp - logp) - (ref_logp - logp) - 1          (k3 estimator, >= 0, unbiased)
    loss_i = mean over i's completion tokens of (pg + beta * kl)

and the returned loss is the SUM of loss_i over the rollouts (the trainer divides by the step's rollout
count, so every rollout weighs the same whatever its length). With one policy update per rollout batch,
old_logp is logp detached: the ratio is 1 and the gradient is A_i * grad(logp), as in plain GRPO.
"""

from __future__ import annotations

import torch

from distill_ray.losses.registry import register_loss


@register_loss("grpo")
def grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    ref_logp: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_epsilon: float = 0.2,
    beta: float = 0.04,
) -> tuple[torch.Tensor, dict[str, float]]:
    """logp, old_logp, ref_logp, mask: [N, T] over completion tokens (mask 1 on real tokens); advantages [N].

    Returns (sum over rollouts of each rollout's token-mean loss, {"kl": mean token KL, "clip_fraction":
    share of tokens whose ratio was clipped}); `ref_logp` may be None when beta is 0.
    """
    mask = mask.to(logp.dtype)
    ratio = torch.exp(logp - old_logp)
    adv = advantages.to(logp.dtype).unsqueeze(1)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - clip_epsilon, 1.0 + clip_epsilon) * adv
    per_token = -torch.minimum(unclipped, clipped)
    kl = torch.zeros_like(logp)
    if beta > 0:
        if ref_logp is None:
            raise ValueError("beta > 0 needs the reference log-probs")
        delta = ref_logp - logp
        kl = torch.exp(delta) - delta - 1.0
        per_token = per_token + beta * kl
    lengths = mask.sum(dim=1).clamp(min=1.0)
    per_rollout = (per_token * mask).sum(dim=1) / lengths
    tokens = mask.sum().clamp(min=1.0)
    with torch.no_grad():
        metrics = {
            "kl": float((kl * mask).sum() / tokens),
            "clip_fraction": float((((ratio - 1.0).abs() > clip_epsilon).to(mask.dtype) * mask).sum() / tokens),
        }
    return per_rollout.sum(), metrics
