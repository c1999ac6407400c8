"""SFT example building: chat prompt, loss mask on the prompt only, truncation, padding (no Ray)."""

from __future__ import annotations

import pytest

from distill_ray.prompts import DEFAULT_SYSTEM_PROMPT
from distill_ray.training.sft_data import (
    IGNORE_INDEX,
    RowRejected,
    build_chat_messages,
    collate,
    end_of_turn,
    prompt_token_ids,
    tokenize_sft_example,
)

RESPONSE = "<think>2 plus 3 is 5.</think><answer>\\boxed{5}</answer>"


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from distill_ray.models.loading import load_tokenizer

    return load_tokenizer(tiny_model_dir)


def test_messages_default_custom_and_no_system():
    default = build_chat_messages("What is 2+3?", None, "{problem}")
    assert default == [
        {"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
        {"role": "user", "content": "What is 2+3?"},
    ]
    custom = build_chat_messages("2+3", "Be brief.", "Q: {problem} A:")
    assert custom[0]["content"] == "Be brief." and custom[1]["content"] == "Q: 2+3 A:"
    assert build_chat_messages("2+3", "", "{problem}") == [{"role": "user", "content": "2+3"}]


def test_end_of_turn_is_smollm2_im_end(tokenizer):
    assert end_of_turn(tokenizer) == "<|im_end|>" == tokenizer.eos_token


def test_labels_masked_exactly_on_prompt(tokenizer):
    messages = build_chat_messages("What is 2+3?", None, "{problem}")
    prompt = prompt_token_ids(tokenizer, messages)
    ex = tokenize_sft_example(tokenizer, messages, RESPONSE, max_length=512)
    n = len(prompt)
    assert ex["input_ids"][:n] == prompt
    assert ex["labels"][:n] == [IGNORE_INDEX] * n
    assert IGNORE_INDEX not in ex["labels"][n:]
    assert ex["labels"][n:] == ex["input_ids"][n:]
    assert ex["attention_mask"] == [1] * len(ex["input_ids"])
    # The prompt is the generation prompt the model will see at inference.
    assert tokenizer.decode(prompt).endswith("<|im_start|>assistant\n")
    # The supervised tokens decode to the response followed by the end-of-turn token.
    assert tokenizer.decode(ex["labels"][n:]) == RESPONSE + "<|im_end|>"
    assert ex["labels"][-1] == tokenizer.eos_token_id


def test_truncation_keeps_prompt_and_cuts_response(tokenizer):
    messages = build_chat_messages("What is 2+3?", None, "{problem}")
    n = len(prompt_token_ids(tokenizer, messages))
    ex = tokenize_sft_example(tokenizer, messages, RESPONSE, max_length=n + 3)
    assert len(ex["input_ids"]) == n + 3
    assert ex["labels"][:n] == [IGNORE_INDEX] * n
    full = tokenize_sft_example(tokenizer, messages, RESPONSE, max_length=512)
    assert ex["labels"][n:] == full["labels"][n : n + 3]


def test_prompt_too_long_is_rejected(tokenizer):
    messages = build_chat_messages("What is 2+3?", None, "{problem}")
    n = len(prompt_token_ids(tokenizer, messages))
    with pytest.raises(RowRejected, match="prompt longer than max_length"):
        tokenize_sft_example(tokenizer, messages, RESPONSE, max_length=n)


def test_collate_right_pads(tokenizer):
    a = {"input_ids": [5, 6, 7], "labels": [IGNORE_INDEX, 6, 7], "attention_mask": [1, 1, 1]}
    b = {"input_ids": [8], "labels": [8], "attention_mask": [1]}
    batch = collate([a, b], pad_id=2)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 2, 2]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 6, 7], [8, IGNORE_INDEX, IGNORE_INDEX]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_epoch_batches_resume_skips_consumed_samples(tokenizer):
    from distill_ray.training.sft_data import SFTDataset, epoch_batches

    rows = [{"problem": f"p{i}", "response": "r"} for i in range(20)]
    data = SFTDataset(rows, tokenizer, "", "{problem}", max_length=64)
    # Recover which rows a loader yields via the sampler's indices (the batches hold token ids).
    order = {w: [list(epoch_batches(data, 1, 0, 2, 7, r, w).dataset.indices) for r in range(w)] for w in (1, 2)}
    assert sorted(i for part in order[2] for i in part) == list(range(20))  # the ranks split one epoch
    assert order[2] != [list(epoch_batches(data, 0, 0, 2, 7, r, 2).dataset.indices) for r in range(2)]
    # After 3 micro-batches on each of 2 ranks (12 samples), every rank resumes right after its own.
    for r in range(2):
        resumed = epoch_batches(data, 1, 12, 2, 7, r, 2)
        assert list(resumed.dataset.indices) == order[2][r][6:]
    # A resume with 1 worker continues after the same 12 samples of the permutation.
    assert list(epoch_batches(data, 1, 12, 2, 7, 0, 1).dataset.indices) == order[1][0][12:]
    batch = next(iter(epoch_batches(data, 1, 0, 2, 7, 0, 2)))
    assert set(batch) == {"input_ids", "labels", "attention_mask"} and batch["input_ids"].shape[0] == 2
