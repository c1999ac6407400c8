"""Scoring one problem's group of teacher samples: parse -> verify -> AdvDistill rewards -> keep decision.

Pure function over plain dicts (the generation stage calls it on each problem's samples, which always
travel together, so a problem's samples are never split between kept and dropped).
"""

from __future__ import annotations

from typing import Any

from distill_ray.config import DistillationConfig
from distill_ray.rewards.advdistill import RewardParams, keep_group, score_group
from distill_ray.grading.verify import verify_response


def score_problem_samples(samples: list[dict[str, Any]], cfg: DistillationConfig) -> list[dict[str, Any]]:
    """Add parse/verify/reward fields and `kept` to each successful sample of one problem.

    Samples with an `error` (teacher failure) are passed through unscored and never kept.
    """
    ok = [s for s in samples if not s.get("error")]
    for s in ok:
        correct, parsed = verify_response(s["response"], s.get("reference"), timeout_s=cfg.verify_timeout_s)
        s.update(correct=correct, think=parsed.think, final_answer=parsed.final_answer)
    has_reference = bool(ok) and all(s.get("reference") is not None for s in ok)
    if has_reference:
        scored = score_group(
            [(s["response"], int(s["completion_tokens"]), bool(s["correct"])) for s in ok],
            params=RewardParams.from_config(cfg),
        )
        for s, extra in zip(ok, scored):
            s.update(extra)
    group_ok = has_reference and keep_group([s["correct"] for s in ok])
    for s in samples:
        s["kept"] = _keep(s, cfg.keep, group_ok)
    return samples


def _keep(sample: dict[str, Any], rule: str, group_ok: bool) -> bool:
    if sample.get("error"):
        return False
    if rule == "all":
        return True
    if rule == "correct":
        return sample.get("correct") is True
    return group_ok  # correct_groups: the whole group, wrong answers included, when one is right
