"""Unit tests for distill_ray.eval.metrics: pass@k against hand-computed values, summarize on a
hand-built row set whose every expected number is worked out in the comments."""

from __future__ import annotations

import json
import math

import pandas as pd
import pyarrow as pa
import pytest

from distill_ray.eval.metrics import pass_at_k, summarize

# ---------------------------------------------------------------- pass@k

@pytest.mark.parametrize(
    "n, c, k, expected",
    [
        (5, 2, 1, 0.4),                  # c / n
        (5, 2, 2, 1 - 3 / 10),           # 1 - C(3,2)/C(5,2) = 0.7
        (4, 0, 1, 0.0),
        (4, 0, 4, 0.0),
        (4, 4, 1, 1.0),
        (4, 4, 4, 1.0),
        (10, 3, 5, 1 - 21 / 252),        # 1 - C(7,5)/C(10,5)
        (10, 3, 8, 1.0),                 # n - c = 7 < 8: every 8-subset holds a correct one
        (3, 1, 3, 1.0),
        (6, 1, 2, 1 - 10 / 15),          # 1 - C(5,2)/C(6,2) = 1/3
    ],
)
def test_pass_at_k_hand_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_matches_binomials_and_stays_finite_for_large_n():
    assert pass_at_k(20, 7, 4) == pytest.approx(1 - math.comb(13, 4) / math.comb(20, 4), abs=1e-12)
    # C(2000, 1000) overflows a float; the product form must not.
    value = pass_at_k(2000, 3, 1000)
    assert value == pytest.approx(1 - math.comb(1997, 1000) / math.comb(2000, 1000), abs=1e-9)
    assert 0.0 < value < 1.0


