"""The teacher and reward clients against a real loopback HTTP server that answers from a script: a refused
request fails at once with the server's message, a server error is retried, an outage ends in one line."""

from __future__ import annotations

import pytest

from actors.reward_client import RewardClient, RewardServiceError
from actors.teacher_client import (
    OpenAITeacherClient,
    TeacherRejected,
    TeacherUnavailable,
    chat_with_retries,
    reply_text,
)

CHAT = {"id": "c", "object": "chat.completion", "created": 0, "model": "m",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "4"}}]}  # fmt: skip


def _error(message: str) -> dict:
    return {"error": {"message": message, "type": "invalid_request_error"}}


def test_teacher_client_retries_server_errors_and_rejects_refusals(scripted):
    client = OpenAITeacherClient(scripted["url"] + "/v1", None, timeout_s=5)
    body = {"model": "m", "messages": [{"role": "user", "content": "2+2?"}]}
    scripted["answers"] = [(500, _error("engine hiccup")), (503, _error("busy")), (200, CHAT)]
    assert chat_with_retries(client, body, max_retries=3, base_delay=0.01)["choices"][0]["message"]["content"] == "4"
    assert scripted["requests"] == 3

    scripted["answers"], scripted["requests"] = [(400, _error("the prompt has 9000 tokens"))], 0
    with pytest.raises(TeacherRejected, match="teacher rejected the request: BadRequestError: .*9000 tokens"):
        chat_with_retries(client, body, max_retries=3, base_delay=0.01)
    assert scripted["requests"] == 1

    scripted["answers"], scripted["requests"] = [], 0  # busy for good
    with pytest.raises(TeacherUnavailable, match=r"teacher unreachable after 3 attempt\(s\): InternalServerError"):
        chat_with_retries(client, body, max_retries=2, base_delay=0.01)
    assert scripted["requests"] == 3


def test_a_local_error_is_a_bug_that_propagates_not_a_refused_row(scripted):
    """A body the client itself cannot send (here: no model) never reached the teacher: it is not that row's fault,
    so it is neither a TeacherRejected nor retried; it stops the stage as the bug it is."""
    client = OpenAITeacherClient(scripted["url"] + "/v1", None, timeout_s=5)
    with pytest.raises(TypeError, match="Missing required arguments"):
        chat_with_retries(client, {"messages": [{"role": "user", "content": "2+2?"}]}, max_retries=3, base_delay=0.01)
    assert scripted["requests"] == 0


def test_reward_client_retries_server_errors_and_reports_refusals(scripted):
    client = RewardClient(scripted["url"], timeout_s=5, max_retries=2)
    scripted["answers"] = [(502, _error("proxy")), (200, {"results": [{"reward": 1.0}]})]
    assert client.rewards([{"prompt": "p", "response": "r", "reference": "1"}]) == [{"reward": 1.0}]
    scripted["answers"] = [(400, _error("items[0].prompt: required"))]
    with pytest.raises(RewardServiceError, match="refused the request: 400 items\\[0\\].prompt: required"):
        client.rewards([{}])
    scripted["answers"] = []
    with pytest.raises(RewardServiceError, match="unreachable after 3 tries: 503 busy"):
        client.rewards([{}])
    client.close()


def test_a_separate_reasoning_field_comes_back_as_a_think_block(scripted):
    """DeepSeek's API and vLLM's reasoning parsers return the CoT as `reasoning_content` (issue 14 item 11)."""
    chat = {**CHAT, "choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": "\\boxed{4}", "reasoning_content": "2 + 2 = 4"}}]}  # fmt: skip
    scripted["answers"] = [(200, chat)]
    client = OpenAITeacherClient(scripted["url"] + "/v1", None, timeout_s=5)
    reply = chat_with_retries(client, {"model": "m", "messages": [{"role": "user", "content": "2+2?"}]}, 0)
    assert reply_text(reply["choices"][0]["message"]) == "<think>2 + 2 = 4</think>\\boxed{4}"
    assert reply_text({"content": "plain"}) == "plain"
    assert reply_text({"content": "<think>a</think>b", "reasoning": "a"}) == "<think>a</think>b"  # not twice
