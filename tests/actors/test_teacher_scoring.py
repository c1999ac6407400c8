"""Reading a teacher's vLLM-style prompt_logprobs into per-token scores (actors/teacher_scoring.py), and the
scorer against a scripted loopback server: retries, refusals, and answers that miss a position."""

from __future__ import annotations

import pytest

from actors.teacher_client import TeacherRejected
from actors.teacher_scoring import TeacherScorer, read_prompt_logprobs


def _entry(scores: dict[int, float]) -> dict:
    ranked = sorted(scores, key=lambda i: -scores[i])
    return {str(i): {"logprob": scores[i], "rank": ranked.index(i) + 1, "decoded_token": f"t{i}"} for i in scores}


SEQUENCE = [5, 9, 2, 7]
# Position 2 holds a token outside the top-2 (listed at its own rank); position 3's token is the most likely.
ENTRIES = [None, _entry({9: -0.1, 4: -2.5}), _entry({1: -0.2, 3: -1.9, 2: -4.0}), _entry({7: -0.05, 8: -3.0})]


def test_read_prompt_logprobs_aligns_scores_with_the_given_tokens():
    scored = read_prompt_logprobs(ENTRIES, SEQUENCE, start=2, top_k=2)
    assert scored.logprobs == [-4.0, -0.05]
    assert scored.top_ids == [[1, 3], [7, 8]] and scored.top_logprobs == [[-0.2, -1.9], [-0.05, -3.0]]
    assert read_prompt_logprobs(ENTRIES, SEQUENCE, start=1, top_k=1).top_ids == [[9], [1], [7]]


@pytest.mark.parametrize("entries, words", [
    (None, "no prompt_logprobs"),
    (ENTRIES[:3], "no prompt_logprobs"),
    ([None, _entry({9: -0.1}), _entry({1: -0.2}), _entry({7: -0.1})], "did not score token 2"),
])  # fmt: skip
def test_read_prompt_logprobs_refuses_incomplete_answers(entries, words):
    with pytest.raises(ValueError, match=words):
        read_prompt_logprobs(entries, SEQUENCE, start=1, top_k=2)


def _completion(prompt_logprobs: list) -> dict:
    return {"id": "c", "object": "text_completion", "created": 0, "model": "t",
            "choices": [{"index": 0, "text": "x", "finish_reason": "length", "logprobs": None,
                         "prompt_logprobs": prompt_logprobs}]}  # fmt: skip


def test_scorer_retries_server_errors_and_rejects_refusals(scripted):
    scorer = TeacherScorer(scripted["url"] + "/v1", "t", timeout_s=5, max_retries=2)
    scripted["answers"] = [(503, {"error": {"message": "busy"}}), (200, _completion(ENTRIES))]
    [scored] = scorer.score([SEQUENCE], [1], top_k=2)
    assert scored.logprobs == [-0.1, -4.0, -0.05] and scripted["requests"] == 2
    scripted["answers"] = [(400, {"error": {"message": "token id 99999 is outside the vocabulary"}})]
    with pytest.raises(TeacherRejected, match="outside the vocabulary"):
        scorer.score([SEQUENCE], [1], top_k=2)
    with pytest.raises(ValueError, match="position 1 or later"):
        scorer.score([SEQUENCE], [0], top_k=2)
