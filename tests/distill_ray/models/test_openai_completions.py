"""Legacy completions on the wire (distill_ray/models/openai_completions.py): token-id prompts, echo, prompt logprobs.

No Ray, no model: requests are parsed and validated, and bodies are built from hand-made score entries (the
engine's `TokenLogprob`) and a four-token vocabulary whose bytes are written out here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import httpx
import openai
import pytest
from openai.types import Completion

from distill_ray.models.openai_completions import (
    COMPLETION_DEFAULT_MAX_TOKENS,
    NoCompletion,
    completion_response,
    no_completions,
    parse_completion_request,
    prompt_echo,
)
from distill_ray.models.openai_protocol import MIN_LOGPROB, ProtocolError
from distill_ray.models.token_bytes import token_name
from distill_ray.models.token_logprobs import TokenAlternative, TokenLogprob

# id -> exact bytes: "Hi", " 答" split after its first two bytes, and "!"
PIECES = {7: b"Hi", 8: b" \xe7\xad", 9: b"\x94", 10: b"!"}


class FakeTokenBytes:
    """The engine's TokenBytes for PIECES: exact bytes, OpenAI-style names, joins."""

    def raw(self, token_id: int) -> bytes:
        return PIECES[token_id]

    def name(self, token_id: int) -> str:
        return token_name(PIECES[token_id])

    def join(self, ids) -> bytes:
        return b"".join(PIECES[t] for t in ids)


TOKENS = FakeTokenBytes()
PROMPT = [7, 8, 9, 10]  # "Hi 答!"


def alt(token_id: int, logprob: float) -> TokenAlternative:
    return TokenAlternative(TOKENS.name(token_id), logprob, PIECES[token_id], token_id)


def scores() -> list:
    """Score entries for PROMPT as the engine returns them (3 alternatives each): None, then one per token."""
    return [
        None,
        TokenLogprob(TOKENS.name(8), -0.5, [alt(8, -0.5), alt(10, -1.5), alt(7, -2.0)], PIECES[8], 8, rank=1),
        TokenLogprob(TOKENS.name(9), -3.0, [alt(7, -0.1), alt(10, -2.5), alt(8, -2.9)], PIECES[9], 9, rank=4),
        TokenLogprob(TOKENS.name(10), float("-inf"), [alt(7, -0.2), alt(8, -1.9), alt(9, -4.0)], PIECES[10], 10,
                     rank=4),
    ]  # fmt: skip


@dataclass
class FakeResult:
    text: str
    finish_reason: str = "stop"
    completion_tokens: int = 1
    logprobs: list | None = None


def body(**kw) -> dict:
    return completion_response_for(parse_completion_request({"prompt": PROMPT, **kw}))


def completion_response_for(req, results=None) -> dict:
    per_prompt = [results if results is not None else no_completions(req)]
    echo = prompt_echo(PROMPT, scores(), TOKENS, req)
    return completion_response(per_prompt, "teacher", [len(PROMPT)], created=1, echoes=[echo])


# ---- requests ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prompt, prompts",
    [
        ("2+2=", ["2+2="]),
        (["a", "b"], ["a", "b"]),
        ([5, 6, 7], [[5, 6, 7]]),
        ([[5, 6], [7]], [[5, 6], [7]]),
        ([0], [[0]]),
    ],
)
def test_prompt_shapes(prompt, prompts):
    assert parse_completion_request({"prompt": prompt}).prompts == prompts


@pytest.mark.parametrize(
    "prompt, message",
    [
        ([], "prompt list is empty"),
        ([[1], []], "prompt[1] is []"),
        (["a", 3], "prompt[1] is 3; a list of strings holds only strings"),
        ([1, -2], "prompt[1] is -2"),
        ([True, 2], "prompt[0] is True"),
        ([1.5], "prompt[0] is 1.5"),
        ([1, "a"], "prompt[1] is 'a'"),
        ([[1, 2], "x"], "prompt[1] is 'x'"),
        ([[1, "2"]], "prompt[0][1] is '2'"),
        ({"ids": [1]}, "must be a string, a list of strings, a list of token ids or a list of token-id lists"),
        (None, "must be a string"),
    ],
)
def test_bad_prompts_are_400_naming_prompt(prompt, message):
    with pytest.raises(ProtocolError) as info:
        parse_completion_request({"prompt": prompt})
    assert info.value.status_code == 400 and info.value.param == "prompt"
    assert info.value.message.startswith("prompt: ") and message in info.value.message


def test_missing_prompt_is_400():
    with pytest.raises(ProtocolError) as info:
        parse_completion_request({"max_tokens": 3})
    assert info.value.param == "prompt"