@pytest.mark.parametrize("n, c, k", [(5, 2, 6), (5, 2, 0), (5, 2, -1), (5, 6, 1), (0, 0, 1), (5, -1, 1)])
def test_pass_at_k_rejects_invalid(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


# ---------------------------------------------------------------- summarize

def _row(model, bench, pid, idx, correct, tokens, fmt=1.0, error=None, level=None, finish="stop"):
    return {
        "model": model, "benchmark": bench, "id": pid, "sample_index": idx, "correct": correct,
        "completion_tokens": tokens, "format_reward": fmt, "finish_reason": finish, "error": error,
        "level": level,
    }


def hand_rows() -> list[dict]:
    return [
        # A / gsm8k: p1 = (T 100, F 300) -> n=2,c=1; p2 = (F 400, None 500) -> n=2,c=0; + 1 error row.
        _row("A", "gsm8k", "p1", 0, True, 100, 1.0),
        _row("A", "gsm8k", "p1", 1, False, 300, 0.0),
        _row("A", "gsm8k", "p2", 0, False, 400, 1.0),
        _row("A", "gsm8k", "p2", 1, None, 500, None, finish="length"),
        _row("A", "gsm8k", "p2", 2, None, 9999, None, error="teacher timeout", finish=None),
        # A / math (level): p1 L1 = (T 50, T 70, F 90); p2 L2 = (F 200, F 220, T 180); p3 L2 = all F.
        _row("A", "math", "m1", 0, True, 50, level="1"),
        _row("A", "math", "m1", 1, True, 70, level="1"),
        _row("A", "math", "m1", 2, False, 90, level="1"),
        _row("A", "math", "m2", 0, False, 200, level="2"),
        _row("A", "math", "m2", 1, False, 220, level="2"),
        _row("A", "math", "m2", 2, True, 180, level="2"),
        _row("A", "math", "m3", 0, False, 300, level="2"),
        _row("A", "math", "m3", 1, False, 320, level="2"),
        _row("A", "math", "m3", 2, False, 340, level="2"),
        # B / gsm8k: p1 = (T 80, T 90); p2 = (T 60, F 120).
        _row("B", "gsm8k", "p1", 0, True, 80),
        _row("B", "gsm8k", "p1", 1, True, 90),
        _row("B", "gsm8k", "p2", 0, True, 60),
        _row("B", "gsm8k", "p2", 1, False, 120),
        # B / math: one sample per problem, so pass@2 is undefined there.
        _row("B", "math", "m1", 0, True, 100, level="1"),
        _row("B", "math", "m2", 0, False, 150, level="2"),
    ]


@pytest.fixture
def summary():
    return summarize(hand_rows(), ks=[1, 2, 4], group_fields=["level", "subject"])


def test_layout_and_counts(summary):
    assert list(summary) == ["A", "B"]
    assert list(summary["A"]) == ["gsm8k", "math"]
    leaf = summary["A"]["gsm8k"]
    # The error row is counted but excluded from samples and problems.
    assert (leaf["problems"], leaf["samples"], leaf["errors"], leaf["unverified"]) == (2, 4, 1, 1)
    assert leaf["truncated"] == 1
    assert leaf["samples_per_problem"] == 2
    assert summary["A"]["math"]["samples_per_problem"] == 3
    assert summary["B"]["math"]["samples_per_problem"] == 1


def test_pass_at_k_only_where_defined(summary):
    a_gsm, a_math = summary["A"]["gsm8k"], summary["A"]["math"]
    assert a_gsm["pass@1"] == 0.25               # (1/2 + 0/2) / 2
    assert a_gsm["pass@2"] == 0.5                # (1 + 0) / 2
    assert a_math["pass@1"] == 0.3333            # (2/3 + 1/3 + 0) / 3
    assert a_math["pass@2"] == 0.5556            # (1 + (1 - 1/3) + 0) / 3 = 5/9
    assert summary["B"]["gsm8k"]["pass@1"] == 0.75
    assert summary["B"]["gsm8k"]["pass@2"] == 1.0
    assert summary["B"]["math"]["pass@1"] == 0.5
    assert "pass@2" not in summary["B"]["math"]
    assert not any("pass@4" in leaf for cells in summary.values() for leaf in cells.values())


def test_accuracy_format_and_tokens(summary):
    leaf = summary["A"]["gsm8k"]
    assert leaf["accuracy"] == 0.25              # 1 of 4 valid samples; the None counts as not correct
    assert leaf["format_rate"] == 0.6667         # (1 + 0 + 1) / 3, None format skipped
    assert leaf["tokens"] == {
        "mean": 325.0,                           # (100 + 300 + 400 + 500) / 4, error row's 9999 excluded
        "median": 350.0,
        "p90": 470.0,                            # linear: 400 + 0.7 * (500 - 400)
        "mean_correct": 100.0,
        "mean_incorrect": 400.0,                 # (300 + 400 + 500) / 3
    }
    assert leaf["verbosity_ratio"] == 4.0
    math_leaf = summary["A"]["math"]
    assert math_leaf["tokens"]["mean_correct"] == 100.0      # (50 + 70 + 180) / 3
    assert math_leaf["tokens"]["mean_incorrect"] == 245.0    # (90+200+220+300+320+340) / 6
    assert math_leaf["verbosity_ratio"] == 2.45
    assert summary["B"]["math"]["verbosity_ratio"] == 1.5


def test_by_group_only_where_present(summary):
    assert summary["A"]["gsm8k"]["by_group"] == {}   # no level on gsm8k; "subject" nowhere
    assert summary["A"]["math"]["by_group"] == {
        "level": {"1": {"accuracy": 0.6667, "samples": 3}, "2": {"accuracy": 0.1667, "samples": 6}}
    }
    assert summary["B"]["math"]["by_group"]["level"]["2"] == {"accuracy": 0.0, "samples": 1}


def test_empty_sides_give_none():
    rows = [_row("C", "b", "q1", 0, True, 10), _row("C", "b", "q1", 1, True, 30)]
    leaf = summarize(rows, [1], [])["C"]["b"]
    assert leaf["tokens"]["mean_incorrect"] is None
    assert leaf["verbosity_ratio"] is None
    only_errors = summarize([_row("C", "b", "q1", 0, None, 0, error="boom")], [1, 2], ["level"])["C"]["b"]
    assert (only_errors["problems"], only_errors["samples"], only_errors["errors"]) == (0, 0, 1)
    assert only_errors["accuracy"] is None and only_errors["tokens"]["mean"] is None
    assert "pass@1" not in only_errors


def _plain(obj) -> bool:
    if isinstance(obj, dict):
        return all(type(k) is str and _plain(v) for k, v in obj.items())
    if isinstance(obj, list):
        return all(_plain(v) for v in obj)
    return obj is None or type(obj) in (int, float, str, bool)


def test_json_serialisable_and_dataframe_input_agrees(summary):
    assert _plain(summary)
    json.dumps(summary)
    # pandas turns the None levels / formats into NaN and `level` into object; results must not change.
    frame = pd.DataFrame(hand_rows())
    frame["level"] = pd.to_numeric(frame["level"])  # "1" -> 1.0, None -> NaN
    assert summarize(frame, ks=[1, 2, 4], group_fields=["level", "subject"]) == summary
    table = pa.Table.from_pylist(hand_rows())
    assert summarize(table, ks=[1, 2, 4], group_fields=["level", "subject"]) == summary


def test_invalid_ks_rejected():
    with pytest.raises(ValueError):
        summarize(hand_rows(), ks=[0, 1], group_fields=[])


def test_pass1_interval_is_wilson_for_one_sample_and_a_bootstrap_for_several():
    from distill_ray.eval.metrics import pass1_interval, wilson_interval

    greedy = [[True]] * 3 + [[False]] * 7
    assert pass1_interval(greedy) == wilson_interval(3, 10)
    several = [[True, False]] * 20 + [[True, True]] * 10 + [[False, False]] * 10  # pass@1 = 0.5
    low, high = pass1_interval(several)
    assert 0.3 < low < 0.5 < high < 0.7
    assert pass1_interval(several) == (low, high)  # a fixed seed: the same report twice
    assert pass1_interval([[True, True]] * 5) == (1.0, 1.0)  # every resample is perfect
    with pytest.raises(ValueError):
        pass1_interval([])


def test_summary_leaf_carries_the_pass1_interval():
    from distill_ray.eval.metrics import summarize

    rows = [{"model": "m", "benchmark": "b", "id": f"q{i}", "correct": i < 4, "completion_tokens": 5}
            for i in range(10)]
    leaf = summarize(rows, [1], [])["m"]["b"]
    assert leaf["pass@1"] == 0.4
    assert leaf["pass1_ci95"][0] < 0.4 < leaf["pass1_ci95"][1]
