"""The reward of one GRPO rollout from distilled reward models (METHODS.md section 1, DistilQwen Table 4).

Flow: the reward service (`serve/reward.py`) gets (prompt, response, reference) items -> the verifier gives
`correct`, the format scorer `format`, the RV / CD reward models f_RV, f_CD in [0, 1] -> **score_item**
combines them as

    R = w_format * R_fmt + w_accuracy * R_acc + lambda_rv * R_RV + lambda_cd * R_CD
    R_X = interval_penalty(f_X, L_X, H_X) = -|f_X - clip(f_X, L_X, H_X)|

keeping only the reward-model terms the setting names (vanilla: none). Pure Python, no Ray or torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from distill_ray.grading.parsing import extract_boxed
from distill_ray.rewards.advdistill import format_reward


def interval_penalty(score: float, low: float, high: float) -> float:
    """0 inside [low, high]; minus the distance to the nearest end outside it."""
    if low > high:
        raise ValueError(f"interval [{low}, {high}] is empty")
    distance = abs(score - min(max(score, low), high))
    return -distance if distance else 0.0


def boxed_format_reward(text: str, think_opened: bool = False) -> float:
    """1.0 iff the response holds a `\\boxed{}` answer anywhere (the lenient format; where the reasoning
    starts does not matter to it, so `think_opened` changes nothing)."""
    return 1.0 if extract_boxed(text or "") is not None else 0.0


FORMAT_SCORERS = {"think_answer": format_reward, "boxed": boxed_format_reward}


@dataclass(frozen=True)
class RewardWeights:
    """Weights and intervals of the composite reward (the `reward` config section's numbers)."""

    w_format: float = 1.0
    w_accuracy: float = 1.0
    lambda_rv: float = 1.0
    lambda_cd: float = 1.0
    rv_interval: tuple[float, float] = (0.333, 0.556)
    cd_interval: tuple[float, float] = (0.444, 0.556)

    @classmethod
    def from_config(cls, cfg: Any) -> "RewardWeights":
        return cls(cfg.w_format, cfg.w_accuracy, cfg.lambda_rv, cfg.lambda_cd, tuple(cfg.rv_interval),
                   tuple(cfg.cd_interval))  # fmt: skip


def score_item(
    fmt: float, correct: bool | None, rv: float | None, cd: float | None, terms: tuple[str, ...],
    weights: RewardWeights,
) -> dict:  # fmt: skip
    """One item's reward and its parts. `terms` lists the reward-model terms that count ("rv", "cd"); a
    term that counts needs its score (ValueError otherwise). `correct` None (no reference) earns 0."""
    accuracy = 1.0 if correct is True else 0.0
    r_rv = interval_penalty(rv, *weights.rv_interval) if rv is not None else None
    r_cd = interval_penalty(cd, *weights.cd_interval) if cd is not None else None
    reward = weights.w_format * fmt + weights.w_accuracy * accuracy
    for term, penalty, lam in (("rv", r_rv, weights.lambda_rv), ("cd", r_cd, weights.lambda_cd)):
        if term in terms:
            if penalty is None:
                raise ValueError(f"the {term} term counts but there is no {term} score")
            reward += lam * penalty
    return {"reward": reward, "format": fmt, "accuracy": accuracy, "correct": correct, "rv": rv, "cd": cd,
            "r_rv": r_rv, "r_cd": r_cd}  # fmt: skip
