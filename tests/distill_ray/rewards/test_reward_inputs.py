"""What the reward path reads as the response: think blocks a chat template opened (issue 14 item 7) and
OpenRLHF queries decoded with their control tokens kept (item 8), for the chat templates of common families."""

from __future__ import annotations

import pytest

from distill_ray.grading.grader import grade
from distill_ray.grading.parsing import assistant_turn, prompt_opens_think
from distill_ray.rewards.advdistill import format_reward
from distill_ray.rewards.protocol import RewardItem, parse_openrlhf_request, split_query

# Issue 14 item 7: a completion produced after a template that already put `<think>` in the prompt.
OPENED_COMPLETION = "Adding 6 and 6 gives 12.\n</think>\n<answer>\\boxed{12}</answer>"
R1_PROMPT = "<｜begin▁of▁sentence｜><｜User｜>What is 6+6?<｜Assistant｜><think>\n"
QWEN_PROMPT = "<|im_start|>user\nWhat is 6+6?<|im_end|>\n<|im_start|>assistant\n"


def test_format_reward_of_a_completion_after_an_opened_think():
    assert format_reward(OPENED_COMPLETION) == 0.0  # as a whole turn it opens no think block
    assert format_reward(OPENED_COMPLETION, think_opened=True) == 1.0
    # A completion that opens its own block is not given a second one, and a layout error stays an error.
    own = "<think>6 and 6.</think><answer>\\boxed{12}</answer>"
    assert format_reward(own, think_opened=True) == 1.0
    assert format_reward("Adding gives 12. <answer>\\boxed{12}</answer>", think_opened=True) == 0.0


@pytest.mark.parametrize("prompt, opened", [
    (R1_PROMPT, True),
    (QWEN_PROMPT + "<think>\n\n", True),  # Qwen3 / QwQ generation prompt
    (QWEN_PROMPT + "<THINK> ", True),
    (QWEN_PROMPT, False),
    ("<|im_start|>system\nThink inside <think> </think>, then answer.<|im_end|>\n" + QWEN_PROMPT, False),
    ("Start your reply with <think>. What is 6+6?", False),  # mentions the tag, does not end with it
    ("", False),
])  # fmt: skip
def test_prompt_opens_think(prompt, opened):
    assert prompt_opens_think(prompt) is opened


def test_drafts_in_an_opened_think_never_count():
    completion = "Maybe \\boxed{9}? No: 4*5 is 20.\n</think>\nThe result is 20."
    assert grade(completion, "20").correct is True  # the closing tag alone already ends the reasoning
    unfinished = "Maybe \\boxed{9}? Let me recheck 4*5"
    assert grade(unfinished, "9").correct is True  # read as a whole reply, the draft box is the answer
    verdict = grade(assistant_turn(unfinished, True), "9")
    assert verdict.correct is False and verdict.reason == "unclosed think block"


def test_reward_item_decides_think_opened_item_then_setting_then_prompt():
    auto = RewardItem(R1_PROMPT, OPENED_COMPLETION)
    assert auto.assistant_turn().startswith("<think>")
    assert not RewardItem(QWEN_PROMPT, OPENED_COMPLETION).assistant_turn().startswith("<think>")
    assert RewardItem(QWEN_PROMPT, OPENED_COMPLETION).assistant_turn(True).startswith("<think>")
    assert not auto.assistant_turn(False).startswith("<think>")
    assert RewardItem("problem", OPENED_COMPLETION, think_opened=True).assistant_turn(False).startswith("<think>")


RESPONSE = "<think>6 and 6 make 12.</think>\n<answer>\\boxed{12}</answer>"
# (family, templated prompt, end-of-turn token, pad token): as each tokenizer decodes with special tokens kept.
FAMILIES = [
    ("qwen2.5", "<|im_start|>system\nReason in <think> and answer in <answer> tags.<|im_end|>\n"
                "<|im_start|>user\nWhat is 6+6?<|im_end|>\n<|im_start|>assistant\n", "<|im_end|>", "<|endoftext|>"),
    ("llama3", "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWhat is 6+6?<|eot_id|>"
               "<|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|>", "<|finetune_right_pad_id|>"),
    ("mistral", "<s>[INST] What is 6+6? [/INST]", "</s>", "</s>"),
    ("gemma", "<bos><start_of_turn>user\nWhat is 6+6?<end_of_turn>\n<start_of_turn>model\n", "<end_of_turn>", "<pad>"),
    ("phi3", "<|user|>\nWhat is 6+6?<|end|>\n<|assistant|>\n", "<|end|>", "<|endoftext|>"),
    ("deepseek-r1", "<｜begin▁of▁sentence｜><｜User｜>What is 6+6?<｜Assistant｜>", "<｜end▁of▁sentence｜>",
                    "<｜end▁of▁sentence｜>"),
    ("smollm2", "<|im_start|>user\nWhat is 6+6?<|im_end|>\n<|im_start|>assistant\n", "<|im_end|>", "<|im_end|>"),
]  # fmt: skip


@pytest.mark.parametrize("family, prompt, end, pad", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_split_query_with_pads_and_end_of_turn(family, prompt, end, pad):
    # Issue 14 item 8: left pads, the prompt, the response, the end-of-turn token, right pads.
    query = pad * 3 + prompt + RESPONSE + end + pad * 4
    assert split_query(query, prompt) == RESPONSE
    # Some clients send the prompt decoded without its control tokens, or the bos twice.
    bare = prompt
    for token in ("<|im_start|>", "<|im_end|>", "<|begin_of_text|>", "<|eot_id|>", "<s>", "<bos>", "<|user|>"):
        bare = bare.replace(token, "")
    assert split_query(query, bare) == RESPONSE
    item = parse_openrlhf_request({"query": [query], "prompts": [prompt], "labels": ["12"]}, 4)[0]
    assert item.response == RESPONSE and item.prompt == prompt
    assert format_reward(item.assistant_turn()) == 1.0 and grade(item.assistant_turn(), "12").correct is True


def test_split_query_keeps_an_opened_think_detectable():
    query = "<|endoftext|>" * 2 + R1_PROMPT + OPENED_COMPLETION + "<｜end▁of▁sentence｜>"
    item = parse_openrlhf_request({"query": [query], "prompts": [R1_PROMPT], "labels": ["12"]}, 4)[0]
    assert item.response == OPENED_COMPLETION
    assert format_reward(item.assistant_turn()) == 1.0


def test_split_query_without_a_match_grades_the_whole_query():
    assert split_query("<|endoftext|>some reply \\boxed{3}<|im_end|>", "a prompt that is not there") == (
        "some reply \\boxed{3}")
    assert split_query("<pad><pad>reply<eos>", "") == "reply"
