"""Judge reply parsing: accept common wrappings, refuse anything ambiguous."""

import pytest

from distill_ray.grading.judge import parse_difficulty, parse_judgement, parse_score


@pytest.mark.parametrize("reply, level", [
    ("medium", "medium"), ("Difficulty: HARD.", "hard"), ("**easy**", "easy"),
    ("<think>is it easy or hard? it has many steps</think>\nmedium", "medium"),
    ("This is a moderate problem.", "medium"), ("challenging", "hard"),
])  # fmt: skip
def test_difficulty_is_read_from_common_wrappings(reply, level):
    assert parse_difficulty(reply) == level


@pytest.mark.parametrize("reply", ["", None, "easy or hard", "I cannot tell", "5"])
def test_ambiguous_or_missing_difficulty_is_refused(reply):
    assert parse_difficulty(reply) is None


@pytest.mark.parametrize("reply, score", [
    ("7", 7), ("Score: 3", 3), ("\\boxed{4}", 4), ("7/9", 7), ("6 out of 9", 6), ("<think>maybe 2 or 8</think> 5", 5),
])  # fmt: skip
def test_scores_are_read_from_common_wrappings(reply, score):
    assert parse_score(reply) == score


@pytest.mark.parametrize("reply", ["", "3 or 4", "10", "-1", "4.5", "no idea", "7/9 and 8/9"])
def test_ambiguous_or_out_of_range_scores_are_refused(reply):
    assert parse_score(reply) is None


def test_unknown_criterion_is_an_error():
    with pytest.raises(ValueError, match="known: difficulty, rv, cd"):
        parse_judgement("style", "5")


@pytest.mark.parametrize("reply", ["<think>Okay, the solution has 3", "<think>It looks medium, but",
                                   "<THINK>first 7, then</THINK> <think>maybe 2"])  # fmt: skip
def test_a_judge_cut_mid_thought_has_no_verdict(reply):
    """A reasoning judge out of tokens (issue 14 item 10): the numbers inside its reasoning are not verdicts."""
    assert parse_score(reply) is None and parse_difficulty(reply) is None


def test_the_verdict_after_a_closed_think_block_counts():
    assert parse_score("<think>between 3 and 8</think>\n**6**") == 6
    assert parse_difficulty("<Think>easy? no</Think> Difficulty: hard") == "hard"
