"""White-box KD data without Ray: sample keys, top-k extraction, position alignment, the join, tokenizer checks."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from distill_ray.data import schemas
from distill_ray.errors import RowRejected
from distill_ray.training.kd_data import (
    KDDataset,
    collate_kd,
    join_logits,
    read_joined,
    response_positions,
    sample_key,
    teacher_forced_ids,
    token_mismatch,
    tokenizer_fingerprint,
    topk_of_positions,
)
from distill_ray.training.sft_data import IGNORE_INDEX

RESPONSE = "<think>2 plus 3 is 5.</think><answer>\\boxed{5}</answer>"


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from distill_ray.models.loading import load_tokenizer

    return load_tokenizer(tiny_model_dir)


def test_sample_key_prefers_sample_id_and_hashes_otherwise():
    assert sample_key({"sample_id": "abc", "problem": "p", "response": "r"}) == "abc"
    hashed = sample_key({"sample_id": None, "problem": "p", "response": "r"})
    assert hashed == sample_key({"problem": "p", "response": "r"}) and len(hashed) == 16
    assert hashed != sample_key({"problem": "p", "response": "r2"})
    assert sample_key({"problem": "ab", "response": "c"}) != sample_key({"problem": "a", "response": "bc"})


def test_teacher_forced_ids_are_sft_tokens(tokenizer):
    from distill_ray.training.sft_data import build_chat_messages, tokenize_sft_example

    prompt, response = teacher_forced_ids(tokenizer, "What is 2+3?", RESPONSE, "", "{problem}", 512)
    ex = tokenize_sft_example(tokenizer, build_chat_messages("What is 2+3?", "", "{problem}"), RESPONSE, 512)
    assert prompt + response == ex["input_ids"]
    assert tokenizer.decode(response) == RESPONSE + "<|im_end|>"
    short_prompt, short_response = teacher_forced_ids(tokenizer, "What is 2+3?", RESPONSE, "", "{problem}",
                                                      len(prompt) + 3)  # fmt: skip
    assert short_prompt == prompt and short_response == response[:3]
    with pytest.raises(RowRejected):
        teacher_forced_ids(tokenizer, "What is 2+3?", RESPONSE, "", "{problem}", len(prompt))


def test_response_positions_predict_the_response_tokens():
    keep = response_positions([3, 2], [2, 3], width=6)
    # Row 0: prompt 0-2, response 3-4 -> predicted at 2, 3. Row 1: prompt 0-1, response 2-4 -> at 1, 2, 3.
    assert keep.tolist() == [[False, False, True, True, False, False], [False, True, True, True, False, False]]


def test_topk_of_positions_uses_full_softmax():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    ids, logprobs = topk_of_positions(logits, 2)
    assert ids.dtype == torch.int32 and ids.tolist() == [[0, 1]]
    assert torch.allclose(logprobs, torch.log_softmax(logits, -1)[:, :2])
    assert logprobs.exp().sum() < 1  # the tail mass stays with the teacher


def _shard_rows():
    """Two samples with K = 2: prompt lengths 3 and 2, response lengths 2 and 3."""
    return [
        {"sample_id": "a", "prompt_ids": [10, 11, 12], "response_ids": [20, 21],
         "topk_ids": [20, 5, 21, 6], "topk_logprobs": [-0.1, -3.0, -0.2, -2.5]},
        {"sample_id": "b", "prompt_ids": [30, 31], "response_ids": [40, 41, 42],
         "topk_ids": [40, 1, 41, 2, 42, 3], "topk_logprobs": [-0.3, -2.0, -0.4, -2.1, -0.5, -2.2]},
    ]  # fmt: skip


def test_collate_aligns_topk_with_the_predicting_positions():
    import pyarrow as pa

    data = KDDataset(pa.Table.from_pylist(_shard_rows(), schema=schemas.logits("float32")), max_length=64)
    batch = collate_kd([data[0], data[1]], pad_id=0)
    assert batch["input_ids"].tolist() == [[10, 11, 12, 20, 21], [30, 31, 40, 41, 42]]
    assert batch["attention_mask"].tolist() == [[1] * 5, [1] * 5]
    assert batch["kd_mask"].tolist() == [[False, False, True, True, False], [False, True, True, True, False]]
    # labels[t] is the token position t predicts; the stored top-k at t describes that same token.
    assert batch["labels"].tolist() == [[IGNORE_INDEX, IGNORE_INDEX, 20, 21, IGNORE_INDEX],
                                        [IGNORE_INDEX, 40, 41, 42, IGNORE_INDEX]]  # fmt: skip
    assert batch["topk_ids"][0, 2].tolist() == [20, 5] and batch["topk_ids"][1, 3].tolist() == [42, 3]
    assert batch["topk_logprobs"][1, 1].tolist() == pytest.approx([-0.3, -2.0])
    # A tighter max_length cuts the response tail together with its top-k rows.
    cut = KDDataset(pa.Table.from_pylist(_shard_rows(), schema=schemas.logits("float32")), max_length=4)[1]
    assert list(cut["response"]) == [40, 41] and cut["topk_ids"].shape == (2, 2)


def test_join_by_key_survives_shuffling_duplicates_and_missing(tmp_path):
    import pyarrow as pa

    folder = tmp_path / "logits"
    folder.mkdir()
    rows = _shard_rows()
    pq.write_table(pa.Table.from_pylist(rows[:1], schema=schemas.logits()), folder / "part-0.parquet")
    pq.write_table(pa.Table.from_pylist(rows[1:], schema=schemas.logits()), folder / "part-1.parquet")
    missing, stats = join_logits(["b", "zzz", "a", "b"], folder, tmp_path / "joined.arrow")
    assert missing == [1]
    table = read_joined(tmp_path / "joined.arrow")
    assert stats == {"rows": 3, "response_tokens": 8}
    assert sorted(table.column("sample_id").to_pylist()) == ["a", "b", "b"]
    for row in table.to_pylist():
        source = next(r for r in rows if r["sample_id"] == row["sample_id"])
        assert row["response_ids"] == source["response_ids"] and row["topk_ids"] == source["topk_ids"]
        assert np.allclose(row["topk_logprobs"], source["topk_logprobs"], atol=2e-3)  # stored as float16


def test_tokenizer_checks(tokenizer, tmp_path):
    from transformers import AutoTokenizer

    assert tokenizer_fingerprint(tokenizer) == tokenizer_fingerprint(tokenizer)
    other = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    other.add_tokens(["<not-in-the-teacher>"])
    assert tokenizer_fingerprint(other) != tokenizer_fingerprint(tokenizer)
    row = {"problem": "What is 2+3?", "response": RESPONSE}
    prompt, response = teacher_forced_ids(tokenizer, row["problem"], row["response"], "", "{problem}", 512)
    stored = {"prompt_ids": prompt, "response_ids": response}
    assert token_mismatch(tokenizer, row, stored, "", "{problem}") is None
    assert token_mismatch(tokenizer, row, {**stored, "response_ids": response[:-1] + [7]}, "", "{problem}")
    assert token_mismatch(tokenizer, row, stored, None, "{problem}") == "prompt token ids differ"
