"""Scoring one problem's group of teacher samples: parse -> verify -> AdvDistill rewards -> keep decision.

Pure function over plain dicts (the generation stage calls it on each problem's samples, which always
travel together, so a problem's samples are never split between kept and dropped).
"""

from __future__ import annotations

from typing import Any

from distill_ray.config import DistillationConfig
from distill_ray.grading.grader import grade
from distill_ray.grading.parsing import parse_response
from distill_ray.rewards.advdistill import RewardParams, keep_group, score_group


def score_problem_samples(samples: list[dict[str, Any]], cfg: DistillationConfig) -> list[dict[str, Any]]:
    """Add parse/verify/reward fields and `kept` to each sample of one problem (all of them answered: a
    problem with a refused request is rejected whole before scoring, see actors/generate.py)."""
    for s in samples:
        verdict = grade(s["response"], s.get("reference"), finish_reason=s.get("finish_reason"),
                        timeout_s=cfg.verify_timeout_s)  # fmt: skip
        s.update(correct=verdict.correct, think=parse_response(s["response"]).think, final_answer=verdict.final_answer)
    has_reference = bool(samples) and all(s.get("reference") is not None for s in samples)
    if has_reference:
        scored = score_group(
            [(s["response"], int(s["completion_tokens"]), bool(s["correct"])) for s in samples],
            params=RewardParams.from_config(cfg),
        )
        for s, extra in zip(samples, scored):
            s.update(extra)
    group_ok = has_reference and keep_group([s["correct"] for s in samples])
    for s in samples:
        s["kept"] = _keep(s, cfg.keep, group_ok)
    return samples


def _keep(sample: dict[str, Any], rule: str, group_ok: bool) -> bool:
    if rule == "all":
        return True
    if rule == "correct":
        return sample.get("correct") is True
    return group_ok  # correct_groups: the whole group, wrong answers included, when one is right
