"""The collector's pure parts: problem-text normalisation for dedup, and task-aware re-sampling quotas.

`task_quotas` turns per-task row counts into how many rows each task keeps: first `task_caps`, then
`task_weights` (target shares among the weighted tasks: the largest mix with those shares that the
available rows allow, so no row is repeated). Tasks without a weight keep everything their cap
allows. Which rows a quota keeps is decided by `keep_rank`, a seeded hash of the row id, so the
choice is deterministic and independent of read order.
"""

from __future__ import annotations

import hashlib
import math
import re

_SPACE = re.compile(r"\s+")


def normalise_problem(text: str) -> str:
    """Case- and whitespace-insensitive form of a problem, the dedup key's input."""
    return _SPACE.sub(" ", text.strip().lower())


def dedup_key(text: str) -> str:
    return hashlib.sha1(normalise_problem(text).encode()).hexdigest()[:20]


def keep_rank(seed: int, row_id: str) -> str:
    return hashlib.sha1(f"{seed}|{row_id}".encode()).hexdigest()


def task_quotas(counts: dict[str, int], caps: dict[str, int], weights: dict[str, float]) -> dict[str, int]:
    """Rows each task keeps, given the available `counts` (after dedup)."""
    quotas = {task: min(n, caps.get(task, n)) for task, n in counts.items()}
    weighted = {task: w for task, w in weights.items() if quotas.get(task, 0) > 0}
    if weighted:
        total_w = sum(weighted.values())
        shares = {task: w / total_w for task, w in weighted.items()}
        # The biggest total T with shares[t] * T <= available[t] for every weighted task.
        total = min(quotas[t] / share for t, share in shares.items())
        for task, share in shares.items():
            quotas[task] = min(quotas[task], math.floor(share * total + 1e-9))
    return quotas
