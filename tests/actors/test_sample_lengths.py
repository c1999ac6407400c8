"""The generation row processor against an external-style teacher that reports only a request's total usage
(issue 14 item 12): each sample keeps its own length, so the AdvDistill length reward still ranks them."""

from __future__ import annotations

import pytest

from actors.generate import CoTGenerator, share_by_characters
from distill_ray.config import DistillationConfig, InferenceConfig
from distill_ray.models.teachers import Endpoint, Teacher
from distill_ray.rewards.advdistill import RewardParams, score_group

REPLIES = [  # one group: short right, long right, long wrong (as an R1-style API returns them)
    ("<think>6 + 6 = 12.</think><answer>\\boxed{12}</answer>", None),
    ("<answer>\\boxed{12}</answer>", "Six and six: count on from six, seven, eight, nine, ten, eleven, twelve. " * 6),
    ("<answer>\\boxed{13}</answer>", "Maybe it is thirteen, since one more than twelve is thirteen. " * 9),
]


def _chat_with_total_usage() -> dict:
    choices = [{"index": k, "finish_reason": "stop",
                "message": {"role": "assistant", "content": content, "reasoning_content": reasoning}}
               for k, (content, reasoning) in enumerate(REPLIES)]  # fmt: skip
    return {"id": "c", "object": "chat.completion", "created": 0, "model": "deepseek-reasoner", "choices": choices,
            "usage": {"prompt_tokens": 20, "completion_tokens": 300, "total_tokens": 320}}  # fmt: skip


def _generator(url: str, **inference) -> CoTGenerator:
    inf = InferenceConfig(engine="openai", base_url=url + "/v1", num_samples=3, max_retries=0, **inference)
    teacher = Teacher("api", "deepseek-reasoner", inf, "deepseek-reasoner", Endpoint(base_url=url + "/v1"))
    return CoTGenerator(teacher, DistillationConfig(keep="all"))


def test_each_sample_is_counted_with_the_teachers_tokenizer(scripted, tiny_model_dir):
    from distill_ray.models.loading import load_tokenizer

    scripted["answers"] = [(200, _chat_with_total_usage())]
    [outcome] = _generator(scripted["url"], tokenizer=str(tiny_model_dir)).process(
        [{"id": "p1", "problem": "What is 6+6?", "reference": "12"}])
    rows = outcome.rows
    tokenizer = load_tokenizer(tiny_model_dir)
    assert [r["completion_tokens"] for r in rows] == [len(tokenizer(r["response"])["input_ids"]) for r in rows]
    assert len({r["completion_tokens"] for r in rows}) == 3  # not the request's mean for every sample
    # The length reward now separates the two right answers (the mean gave them one advantage).
    mean = 300 // 3
    flat = score_group([(r["response"], mean, r["correct"]) for r in rows], params=RewardParams())
    assert flat[0]["advantage"] == pytest.approx(flat[1]["advantage"])
    assert rows[0]["advantage"] > rows[1]["advantage"] > rows[2]["advantage"]


def test_without_a_tokenizer_the_total_is_shared_by_characters(scripted):
    scripted["answers"] = [(200, _chat_with_total_usage())]
    [outcome] = _generator(scripted["url"]).process([{"id": "p1", "problem": "What is 6+6?", "reference": "12"}])
    lengths = [r["completion_tokens"] for r in outcome.rows]
    assert sum(lengths) == 300 and lengths[0] < lengths[1] < lengths[2]


@pytest.mark.parametrize("total, texts", [(10, ["a", "bb", "ccc"]), (7, ["x" * 5, "", "y" * 5]), (0, ["a"]),
                                          (5, ["", ""]), (101, ["ab"] * 3)])  # fmt: skip
def test_share_by_characters(total, texts):
    parts = share_by_characters(total, texts)
    assert len(parts) == len(texts) and (sum(parts) == total or not any(texts))
    for i in range(len(texts)):
        for j in range(len(texts)):
            if len(texts[i]) < len(texts[j]):
                assert parts[i] <= parts[j]
