"""Row checks and batching of the advdistill, dpo and rm jobs (no Ray); the shared row reader: test_rows.py."""

from __future__ import annotations

import json

import pytest
import torch

from distill_ray.training.preference_data import (
    GroupDataset,
    PairDataset,
    collate_group,
    collate_pairs,
    group_problem,
    pair_problem,
)
from distill_ray.training.reward_data import RewardRowsDataset, collate_scored, reward_input_ids, reward_meta
from distill_ray.training.rows import score_problem
from distill_ray.training.sft_data import IGNORE_INDEX

GROUP = {"problem": "What is 2+3?", "responses": ["<answer>5</answer>", "<answer>6</answer>"],
         "advantages": [1.0, -1.0], "correct": [True, False]}  # fmt: skip


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from distill_ray.models.loading import load_tokenizer

    return load_tokenizer(tiny_model_dir)


@pytest.mark.parametrize("change, reason", [
    ({}, None),
    ({"correct": [False, False]}, "no correct response in group"),
    ({"advantages": [1.0]}, "advantages does not have one entry per response"),
    ({"correct": [True, None]}, "correct has a null entry"),
    ({"responses": []}, "missing responses"),
    ({"responses": ["a", ""]}, "a response is empty or not a string"),
    ({"problem": None}, "missing problem"),
])  # fmt: skip
def test_group_problem(change, reason):
    assert group_problem({**GROUP, **change}) == reason


@pytest.mark.parametrize("change, reason", [
    ({}, None),
    ({"beta": None}, None),
    ({"beta": float("nan")}, None),
    ({"rejected": "A"}, "chosen and rejected are identical"),
    ({"beta": 0}, "beta is not a positive number"),
    ({"chosen": ""}, "empty chosen"),
])  # fmt: skip
def test_pair_problem(change, reason):
    assert pair_problem({"problem": "p", "chosen": "A", "rejected": "B", "beta": 0.2, **change}) == reason


def test_group_batch_is_one_problem(tokenizer):
    item = GroupDataset([GROUP], tokenizer, "", "{problem}", 64)[0]
    batch = collate_group(item, tokenizer.pad_token_id)
    assert batch["input_ids"].shape[0] == 2 and batch["labels"].shape == batch["input_ids"].shape
    assert batch["advantages"].tolist() == [1.0, -1.0] and batch["correct"].tolist() == [True, False]
    # Both responses follow the same prompt, which is masked out of the labels.
    n_prompt = int((batch["labels"][0] == IGNORE_INDEX).long().argmin())
    assert torch.equal(batch["input_ids"][0, :n_prompt], batch["input_ids"][1, :n_prompt])


def test_pairs_stack_chosen_then_rejected_with_default_beta(tokenizer):
    rows = [{"problem": "p", "chosen": "good answer", "rejected": "bad", "beta": None},
            {"problem": "q", "chosen": "yes", "rejected": "no", "beta": 0.3}]  # fmt: skip
    data = PairDataset(rows, tokenizer, "", "{problem}", 64)
    batch = collate_pairs([data[0], data[1]], tokenizer.pad_token_id, default_beta=0.1)
    assert batch["input_ids"].shape[0] == 4
    assert batch["betas"].tolist() == pytest.approx([0.1, 0.3])
    chosen_tokens = batch["labels"][0][batch["labels"][0] != IGNORE_INDEX].tolist()
    assert tokenizer.decode(chosen_tokens) == "good answer<|im_end|>"
    rejected_tokens = batch["labels"][2][batch["labels"][2] != IGNORE_INDEX].tolist()
    assert tokenizer.decode(rejected_tokens) == "bad<|im_end|>"


def test_reward_inputs_and_meta(tokenizer):
    ids = reward_input_ids(tokenizer, "What is 2+3?", "5", "", "{problem}", 64)
    assert tokenizer.decode(ids).endswith("<|im_start|>assistant\n5<|im_end|>")
    data = RewardRowsDataset([{"problem": "p", "response": "r", "rv": 7}], tokenizer, "rv", "", "{problem}", 64)
    batch = collate_scored([data[0]], tokenizer.pad_token_id)
    assert batch["targets"].tolist() == [7.0] and batch["attention_mask"].sum() == batch["input_ids"].shape[1]
    meta = reward_meta("pointwise", "rv", 0, 9, "", "{problem}", 64, "tiny:smollm2")
    assert meta["target"] == "rv" and meta["to_unit_range"] == "sigmoid" and json.dumps(meta)
    assert score_problem(None, "rv") == "missing rv score" and score_problem("7", "rv") == "rv score is not a number"
    assert score_problem(7, "rv") is None
