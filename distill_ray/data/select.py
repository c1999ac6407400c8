"""Target-aware sampling of one problem's CoTs (ThoughtX's filter, METHODS.md section 1).

A CoT fits the target student when it is correct (if required), its difficulty is allowed and its
RV and CD lie in the configured intervals. Fitting CoTs are kept, best first (closest to the centre
of the intervals, then by sample id for determinism), up to `max_per_problem`. When none fits, the
declared fallback applies: `none` rejects the problem's CoTs; `nearest` keeps the correct CoT(s)
closest to the intervals, marked `fallback=True`. Every CoT not kept gets a reason. Pure function.
"""

from __future__ import annotations

from typing import Any

from distill_ray.config import SelectConfig

Row = dict[str, Any]


def _gap(value: int | None, interval: tuple[int, int] | None) -> float:
    """Distance of a score from an interval (0 inside); a missing score is infinitely far."""
    if interval is None:
        return 0.0
    if value is None:
        return float("inf")
    low, high = interval
    return float(max(low - value, 0, value - high))


def _centre_gap(value: int | None, interval: tuple[int, int] | None) -> float:
    if interval is None or value is None:
        return 0.0
    return abs(value - (interval[0] + interval[1]) / 2)


def misfit(row: Row, cfg: SelectConfig) -> str | None:
    """Why a CoT does not fit the target (None when it fits)."""
    if cfg.require_correct and row.get("correct") is not True:
        return "incorrect answer"
    if cfg.difficulty is not None and row.get("difficulty") not in cfg.difficulty:
        return f"difficulty outside target: {row.get('difficulty')} not in {cfg.difficulty}"
    for name in ("rv", "cd"):
        interval = getattr(cfg, name)
        if interval is not None and _gap(row.get(name), interval) > 0:
            return f"{name} outside target: {row.get(name)} not in [{interval[0]}, {interval[1]}]"
    return None


def select_group(rows: list[Row], cfg: SelectConfig) -> tuple[list[Row], list[tuple[Row, str]]]:
    """One problem's CoTs -> (kept rows with a `fallback` flag, [(rejected row, reason)])."""
    reasons = {row["sample_id"]: misfit(row, cfg) for row in rows}
    fitting = sorted((r for r in rows if reasons[r["sample_id"]] is None), key=lambda r: _rank(r, cfg))
    fallback = False
    if not fitting and cfg.fallback == "nearest":
        candidates = [r for r in rows if not cfg.require_correct or r.get("correct") is True]
        fitting = sorted(candidates, key=lambda r: (_distance(r, cfg), _rank(r, cfg)))
        fallback = bool(fitting)
    cap = cfg.max_per_problem or len(fitting)
    kept = [{**r, "fallback": fallback} for r in fitting[:cap]]
    kept_ids = {r["sample_id"] for r in kept}
    rejected = []
    for row in rows:
        if row["sample_id"] in kept_ids:
            continue
        reason = reasons[row["sample_id"]]
        candidate = reason is None or (fallback and (not cfg.require_correct or row.get("correct") is True))
        if candidate:
            reason = f"over max_per_problem ({cap})"
        elif not kept:
            reason = f"no CoT of the problem fits: {reason}"
        rejected.append((row, reason))
    return kept, rejected


def _distance(row: Row, cfg: SelectConfig) -> tuple[float, int]:
    difficulty_miss = int(cfg.difficulty is not None and row.get("difficulty") not in cfg.difficulty)
    return (_gap(row.get("rv"), cfg.rv) + _gap(row.get("cd"), cfg.cd), difficulty_miss)


def _rank(row: Row, cfg: SelectConfig) -> tuple[float, str]:
    return (_centre_gap(row.get("rv"), cfg.rv) + _centre_gap(row.get("cd"), cfg.cd), str(row["sample_id"]))
