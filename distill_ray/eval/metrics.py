"""Evaluation metrics over the eval job's per-sample rows (METHODS.md "Evaluation": Pass@1, Pass@K).

Flow: the eval job runs several models over several benchmarks and writes one row per generated
sample -> **summarize** turns those rows into a nested `{model: {benchmark: metrics}}` dict ->
report.py renders it as report.json / report.md and plots.py draws it.

Besides pass@k and accuracy each leaf carries the CoT-length statistics that DistilQwen's Table 3
reports (mean output tokens per model x benchmark) and AdvDistill's verbosity ratio (mean length of
wrong answers over mean length of right ones). Pure functions over plain rows: no I/O, no Ray.

Row conventions (shared with plots.py through the helpers below):
- a row with a non-empty `error` is a teacher failure: counted in `errors`, excluded from metrics;
- `correct=None` (unverifiable) counts as not correct everywhere, and is also counted in `unverified`.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from typing import Any, Iterable

import numpy as np

Row = dict[str, Any]
DIGITS = 4


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k estimator 1 - C(n-c, k) / C(n, k) for one problem (n samples, c correct).

    Computed as 1 - prod_{i=n-c+1..n} (1 - k/i): the binomials overflow floats for the
    n of a few hundred that long-sample evaluations use, the product never does.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if k > n:
        raise ValueError(f"k={k} exceeds the number of samples n={n}")
    if c < 0 or c > n:
        raise ValueError(f"c={c} must lie in [0, n={n}]")
    if n - c < k:
        # Every k-subset contains a correct sample.
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))


def is_missing(value: Any) -> bool:
    """None, NaN, or a pandas NA/NaT (detected by type name so this module needs no pandas)."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return type(value).__name__ in ("NAType", "NaTType")


def to_records(rows: Any) -> list[Row]:
    """Rows as plain dicts with missing values as None; accepts dicts, a DataFrame or a pyarrow Table.

    A DataFrame turns None into NaN in numeric columns (e.g. `format_reward`, `level`), so every
    value is normalised here once rather than at each use.
    """
    if hasattr(rows, "to_pylist"):  # pyarrow.Table, as read from the eval job's Parquet output
        records = rows.to_pylist()
    elif hasattr(rows, "to_dict"):
        records = rows.to_dict("records")
    else:
        records = list(rows if rows is not None else [])
    return [{key: (None if is_missing(v) else v) for key, v in dict(r).items()} for r in records]


def is_error(row: Row) -> bool:
    err = row.get("error")
    return not is_missing(err) and str(err) != ""


def is_correct(row: Row) -> bool:
    value = row.get("correct")
    return False if is_missing(value) else bool(value)


def ordered_keys(records: Iterable[Row], field: str) -> list[str]:
    """Distinct values of `field` in first-appearance order (the eval job's order is meaningful)."""
    return list(dict.fromkeys(str(r.get(field)) for r in records))


