"""AdvDistill stage-2 objective (METHODS.md section 3): advantage-weighted SFT plus a penalty on wrong answers.

Flow: rewards.score_group gave each of a prompt's G teacher responses a reward, a group-relative
advantage and a correct/wrong flag -> the AdvDistill trainer runs the student over the whole
group (one prompt per micro-batch) -> `sequence_token_logprobs` reads each response token's
log-prob -> **advdistill_loss** computes

    L = sum_i w_i * CE_i + lambda * sum_{i wrong} C_i,   w = softmax(A / tau),
    CE_i = -mean_t log p(y_it),   C_i = -log(1 - min(p_bar_i, p_max)),   p_bar_i = mean_t p(y_it).

The weights are data: advantages come from the teacher's rewards, so no gradient flows into w.
The penalty grows as the student makes a wrong response likely; p_max caps p_bar so the penalty
stays finite (and stops pushing) once a wrong response is already near-certain.

Normalization (`normalize`). "response", the paper's: CE_i is the mean over reply i's own tokens and
the loss is per group, so a trainer accumulating several prompts into one optimizer step divides each
group's loss by the number of groups in the step, and every reply weighs the same whatever its length.
"token": the group's loss is a SUM, sum_i w_i * sum_t -log p(y_it) + lambda * N_w * sum_{i wrong} C_i with
N_w = sum_i w_i * |y_i| (`weighted_token_count`), and the trainer divides by the step's total N_w; every
weighted token then weighs the same, as in SFT's per-token mean (with weights (1, 0, ...) and lambda = 0 it is exactly
SFT on a non-empty best reply). The penalty keeps its share of the loss when all groups are of equal
length; otherwise a group's penalty counts in proportion to N_w, mostly its best reply's length, not
the length of the wrong replies it penalizes.
Not in the paper: added to test why AdvDistill landed under sft_best here (docs/training.md).
`best_response_index` picks the paper's SFT baseline target (the highest-advantage response).
"""

from __future__ import annotations

import torch

from distill_ray.losses.registry import register_loss


def sequence_token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-prob of each label token [G, T], 0 where ignored; mask [G, T]) from aligned logits [G, T, V].

    labels use -100 for positions that are not response tokens (prompt, padding).
    """
    mask = labels != -100
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    targets = labels.clamp_min(0)
    # gather - logsumexp rather than a full log_softmax: no second [G, T, V] tensor is kept.
    token_logprobs = logits.gather(-1, targets[..., None]).squeeze(-1) - logits.logsumexp(-1)
    return torch.where(mask, token_logprobs, 0.0), mask


NORMALIZATIONS = ("response", "token")


def _weights(advantages: torch.Tensor, tau: float, dtype: torch.dtype) -> torch.Tensor:
    """w = softmax(A / tau) [G]; data, not a function of the student (no gradient)."""
    return torch.softmax(advantages.detach().to(dtype) / tau, dim=-1)


def weighted_token_count(mask: torch.Tensor, advantages: torch.Tensor, tau: float) -> float:
    """N_w = sum_i softmax(A / tau)_i * |y_i| of one group (mask [G, T], advantages [G]): the group's units
    under normalize "token" (an empty reply counts 1 token, as in `advdistill_loss`)."""
    lengths = mask.bool().sum(-1).clamp_min(1).to(torch.float64)
    return float((_weights(advantages, tau, torch.float64) * lengths).sum())


@register_loss("advdistill")
def advdistill_loss(
    token_logprobs: torch.Tensor,
    mask: torch.Tensor,
    advantages: torch.Tensor,
    correct: torch.Tensor,
    tau: float = 0.5,
    lam: float = 0.5,
    p_max: float = 0.99,
    normalize: str = "response",
) -> tuple[torch.Tensor, dict[str, float]]:
    """AdvDistill loss for one group of G responses and its metrics.

    token_logprobs [G, T] (student log p of each response token), mask [G, T] bool, advantages [G],
    correct [G] bool. Returns (loss, {"weighted_ce", "penalty", "max_weight"}), where "penalty"
    is sum_{i wrong} C_i before the lambda factor. normalize "response" returns the group's loss (a
    mean) and "weighted_ce" is sum_i w_i CE_i, a weighted mean of per-reply means; "token" returns a
    SUM to be divided by the step's `weighted_token_count` (module docstring), and "weighted_ce" is
    sum_i w_i sum_t -log p(y_it) / N_w, the group's per-token mean.
    Raises ValueError for tau <= 0, p_max outside (0, 1) or another normalize.
    """
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    if not 0.0 < p_max < 1.0:
        raise ValueError(f"p_max must be in (0, 1), got {p_max}")
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    mask = mask.bool()
    logp = torch.where(mask, token_logprobs, 0.0)
    # A response with no tokens contributes 0 rather than 0 / 0.
    lengths = mask.sum(-1).clamp_min(1).to(logp.dtype)
    nll_sums = -logp.sum(-1)  # sum_t -log p(y_it) per reply
    p_bar = torch.where(mask, logp.exp(), 0.0).sum(-1) / lengths

    weights = _weights(advantages, tau, logp.dtype)
    # clamp caps p_bar; its gradient is then 0, which is the intended "stop pushing" behaviour.
    penalty_per = -torch.log1p(-p_bar.clamp(max=p_max))
    penalty = torch.where(correct.bool(), 0.0, penalty_per).sum()
    if normalize == "token":
        n_w = (weights * lengths).sum()
        token_sum = (weights * nll_sums).sum()
        loss = token_sum + lam * n_w * penalty
        weighted_ce = token_sum / n_w
    else:
        weighted_ce = (weights * nll_sums / lengths).sum()  # sum_i w_i CE_i
        loss = weighted_ce + lam * penalty
    metrics = {
        "weighted_ce": float(weighted_ce.detach()),
        "penalty": float(penalty.detach()),
        "max_weight": float(weights.max()),
    }
    return loss, metrics


def best_response_index(advantages: torch.Tensor) -> int:
    """Index of the highest-advantage response (the first one on ties): the SFT baseline's target."""
    advantages = torch.as_tensor(advantages)
    if advantages.numel() == 0:
        raise ValueError("advantages is empty: a group needs at least one response")
    return int(torch.argmax(advantages))