@pytest.mark.parametrize(
    "fields, param",
    [
        ({"max_tokens": 0}, "max_tokens"),  # nothing to generate and nothing to score
        ({"max_tokens": 0, "logprobs": 3}, "max_tokens"),  # logprobs without echo only covers generated tokens
        ({"max_tokens": -1, "echo": True}, "max_tokens"),
        ({"prompt_logprobs": -1}, "prompt_logprobs"),  # vLLM's "whole vocabulary"
        ({"prompt_logprobs": 21}, "prompt_logprobs"),
        ({"logprobs": 21, "echo": True}, "logprobs"),
        ({"suffix": "x"}, "suffix"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),  # only with stream=true
    ],
)
def test_bad_scoring_requests_name_the_field(fields, param):
    with pytest.raises(ProtocolError) as info:
        parse_completion_request({"prompt": PROMPT, **fields})
    assert info.value.status_code == 400 and info.value.param == param
    assert info.value.message.startswith(param)


def test_max_tokens_zero_needs_echo_or_prompt_logprobs():
    with pytest.raises(ProtocolError, match="echo=true or prompt_logprobs"):
        parse_completion_request({"prompt": PROMPT, "max_tokens": 0})
    assert parse_completion_request({"prompt": PROMPT, "max_tokens": 0, "echo": True}).max_new_tokens == 0
    assert parse_completion_request({"prompt": PROMPT, "max_tokens": 0, "prompt_logprobs": 0}).max_new_tokens == 0
    assert parse_completion_request({"prompt": PROMPT}).max_new_tokens == COMPLETION_DEFAULT_MAX_TOKENS


@pytest.mark.parametrize(
    "fields, k",
    [
        ({"echo": True, "logprobs": 3}, 3),
        ({"prompt_logprobs": 5}, 5),
        ({"echo": True, "logprobs": 2, "prompt_logprobs": 4}, 4),
        ({"echo": True, "logprobs": 0}, 0),
        ({"echo": True}, None),  # echo without logprobs: text only, nothing to score
        ({"logprobs": 3}, None),  # logprobs of generated tokens only
        ({}, None),
    ],
)
def test_what_the_prompt_is_scored_with(fields, k):
    assert parse_completion_request({"prompt": PROMPT, **fields}).scoring_top_logprobs == k


# ---- bodies -----------------------------------------------------------------------------------------------


def test_echo_with_max_tokens_zero_is_the_legacy_scoring_answer():
    out = body(echo=True, max_tokens=0, logprobs=2)
    (choice,) = out["choices"]
    assert choice["text"] == "Hi 答!" and choice["finish_reason"] == "length"
    assert out["usage"] == {"prompt_tokens": 4, "completion_tokens": 0, "total_tokens": 4}
    assert choice["logprobs"] == {
        "tokens": ["Hi", "bytes: \\xe7\\xad", "bytes:\\x94", "!"],
        "token_logprobs": [None, -0.5, -3.0, MIN_LOGPROB],  # the first has no context; -inf is not JSON
        "top_logprobs": [
            None,
            {"bytes: \\xe7\\xad": -0.5, "!": -1.5},  # k = 2 of the 3 scored alternatives
            {"Hi": -0.1, "!": -2.5},
            {"Hi": -0.2, "bytes: \\xe7\\xad": -1.9},
        ],
        "text_offset": [0, 2, 3, 4],  # the split character's second token starts inside it, at its offset
    }
    assert "prompt_logprobs" not in choice
    json.dumps(out, allow_nan=False)


def test_prompt_logprobs_follow_vllms_format():
    (choice,) = body(prompt_logprobs=2, max_tokens=0)["choices"]
    assert choice["text"] == "" and choice["logprobs"] is None  # no echo, no legacy logprobs
    first, second, third, fourth = choice["prompt_logprobs"]
    assert first is None
    # The prompt token is also the most likely one: it appears once, with its top-k rank.
    assert second == {"8": {"logprob": -0.5, "rank": 1, "decoded_token": "bytes: \\xe7\\xad"},
                      "10": {"logprob": -1.5, "rank": 2, "decoded_token": "!"}}  # fmt: skip
    # Not among the top 2: the prompt token first with its rank in the whole vocabulary, then ranks 1..k.
    assert list(third) == ["9", "7", "10"]
    assert third["9"] == {"logprob": -3.0, "rank": 4, "decoded_token": "bytes:\\x94"}
    assert [third["7"]["rank"], third["10"]["rank"]] == [1, 2]
    assert fourth["10"]["logprob"] == MIN_LOGPROB
    json.dumps(choice, allow_nan=False)