def summarize(rows: Any, ks: list[int], group_fields: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """Nested `{model: {benchmark: leaf}}`; see `_leaf` for the leaf's keys. JSON-serialisable."""
    ks = sorted(set(int(k) for k in ks))
    if any(k < 1 for k in ks):
        raise ValueError(f"every k must be >= 1, got {ks}")
    cells: dict[str, dict[str, list[Row]]] = defaultdict(lambda: defaultdict(list))
    for r in to_records(rows):
        cells[str(r.get("model"))][str(r.get("benchmark"))].append(r)
    return {
        model: {bench: _leaf(cell, ks, group_fields) for bench, cell in benches.items()}
        for model, benches in cells.items()
    }


def _leaf(rows: list[Row], ks: list[int], group_fields: list[str]) -> dict[str, Any]:
    """Metrics for one (model, benchmark) cell."""
    valid = [r for r in rows if not is_error(r)]
    per_problem: dict[str, list[bool]] = defaultdict(list)
    for r in valid:
        per_problem[str(r.get("id"))].append(is_correct(r))
    min_n = min((len(v) for v in per_problem.values()), default=0)
    formats = [float(r["format_reward"]) for r in valid if not is_missing(r.get("format_reward"))]
    leaf: dict[str, Any] = {
        "problems": len(per_problem),
        "samples": len(valid),
        "errors": len(rows) - len(valid),
        "unverified": sum(1 for r in valid if is_missing(r.get("correct"))),
        # Generation stopped at the token limit: those CoTs are cut, which biases the length stats.
        "truncated": sum(1 for r in valid if r.get("finish_reason") == "length"),
        "samples_per_problem": min_n,
    }
    # pass@k is only defined where every problem has at least k samples.
    for k in ks:
        if 1 <= k <= min_n:
            scores = [pass_at_k(len(v), sum(v), k) for v in per_problem.values()]
            leaf[f"pass@{k}"] = _r(_mean(scores))
    if min_n >= 1:
        low, high = pass1_interval(list(per_problem.values()))
        leaf["pass1_ci95"] = [_r(low), _r(high)]
    leaf["accuracy"] = _r(_mean([float(is_correct(r)) for r in valid]))
    leaf["format_rate"] = _r(_mean(formats))
    leaf["tokens"] = _token_stats(valid)
    mean_c, mean_i = leaf["tokens"]["mean_correct"], leaf["tokens"]["mean_incorrect"]
    leaf["verbosity_ratio"] = _r(mean_i / mean_c) if mean_c and mean_i is not None else None
    leaf["by_group"] = _by_group(valid, group_fields)
    return leaf


def _token_stats(valid: list[Row]) -> dict[str, float | None]:
    """CoT length statistics; p90 uses numpy's default linear interpolation."""
    def tokens(rs: list[Row]) -> list[float]:
        return [float(r["completion_tokens"]) for r in rs if not is_missing(r.get("completion_tokens"))]

    every = tokens(valid)
    return {
        "mean": _r(_mean(every)),
        "median": _r(statistics.median(every)) if every else None,
        "p90": _r(float(np.percentile(every, 90))) if every else None,
        "mean_correct": _r(_mean(tokens([r for r in valid if is_correct(r)]))),
        "mean_incorrect": _r(_mean(tokens([r for r in valid if not is_correct(r)]))),
    }


def _by_group(valid: list[Row], group_fields: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """Accuracy per value of each group field that this cell actually carries (rows lacking it skipped)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for field in group_fields:
        buckets: dict[str, list[bool]] = defaultdict(list)
        for r in valid:
            if not is_missing(r.get(field)):
                buckets[group_key(r[field])].append(is_correct(r))
        if buckets:
            out[field] = {
                value: {"accuracy": _r(_mean([float(x) for x in buckets[value]])), "samples": len(buckets[value])}
                for value in sorted(buckets, key=natural_key)
            }
    return out


def group_key(value: Any) -> str:
    """A group value as a JSON key; 3.0 (an int column that pandas widened to float) becomes "3"."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def natural_key(key: str) -> tuple[int, float, str]:
    """Numeric keys in numeric order (level 2 before level 10), then the rest alphabetically."""
    try:
        return (0, float(key), key)
    except ValueError:
        return (1, 0.0, key)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _r(value: float | None) -> float | None:
    """Plain-float rounding, so numpy scalars never reach json.dumps."""
    return None if value is None else round(float(value), DIGITS)


# ---- uncertainty of a greedy pass@1 (benchmarks/distill_quality.py) ---------------------------------------------
# Hand-written: neither scipy nor statsmodels is a dependency of this project.


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion `correct / n` (Wilson 1927, "Probable inference, the law of
    succession, and statistical inference", JASA 22:209-212); z = 1.96 gives 95 %.

        centre = (p + z^2 / 2n) / (1 + z^2 / n),  half = z * sqrt(p (1 - p) / n + z^2 / 4n^2) / (1 + z^2 / n)

    Unlike the normal (Wald) interval it stays inside [0, 1] and is not empty at 0/n or n/n, which matter here:
    a base student may solve nothing. Raises ValueError for n < 1 or correct outside [0, n].
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0 <= correct <= n:
        raise ValueError(f"correct={correct} must lie in [0, n={n}]")
    p, z2 = correct / n, z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def pass1_interval(per_problem: list[list[bool]], resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% interval of pass@1, the mean over problems of each problem's share of correct samples.

    `per_problem`: P >= 1 lists of sample correctness. One sample for every problem (a greedy eval): each problem
    is a Bernoulli trial, so the Wilson interval. Otherwise the shares are not 0/1: a percentile bootstrap over
    problems (Efron & Tibshirani 1993, ch. 13), fixed seed. Raises ValueError when there is no problem or a
    problem has no sample.
    """
    if not per_problem or any(len(v) == 0 for v in per_problem):
        raise ValueError("pass@1 needs at least one problem, each with at least one sample")
    if all(len(v) == 1 for v in per_problem):
        return wilson_interval(sum(bool(v[0]) for v in per_problem), len(per_problem))
    shares = np.array([sum(map(bool, v)) / len(v) for v in per_problem], dtype=np.float64)
    picks = np.random.default_rng(seed).integers(0, len(shares), size=(resamples, len(shares)))
    means = shares[picks].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def gap_closed(model: float, base: float, teacher: float) -> float | None:
    """(model - base) / (teacher - base): 0 = no better than the base student, 1 = as good as the teacher. None
    when the teacher is no different from the base (the ratio is undefined)."""
    return None if teacher == base else (model - base) / (teacher - base)


def bootstrap_gap_closed(model_correct: Any, base_correct: Any, teacher_correct: Any, resamples: int = 1000,
                         seed: int = 0, level: float = 0.95) -> dict[str, float | None] | None:
    """Gap closed with a percentile-bootstrap interval (Efron & Tibshirani 1993, "An Introduction to the
    Bootstrap", ch. 13), resampling PROBLEMS: the three arrays hold each model's 0/1 correctness on the same
    problems in the same order, so a resample keeps the pairing (a hard problem is hard for all three).

    Returns {"gap_closed", "low", "high", "resamples_used"}, or None when teacher and base solve the same share of
    the problems (the point estimate is undefined, see `gap_closed`). Resamples whose teacher and base shares tie
    are left out (counted by `resamples_used`); low/high are None when none is left. Raises ValueError when the
    arrays differ in length or are empty.
    """
    m, b, t = (np.asarray(x, dtype=np.float64) for x in (model_correct, base_correct, teacher_correct))
    if not len(m) or not (len(m) == len(b) == len(t)):
        raise ValueError(f"need three equally long non-empty arrays, got {len(m)}, {len(b)}, {len(t)}")
    point = gap_closed(m.mean(), b.mean(), t.mean())
    if point is None:
        return None
    idx = np.random.default_rng(seed).integers(0, len(m), size=(resamples, len(m)))
    mm, bb, tt = m[idx].mean(axis=1), b[idx].mean(axis=1), t[idx].mean(axis=1)
    ok = tt != bb
    gaps = (mm[ok] - bb[ok]) / (tt[ok] - bb[ok])
    tail = (1 - level) / 2 * 100
    low, high = (np.percentile(gaps, [tail, 100 - tail]) if len(gaps) else (None, None))
    return {"gap_closed": _r(point), "low": _r(low), "high": _r(high), "resamples_used": int(ok.sum())}


def bootstrap_paired_difference(a_correct: Any, b_correct: Any, resamples: int = 1000, seed: int = 0,
                                level: float = 0.95) -> dict[str, float | int]:
    """pass@1 of model A minus that of model B on the same problems, with a percentile-bootstrap interval
    (Efron & Tibshirani 1993, ch. 13) that resamples PROBLEMS, keeping each problem's pair of answers together.

    `a_correct`, `b_correct`: 0/1 correctness per problem, same problems in the same order, shape (P,). Paired,
    the interval is narrower than two separate intervals suggest when both models find the same problems hard; an
    interval that holds 0 means the data cannot tell the two apart. Returns {"difference", "low", "high",
    "a_only", "b_only"} (shares, a minus b; the counts of problems only one of them solved). Raises ValueError
    when the arrays differ in length or are empty, resamples < 1 or level is outside (0, 1).
    """
    a, b = (np.asarray(x, dtype=np.float64) for x in (a_correct, b_correct))
    if not len(a) or len(a) != len(b):
        raise ValueError(f"need two equally long non-empty arrays, got {len(a)} and {len(b)}")
    if resamples < 1 or not 0 < level < 1:
        raise ValueError(f"need resamples >= 1 and 0 < level < 1, got {resamples} and {level}")
    d = a - b
    idx = np.random.default_rng(seed).integers(0, len(d), size=(resamples, len(d)))
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(d[idx].mean(axis=1), [tail, 100 - tail])
    return {"difference": _r(d.mean()), "low": _r(low), "high": _r(high), "a_only": int((d > 0).sum()),
            "b_only": int((d < 0).sum())}
