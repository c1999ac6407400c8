"""Group scoring: verification, AdvDistill rewards and the keep rules over one problem's samples."""

import pytest

from distill_ray.config import DistillationConfig
from distill_ray.rewards.scoring import score_problem_samples

GOOD = "<think>4 + 4 = 8</think><answer>\\boxed{8}</answer>"
WRONG = "The answer is 9."


def _group(*responses, reference="8"):
    return [{"response": r, "reference": reference, "completion_tokens": 10} for r in responses]


@pytest.mark.parametrize(("rule", "expected"), [("correct", [True, False]), ("correct_groups", [True, True]),
                                                ("all", [True, True])])  # fmt: skip
def test_keep_rules_with_one_correct_sample(rule, expected):
    out = score_problem_samples(_group(GOOD, WRONG), DistillationConfig(keep=rule))
    assert [s["kept"] for s in out] == expected
    assert [s["correct"] for s in out] == [True, False]
    assert out[0]["format_reward"] == 1.0 and out[1]["format_reward"] == 0.0
    assert out[0]["advantage"] > 0 > out[1]["advantage"]  # two samples: +1 and -1 (up to eps)
    assert out[0]["advantage"] == pytest.approx(1.0, abs=1e-4)


def test_group_with_no_correct_sample_is_dropped_whole():
    out = score_problem_samples(_group(WRONG, WRONG), DistillationConfig(keep="correct_groups"))
    assert [s["kept"] for s in out] == [False, False]
    assert [s["advantage"] for s in out] == [0.0, 0.0]


def test_no_reference_means_no_correctness_and_no_rewards():
    out = score_problem_samples(_group(GOOD, reference=None), DistillationConfig(keep="correct"))
    assert out[0]["correct"] is None and "reward" not in out[0] and out[0]["kept"] is False
    out = score_problem_samples(_group(GOOD, reference=None), DistillationConfig(keep="all"))
    assert out[0]["kept"] is True
