"""Preference losses for the ranking stage (METHODS.md sections 1 and 2): DPO and CogPO.

Flow: the pair builder makes (prompt, chosen, rejected) rows (e.g. teacher answer chosen, student
answer rejected) -> the DPO trainer runs the policy and the frozen reference over both responses ->
`sequence_logps` sums each response's token log-probs -> **dpo_loss** / **cogpo_loss** compare the
policy's log-ratio gap with the reference's.

Both use the sigmoid form: with h = (pc - rc) - (pr - rr) (policy minus reference log-prob, chosen
minus rejected), loss = -log sigmoid(beta * h), and with label smoothing eps (the chance a label is
flipped) (1 - eps) * that + eps * (-log sigmoid(-beta * h)). Losses are means over the pairs of the
micro-batch; a trainer accumulating micro-batches scales each by its share of the step's pairs.

CogPO differs only in beta: each preference pair carries its own beta, chosen by how the pair was
built (pairs that differ in a small, targeted way get a different strength from pairs that differ
in the whole reasoning path), so the dataset supplies a beta column and the loss reads it per pair.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from distill_ray.losses.registry import register_loss


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[B] sum of log p(label) over positions with labels != -100; logits [B, T, V] already aligned."""
    mask = labels != -100
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    picked = logits.gather(-1, labels.clamp_min(0)[..., None]).squeeze(-1) - logits.logsumexp(-1)
    return torch.where(mask, picked, 0.0).sum(-1)


@register_loss("sigmoid")
def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float | torch.Tensor = 0.1,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Sigmoid DPO over B pairs of summed response log-probs [B]; beta is a float or a [B] tensor.

    Metrics: "chosen_reward" / "rejected_reward" (means of beta * (policy - reference) log-prob),
    "reward_margin" (mean of their difference), "reward_accuracy" (fraction of pairs where the
    chosen reward is strictly higher).
    """
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    chosen_logratio = policy_chosen_logps - ref_chosen_logps
    rejected_logratio = policy_rejected_logps - ref_rejected_logps
    scaled = beta * (chosen_logratio - rejected_logratio)
    losses = -(1.0 - label_smoothing) * F.logsigmoid(scaled) - label_smoothing * F.logsigmoid(-scaled)
    chosen_reward = (beta * chosen_logratio).detach()
    rejected_reward = (beta * rejected_logratio).detach()
    metrics = {
        "chosen_reward": float(chosen_reward.float().mean()),
        "rejected_reward": float(rejected_reward.float().mean()),
        "reward_margin": float((chosen_reward - rejected_reward).float().mean()),
        "reward_accuracy": float((chosen_reward > rejected_reward).float().mean()),
    }
    return losses.mean(), metrics


@register_loss("cogpo")
def cogpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    betas: torch.Tensor,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """CogPO: DPO with a required per-pair beta [B] (see the module docstring); same metrics as DPO."""
    betas = torch.as_tensor(betas, dtype=policy_chosen_logps.dtype, device=policy_chosen_logps.device)
    if betas.shape != policy_chosen_logps.shape:
        raise ValueError(
            f"betas must hold one beta per pair, shape {tuple(policy_chosen_logps.shape)}, got {tuple(betas.shape)}"
        )
    if bool((betas <= 0).any()):
        raise ValueError("every CogPO beta must be > 0")
    return dpo_loss(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
        beta=betas, label_smoothing=label_smoothing,
    )
