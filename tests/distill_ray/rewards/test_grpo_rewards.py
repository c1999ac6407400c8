"""Reward arithmetic of GRPO with distilled RMs (distill_ray/rewards/grpo.py) and the service's wire format."""

from __future__ import annotations

import pytest

from distill_ray.models.openai_protocol import ProtocolError
from distill_ray.rewards.grpo import RewardWeights, boxed_format_reward, interval_penalty, score_item
from distill_ray.rewards.protocol import openrlhf_response, parse_openrlhf_request, parse_rewards_request


@pytest.mark.parametrize("score, expected", [(0.3, 0.0), (0.45, 0.0), (0.6, 0.0), (0.1, -0.2), (0.0, -0.3),
                                             (0.9, -0.3), (1.0, -0.4)])  # fmt: skip
def test_interval_penalty_zero_inside_linear_outside(score, expected):
    assert interval_penalty(score, 0.3, 0.6) == pytest.approx(expected)


def test_interval_penalty_slope_is_one_on_both_sides():
    below = [interval_penalty(x, 0.4, 0.5) for x in (0.1, 0.2, 0.3)]
    above = [interval_penalty(x, 0.4, 0.5) for x in (0.6, 0.7, 0.8)]
    assert below[1] - below[0] == pytest.approx(0.1) and below[2] - below[1] == pytest.approx(0.1)
    assert above[0] - above[1] == pytest.approx(0.1) and above[1] - above[2] == pytest.approx(0.1)
    assert interval_penalty(0.45, 0.45, 0.45) == 0.0
    with pytest.raises(ValueError):
        interval_penalty(0.5, 0.6, 0.4)


def test_composite_weights_and_terms():
    w = RewardWeights(w_format=0.5, w_accuracy=2.0, lambda_rv=3.0, lambda_cd=10.0, rv_interval=(0.2, 0.4),
                      cd_interval=(0.5, 0.5))  # fmt: skip
    # format 1, correct, rv 0.6 (0.2 above), cd 0.45 (0.05 below)
    both = score_item(1.0, True, 0.6, 0.45, ("rv", "cd"), w)
    assert both["reward"] == pytest.approx(0.5 + 2.0 - 3.0 * 0.2 - 10.0 * 0.05)
    assert (both["r_rv"], both["r_cd"]) == (pytest.approx(-0.2), pytest.approx(-0.05))
    assert score_item(1.0, True, 0.6, 0.45, ("rv",), w)["reward"] == pytest.approx(0.5 + 2.0 - 0.6)
    assert score_item(1.0, True, 0.6, 0.45, ("cd",), w)["reward"] == pytest.approx(0.5 + 2.0 - 0.5)
    vanilla = score_item(0.0, False, 0.6, 0.45, (), w)
    assert vanilla["reward"] == 0.0 and vanilla["r_rv"] == pytest.approx(-0.2)  # parts still reported
    assert score_item(1.0, None, None, None, (), w)["reward"] == 0.5  # no reference: no accuracy credit
    with pytest.raises(ValueError, match="no rv score"):
        score_item(1.0, True, None, 0.5, ("rv",), w)


def test_boxed_format():
    assert boxed_format_reward("so \\boxed{12}.") == 1.0
    assert boxed_format_reward("the answer is 12") == 0.0


def test_parse_rewards_request():
    items, setting = parse_rewards_request(
        {"items": [{"prompt": "p", "response": "r", "reference": 7}, {"prompt": "q", "response": "s", "reference": " "}],
         "setting": "cd"}, max_items=4)  # fmt: skip
    assert [(i.prompt, i.response, i.reference) for i in items] == [("p", "r", "7"), ("q", "s", None)]
    assert setting == "cd"
    with pytest.raises(ProtocolError) as err:
        parse_rewards_request({"items": [{"prompt": "p", "response": "r"}] * 5}, max_items=4)
    assert err.value.status_code == 413


def test_parse_openrlhf_request_strips_prompt_and_end_tokens():
    items = parse_openrlhf_request({"query": ["<s>Q: 1+1?\nA: \\boxed{2}<|im_end|><|endoftext|>", "other text"],
                                    "prompts": ["<s>Q: 1+1?\nA: ", "prompt not a prefix"], "labels": ["2", None]},
                                   max_items=8)  # fmt: skip
    assert items[0].response == "\\boxed{2}"
    assert items[0].reference == "2" and items[1].reference is None
    assert items[1].response == "other text"  # no prompt prefix to cut: the whole query is the response
    assert parse_openrlhf_request({"query": ["x"]}, 8)[0].prompt == ""  # prompts and labels are optional


def test_openrlhf_response_shape():
    results = [score_item(1.0, True, 0.5, None, (), RewardWeights()), score_item(0.0, False, 0.2, None, (), RewardWeights())]
    body = openrlhf_response(results)
    assert body["rewards"] == [2.0, 0.0] and body["scores"] == [1.0, 0.0]
    assert body["extra_logs"] == {"format": [1.0, 0.0], "accuracy": [1.0, 0.0], "rv": [0.5, 0.2]}  # no cd model: no cd log


def test_config_setting_needs_its_models():
    from pydantic import ValidationError

    from distill_ray.config.reward import RewardConfig

    with pytest.raises(ValidationError, match="needs cd_model"):
        RewardConfig(setting="rv_cd", rv_model="/m/rv")
    assert RewardConfig(setting="rv_cd", url="http://127.0.0.1:8000/reward").terms() == ("rv", "cd")
    with pytest.raises(ValidationError, match="rv_interval"):
        RewardConfig(rv_interval=(0.7, 0.2))
