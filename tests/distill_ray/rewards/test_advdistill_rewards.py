"""AdvDistill stage-1 scoring (distill_ray.rewards.advdistill) against hand-computed values."""

import math

import pytest

from distill_ray.config.schema import DistillationConfig
from distill_ray.rewards.advdistill import (
    RewardParams,
    composite_reward,
    cosine_length_reward,
    format_reward,
    group_advantages,
    keep_group,
    score_group,
)

GOOD = r"<think>6 * 3 = 18</think>\n<answer>The answer is \boxed{18}.</answer>"


@pytest.mark.parametrize(
    "text, expected",
    [
        (GOOD, 1.0),
        (r"<THINK>r</THINK><Answer>\boxed{\frac{1}{2}}</Answer>", 1.0),
        (r"<think></think><answer>\boxed{1}</answer>", 1.0),
        (r"<think>r</think><answer>18</answer>", 0.0),  # no box
        (r"<think>r</think> \boxed{18}", 0.0),  # no answer block
        (r"<answer>\boxed{18}</answer>", 0.0),  # no think block
        (r"<answer>\boxed{1}</answer><think>r</think>", 0.0),  # wrong order
        (r"<think>r</think><answer>\boxed{18}", 0.0),  # answer block not closed
        (r"<think>r<answer>\boxed{18}</answer>", 0.0),  # think block not closed
        (r"<think>r</think><answer>\boxed{1</answer>", 0.0),  # box not closed
        ("", 0.0),
    ],
)
def test_format_reward(text, expected):
    assert format_reward(text) == expected


@pytest.mark.parametrize(
    "length, correct, expected",
    [
        (0, True, 2.0),  # r0_correct
        (2048, True, 1.0),  # rL_correct
        (1024, True, 1.5),  # midpoint of the half cosine
        (0, False, 0.0),  # r0_wrong
        (2048, False, -10.0),  # rL_wrong
        (1024, False, -5.0),
        (5000, True, 1.0),  # clipped to l_max
        (5000, False, -10.0),
    ],
)
def test_cosine_length_reward_defaults(length, correct, expected):
    assert cosine_length_reward(length, correct) == pytest.approx(expected, abs=1e-12)


def test_cosine_length_reward_quarter_point_and_custom_endpoints():
    # L / l_max = 1/4: 1 + 0.5 * (2 - 1) * (1 + cos(pi/4)) = 1.8535533905932737
    assert cosine_length_reward(25, True, l_max=100) == pytest.approx(1.8535533905932737)
    # custom endpoints: 4 + 0.5 * (0 - 4) * (1 + cos(pi/2)) = 2
    got = cosine_length_reward(50, False, l_max=100, r0_wrong=0.0, rL_wrong=4.0)
    assert got == pytest.approx(2.0)


def test_composite_reward():
    assert composite_reward(1.0, 1.5) == 4.0  # 2 * 1.5 + 1 * 1
    assert composite_reward(0.0, -10.0) == -20.0
    assert composite_reward(1.0, 2.0, w_fmt=0.5, w_cos=3.0) == 6.5


def test_group_advantages_hand_computed():
    # mean 2, population std 1
    got = group_advantages([3, 1, 1, 3], eps=1e-6)
    assert got == pytest.approx([1, -1, -1, 1], abs=1e-5)
    assert got[0] == pytest.approx(1 / (1 + 1e-6), rel=1e-12)
    # mean 2, population std sqrt(2/3); with ddof=1 it would be 1.0 and give +-1
    expected = 1 / math.sqrt(2 / 3)
    assert group_advantages([1, 2, 3], eps=0.0) == pytest.approx([-expected, 0.0, expected])


def test_group_advantages_degenerate_groups():
    assert group_advantages([2.5, 2.5, 2.5]) == [0.0, 0.0, 0.0]
    assert group_advantages([7.0]) == [0.0]
    assert group_advantages([]) == []


@pytest.mark.parametrize(
    "flags, expected",
    [
        ([False, True, False], True),
        ([True], True),
        ([False, False], False),
        ([None, False], False),
        ([None, None], False),
        ([], False),
    ],
)
def test_keep_group(flags, expected):
    assert keep_group(flags) is expected


def test_score_group_hand_computed():
    responses = [
        (GOOD, 0, True),  # fmt 1, cos 2.0 -> r = 2*2 + 1 = 5
        (GOOD, 0, False),  # fmt 1, cos 0.0 -> r = 1
        ("18", 1024, True),  # fmt 0, cos 1.5 -> r = 3
    ]
    out = score_group(responses, params=RewardParams())
    assert [o["format_reward"] for o in out] == [1.0, 1.0, 0.0]
    assert [o["cosine_reward"] for o in out] == pytest.approx([2.0, 0.0, 1.5])
    assert [o["reward"] for o in out] == pytest.approx([5.0, 1.0, 3.0])
    # mean 3, population std sqrt(8/3)
    a = 2 / math.sqrt(8 / 3)
    assert [o["advantage"] for o in out] == pytest.approx([a, -a, 0.0], rel=1e-5)
    assert set(out[0]) == {"format_reward", "cosine_reward", "reward", "advantage"}


def test_score_group_uses_params():
    params = RewardParams(w_cos=1.0, w_fmt=0.0, l_max=10)
    out = score_group([("x", 10, True), ("y", 10, False)], params=params)
    assert [o["reward"] for o in out] == pytest.approx([1.0, -10.0])
    assert out[0]["advantage"] > 0 > out[1]["advantage"]


def test_reward_params_from_config():
    cfg = DistillationConfig(
        w_cos=3.0,
        w_fmt=0.5,
        r0_correct=4.0,
        rL_correct=2.0,
        r0_wrong=-1.0,
        rL_wrong=-0.5,
        max_length_tokens=512,
        advantage_eps=1e-3,
    )
    assert RewardParams.from_config(cfg) == RewardParams(
        w_cos=3.0, w_fmt=0.5, r0_correct=4.0, rL_correct=2.0, r0_wrong=-1.0, rL_wrong=-0.5, l_max=512, eps=1e-3
    )
    assert RewardParams.from_config(DistillationConfig()) == RewardParams()


@pytest.mark.parametrize("correct", [True, False])
def test_longer_answers_earn_less_whether_right_or_wrong(correct):
    """AdvDistill (seed 001, section 3.1): the cosine reward "penalizes lengthy incorrect answers while still
    rewarding concise correct answers" -- with the defaults, reward falls with length on both sides."""
    rewards = [cosine_length_reward(n, correct) for n in range(0, 2049, 256)]
    assert all(a > b for a, b in zip(rewards, rewards[1:]))
    assert min(cosine_length_reward(n, True) for n in range(0, 4096, 64)) > max(
        cosine_length_reward(n, False) for n in range(0, 4096, 64))  # any correct answer beats any wrong one
