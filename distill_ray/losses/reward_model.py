"""Reward-model objectives (METHODS.md sections 1 and 2): judge-score regressors and pairwise RMs.

Flow, pointwise (DistilQwen RV / CD models): a teacher acting as judge gives each (problem, CoT)
an integer 0-9 -> the RM trainer puts a scalar head on an instruct model -> **pointwise_regression_loss**
fits sigmoid(head output) to the normalised score -> at GRPO time the served RM returns
`reward_from_prediction`, a value in [0, 1] that the RV / CD interval rewards clip against.

Flow, pairwise (EasyDistill RL): teacher-labelled chosen / rejected responses -> the RM scores
both -> **bradley_terry_loss** makes the chosen score higher.

Both losses are means over the micro-batch, like the preference losses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from distill_ray.losses.registry import register_loss


def normalize_scores(scores: torch.Tensor, low: float = 0.0, high: float = 9.0) -> torch.Tensor:
    """Map judge scores in [low, high] linearly to [0, 1] (0 -> 0, 9 -> 1 by default), clamped."""
    if high <= low:
        raise ValueError(f"need high > low, got low={low}, high={high}")
    scores = torch.as_tensor(scores)
    scores = scores.to(torch.promote_types(scores.dtype, torch.float32))
    # A judge that strays outside its band (a parse of "10") is clamped, not extrapolated.
    return ((scores - low) / (high - low)).clamp(0.0, 1.0)


def reward_from_prediction(predictions: torch.Tensor) -> torch.Tensor:
    """What a served pointwise RM returns: sigmoid of the raw head output, in [0, 1]."""
    return torch.sigmoid(predictions)


@register_loss("rm_pointwise")
def pointwise_regression_loss(
    predictions: torch.Tensor, targets: torch.Tensor, low: float = 0.0, high: float = 9.0
) -> tuple[torch.Tensor, dict[str, float]]:
    """MSE between sigmoid(predictions) [B] and normalised judge scores [B]; metric "mae" in [0, 1] units.

    Squashing the head output keeps the prediction in the target's range, so an overshoot never
    becomes a large error that swamps the batch.
    """
    predicted = reward_from_prediction(predictions.to(torch.promote_types(predictions.dtype, torch.float32)))
    target = normalize_scores(targets, low, high).to(predicted.device, predicted.dtype)
    loss = F.mse_loss(predicted, target)
    return loss, {"mae": float((predicted.detach() - target).abs().mean())}


@register_loss("rm_pairwise")
def bradley_terry_loss(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    margin: float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """-log sigmoid(r_chosen - r_rejected - margin), mean over pairs [B].

    `margin` (a float or [B]) asks for a gap of at least that much, e.g. from a graded preference.
    Metrics: "accuracy" (fraction with r_chosen > r_rejected) and "margin" (mean r_chosen - r_rejected).
    """
    gap = chosen_rewards - rejected_rewards
    shifted = gap - margin if margin is not None else gap
    loss = -F.logsigmoid(shifted).mean()
    gap = gap.detach().float()
    return loss, {"accuracy": float((gap > 0).float().mean()), "margin": float(gap.mean())}