def test_prompt_logprobs_zero_is_the_prompt_token_alone():
    (choice,) = body(prompt_logprobs=0, max_tokens=0)["choices"]
    assert [list(p) if p else p for p in choice["prompt_logprobs"]] == [None, ["8"], ["9"], ["10"]]


def test_echo_with_generation_puts_the_prompt_first():
    req = parse_completion_request({"prompt": PROMPT, "echo": True, "logprobs": 1, "max_tokens": 2})
    generated = [
        TokenLogprob("é", -0.7, [alt(7, -0.3)], "é".encode(), 11),
        TokenLogprob("<eos>", -0.1, [alt(7, -0.1)], b"", 0),
    ]  # fmt: skip
    out = completion_response_for(req, [FakeResult("é", completion_tokens=2, logprobs=generated)])
    (choice,) = out["choices"]
    assert choice["text"] == "Hi 答!é" and choice["finish_reason"] == "stop"
    logprobs = choice["logprobs"]
    assert logprobs["tokens"] == ["Hi", "bytes: \\xe7\\xad", "bytes:\\x94", "!", "é", "<eos>"]
    assert logprobs["token_logprobs"] == [None, -0.5, -3.0, MIN_LOGPROB, -0.7, -0.1]
    assert logprobs["text_offset"] == [0, 2, 3, 4, 5, 6]  # generated tokens counted after the echoed prompt
    assert logprobs["top_logprobs"][0] is None and len(logprobs["top_logprobs"][4]) == 1
    assert out["usage"]["completion_tokens"] == 2


def test_echo_without_logprobs_is_text_only():
    req = parse_completion_request({"prompt": PROMPT, "echo": True, "max_tokens": 1})
    echo = prompt_echo(PROMPT, None, TOKENS, req)  # nothing scored
    out = completion_response([[FakeResult("?")]], "teacher", [4], echoes=[echo])
    assert out["choices"][0]["text"] == "Hi 答!?" and out["choices"][0]["logprobs"] is None


def test_prompt_logprobs_beside_generation_and_n_choices():
    req = parse_completion_request({"prompt": PROMPT, "prompt_logprobs": 1, "max_tokens": 1, "n": 2})
    out = completion_response_for(req, [FakeResult("a"), FakeResult("b")])
    assert [c["text"] for c in out["choices"]] == ["a", "b"]  # no echo: the prompt is not in the text
    assert out["choices"][0]["prompt_logprobs"] == out["choices"][1]["prompt_logprobs"]
    assert len(out["choices"][0]["prompt_logprobs"]) == 4


def test_scoring_only_answers_n_identical_choices():
    req = parse_completion_request({"prompt": PROMPT, "echo": True, "max_tokens": 0, "logprobs": 0, "n": 3})
    assert no_completions(req) == [NoCompletion(logprobs=[])] * 3
    out = completion_response_for(req)
    assert [c["index"] for c in out["choices"]] == [0, 1, 2]
    assert len({json.dumps(c["logprobs"]) for c in out["choices"]}) == 1
    assert out["choices"][0]["logprobs"]["top_logprobs"] == [None, {}, {}, {}]


def test_plain_completions_have_no_prompt_fields():
    req = parse_completion_request({"prompt": "x", "max_tokens": 1})
    echo = prompt_echo([7], None, TOKENS, req)
    (choice,) = completion_response([[FakeResult("y")]], "teacher", [1], echoes=[echo])["choices"]
    assert set(choice) == {"index", "text", "finish_reason", "logprobs"} and choice["text"] == "y"


def test_official_client_reads_scoring_bodies():
    """The `openai` client keeps the nulls of an echoed prompt and exposes vLLM's `prompt_logprobs`."""
    answer = body(echo=True, max_tokens=0, logprobs=2, prompt_logprobs=2)
    sent = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(200, json=answer)

    http_client = httpx.Client(transport=httpx.MockTransport(handler))
    client = openai.OpenAI(api_key="unused", base_url="http://teacher.test/v1", http_client=http_client, max_retries=0)
    with client:
        out = client.completions.create(model="teacher", prompt=[PROMPT], echo=True, max_tokens=0, logprobs=2,
                                        extra_body={"prompt_logprobs": 2})  # fmt: skip
    assert sent[0]["prompt"] == [PROMPT] and sent[0]["prompt_logprobs"] == 2
    assert isinstance(out, Completion)
    choice = out.choices[0]
    assert choice.logprobs.token_logprobs[:2] == [None, -0.5] and choice.logprobs.top_logprobs[0] is None
    assert choice.model_dump()["prompt_logprobs"][1]["8"]["rank"] == 1
