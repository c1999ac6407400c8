"""AdvDistill curation and preference pairs: one problem's scored samples -> training rows. Pure functions.

- `curate_group`: the G responses of a problem (scored by the generate stage: correctness, composite
  reward, group-relative advantage) become one group row for the AdvDistill trainer, kept only when
  at least `min_correct` responses are correct (METHODS.md section 3).
- `build_pairs`: chosen/rejected pairs for DPO / CogPO and pairwise reward models, either correct vs
  incorrect responses of one problem, or the teacher's correct response vs the student's answer.
Each returns its output rows and, for every input row that contributes to none, a reason.
"""

from __future__ import annotations

import random
from typing import Any

from distill_ray.config import CurateConfig, PairsConfig

Row = dict[str, Any]
GROUP_LIST_FIELDS = ("sample_ids", "responses", "advantages", "rewards", "correct", "completion_tokens")


def curate_group(samples: list[Row], cfg: CurateConfig) -> tuple[Row | None, str | None]:
    """A problem's samples -> (group row, None) or (None, reason the whole group is dropped)."""
    samples = sorted(samples, key=lambda s: str(s["sample_id"]))
    if len(samples) < cfg.min_group_size:
        return None, f"group too small: {len(samples)} response(s), need {cfg.min_group_size}"
    if any(s.get("advantage") is None for s in samples):
        return None, "unscored group: no reference answer, so no rewards or advantages"
    n_correct = sum(1 for s in samples if s.get("correct") is True)
    if n_correct < cfg.min_correct:
        return None, f"no correct response in group: {n_correct} correct, need {cfg.min_correct}"
    first = samples[0]
    return {
        "id": first["id"],
        "problem": first["problem"],
        "reference": first.get("reference"),
        "sample_ids": [s["sample_id"] for s in samples],
        "responses": [s["response"] for s in samples],
        "advantages": [float(s["advantage"]) for s in samples],
        "rewards": [float(s["reward"]) for s in samples],
        "correct": [bool(s.get("correct")) for s in samples],
        "completion_tokens": [int(s.get("completion_tokens") or 0) for s in samples],
        "num_correct": n_correct,
    }, None


def build_pairs(rows: list[Row], cfg: PairsConfig) -> tuple[list[Row], list[tuple[Row, str]]]:
    """One problem's rows (each with `role` teacher|student) -> (pairs, [(unused row, reason)])."""
    rng = random.Random(f"{cfg.seed}|{rows[0]['id']}")
    ordered = sorted(rows, key=lambda r: (r["role"], str(r["sample_id"])))
    if cfg.mode == "correctness":
        chosen = [r for r in ordered if r["role"] == "teacher" and r.get("correct") is True]
        rejected = [r for r in ordered if r["role"] == "teacher" and r.get("correct") is False]
        missing = "no incorrect response to pair with" if chosen else "no correct response to pair with"
    else:
        chosen = [r for r in ordered if r["role"] == "teacher" and r.get("correct") is True]
        rejected = [r for r in ordered if r["role"] == "student"]
        missing = "no student answer for this problem" if chosen else "no correct teacher response"
    rng.shuffle(chosen)
    rng.shuffle(rejected)
    n = min(len(chosen), len(rejected), cfg.max_pairs_per_problem)
    pairs = [_pair(c, r, cfg) for c, r in zip(chosen[:n], rejected[:n])]
    used = {id(r) for r in chosen[:n] + rejected[:n]}
    reason = f"over max_pairs_per_problem ({cfg.max_pairs_per_problem})" if n else missing
    unused = [(r, reason) for r in ordered if id(r) not in used]
    return pairs, unused


def _pair(chosen: Row, rejected: Row, cfg: PairsConfig) -> Row:
    return {
        "id": chosen["id"],
        "pair_id": f"{chosen['sample_id']}>{rejected['sample_id']}",
        "problem": chosen["problem"],
        "chosen": chosen["response"],
        "rejected": rejected["response"],
        "pair_type": cfg.mode,
        "beta": cfg.beta,
    }
