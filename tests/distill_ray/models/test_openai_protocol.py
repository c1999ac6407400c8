"""Unit tests of the OpenAI wire format helpers (distill_ray/models/openai_protocol.py): no Ray, no model."""

from __future__ import annotations

import json
import pickle
import re
from dataclasses import dataclass, field
from typing import NamedTuple

import httpx
import openai
import pytest
from openai.types import Completion, Model
from openai.types.chat import ChatCompletion
from pydantic import ValidationError

from distill_ray.models.openai_completions import (
    COMPLETION_DEFAULT_MAX_TOKENS,
    completion_response,
    parse_completion_request,
)
from distill_ray.models.openai_protocol import (
    CHAT_DEFAULT_MAX_TOKENS,
    MIN_LOGPROB,
    SEED_MAX,
    SEED_MIN,
    ProtocolError,
    chat_response,
    choice_seeds,
    error_body,
    models_response,
    parse_chat_request,
)


class FakeTop(NamedTuple):
    token: str
    logprob: float
    bytes: bytes


@dataclass
class FakeLogprob:
    """Like the engine's TokenLogprob; `bytes` defaults to the token's UTF-8, and `top` is given as (token,
    logprob) pairs of whole-character tokens or as FakeTops."""

    token: str
    logprob: float
    top: list = field(default_factory=list)
    bytes: bytes | None = None

    def __post_init__(self):
        self.bytes = self.token.encode() if self.bytes is None else self.bytes
        self.top = [t if isinstance(t, FakeTop) else FakeTop(t[0], t[1], t[0].encode()) for t in self.top]


@dataclass
class FakeResult:
    text: str
    finish_reason: str = "stop"
    completion_tokens: int = 2
    logprobs: list | None = None


def chat_body(**kw):
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], **kw}


def test_chat_defaults_and_extra_fields_ignored():
    req = parse_chat_request(chat_body(frequency_penalty=0.5, user="x", temperature=None))
    assert req.num_choices == 1
    assert req.temperature_value == 1.0 and req.top_p_value == 1.0
    assert req.max_new_tokens == CHAT_DEFAULT_MAX_TOKENS
    assert req.stop_list == [] and not req.want_logprobs and req.top_logprobs_value == 0
    assert req.template_messages() == [{"role": "user", "content": "hi"}]


def test_chat_max_completion_tokens_wins_and_stop_string():
    req = parse_chat_request(chat_body(max_tokens=5, max_completion_tokens=7, stop="\n"))
    assert req.max_new_tokens == 7
    assert req.stop_list == ["\n"]
    assert parse_chat_request(chat_body(max_tokens=5)).max_new_tokens == 5


def test_chat_message_parts_and_developer_role():
    req = parse_chat_request(
        {
            "messages": [
                {"role": "developer", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            ]
        }
    )
    assert req.model is None
    assert req.template_messages() == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "ab"}]


@pytest.mark.parametrize(
    "body, param",
    [
        (chat_body(n=0), "n"),
        (chat_body(temperature=-1), "temperature"),
        (chat_body(top_p=0), "top_p"),
        (chat_body(max_tokens=0), "max_tokens"),
        (chat_body(top_logprobs=21, logprobs=True), "top_logprobs"),
        (chat_body(top_logprobs=2), "top_logprobs"),
        (chat_body(stop=["ok", ""]), "stop"),
        (chat_body(stream_options={"include_usage": True}), "stream_options"),  # only with stream=true
        (chat_body(stream="maybe"), "stream"),
        ({"messages": []}, "messages"),
        ({"model": "m"}, "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user"}]}, "messages[0].content"),  # issue 15 item 6: was accepted (200)
        ({"messages": [{"role": "user", "content": None}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": []}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"messages": [{"role": "system", "content": "s"}, {"role": "assistant"}]}, "messages[1].content"),
        ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages[0].content[0].text"),
    ],
)
def test_chat_bad_requests_name_the_param(body, param):
    with pytest.raises(ProtocolError) as info:
        parse_chat_request(body)
    assert info.value.status_code == 400
    assert info.value.param == param
    assert info.value.message.startswith(param)


def test_a_message_without_content_is_refused_in_words():
    for message, said in (({"role": "user"}, "messages[0].content: required"),
                          ({"role": "user", "content": None}, "null is not allowed"),
                          ({"role": "user", "content": 5}, "must be a string or a list of text parts")):  # fmt: skip
        with pytest.raises(ProtocolError, match=re.escape(said)):
            parse_chat_request({"messages": [message]})
    assert parse_chat_request({"messages": [{"role": "user", "content": ""}]}).template_messages()[0]["content"] == ""


def test_stream_is_accepted_with_its_options():
    req = parse_chat_request(chat_body(stream=True, stream_options={"include_usage": True, "include_obfuscation": 0}))
    assert req.stream and req.include_usage
    assert not parse_chat_request(chat_body(stream=True)).include_usage


def test_body_must_be_object():
    with pytest.raises(ProtocolError, match="JSON object"):
        parse_chat_request([1, 2])


def test_completion_request_legacy_logprobs():
    req = parse_completion_request({"prompt": "2+2=", "logprobs": 0})
    assert req.prompts == ["2+2="]
    assert req.max_new_tokens == COMPLETION_DEFAULT_MAX_TOKENS
    assert req.want_logprobs and req.top_logprobs_value == 0
    req = parse_completion_request({"prompt": ["a", "b"], "logprobs": 3, "max_tokens": 4})
    assert req.prompts == ["a", "b"] and req.top_logprobs_value == 3 and req.max_new_tokens == 4
    assert not parse_completion_request({"prompt": "x"}).want_logprobs


@pytest.mark.parametrize("body", [{"prompt": []}, {}, {"prompt": "x", "suffix": "y"}, {"prompt": "x", "n": 0}])
def test_completion_bad_requests(body):
    with pytest.raises(ProtocolError):
        parse_completion_request(body)


def test_choice_seeds():
    assert choice_seeds(None, 3) == [None, None, None]
    assert choice_seeds(7, 3) == [7, 8, 9]
    assert choice_seeds(SEED_MAX, 2) == [SEED_MAX, SEED_MIN]  # wraps, stays a valid 64-bit seed
    assert parse_chat_request(chat_body(seed=5, n=2)).choice_seeds() == [5, 6]


def test_chat_response_shape_and_usage():
    entries = [FakeLogprob("Hi", -0.5, [("Hi", -0.5), ("Yo", -1.0)]), FakeLogprob("!", float("-inf"), [])]
    results = [FakeResult("Hi!", logprobs=entries), FakeResult("Yo", "length", 3)]
    body = chat_response(results, "teacher", prompt_tokens=10, created=123)
    assert body["object"] == "chat.completion" and body["model"] == "teacher" and body["created"] == 123
    assert body["id"].startswith("chatcmpl-")
    assert body["usage"] == {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    first, second = body["choices"]
    assert first["index"] == 0 and first["message"] == {"role": "assistant", "content": "Hi!"}
    assert (first["completion_tokens"], second["completion_tokens"]) == (2, 3)  # each sample's own length
    content = first["logprobs"]["content"]
    assert content[0] == {
        "token": "Hi",
        "logprob": -0.5,
        "bytes": [72, 105],
        "top_logprobs": [
            {"token": "Hi", "logprob": -0.5, "bytes": [72, 105]},
            {"token": "Yo", "logprob": -1.0, "bytes": [89, 111]},
        ],
    }
    assert content[1]["logprob"] == MIN_LOGPROB  # -inf is not JSON
    assert second["finish_reason"] == "length" and second["logprobs"] is None
    json.dumps(body, allow_nan=False)


def test_completion_response_orders_choices_by_prompt():
    b0 = FakeResult("b0", logprobs=[FakeLogprob("b", -0.1, [("b", -0.1)])])
    per_prompt = [[FakeResult("a0"), FakeResult("a1")], [b0]]
    body = completion_response(per_prompt, "teacher", prompt_tokens=[3, 4])
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    assert [c["text"] for c in body["choices"]] == ["a0", "a1", "b0"]
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert body["choices"][2]["logprobs"] == {
        "tokens": ["b"],
        "token_logprobs": [-0.1],
        "top_logprobs": [{"b": -0.1}],
        "text_offset": [0],
    }
    assert body["usage"] == {"prompt_tokens": 7, "completion_tokens": 6, "total_tokens": 13}


def test_logprob_bytes_are_the_entries_own_and_offsets_count_characters():
    """Partial-character tokens (答案 as byte-level BPE writes it: çŃ Ķ | æ ¡ Ī) keep their own bytes on the
    wire, and legacy offsets are characters of the text, a token inside a character getting that character's."""
    partial = [("bytes:\\xe7\\xad", b"\xe7\xad"), ("bytes:\\x94", b"\x94"), ("bytes:\\xe6", b"\xe6"),
               ("bytes:\\xa1", b"\xa1"), ("bytes:\\x88", b"\x88")]  # fmt: skip
    entries = [FakeLogprob(name, -0.1, bytes=raw) for name, raw in partial]
    entries[0].top = [FakeTop("bytes:\\xe7\\xad", -0.1, b"\xe7\xad"), FakeTop("bytes:\\xe6", -2.0, b"\xe6")]
    entries += [FakeLogprob("!", -0.3), FakeLogprob("<|im_end|>", -0.4, bytes=b"")]
    result = FakeResult("答案!", completion_tokens=len(entries), logprobs=entries)
    content = chat_response([result], "teacher", prompt_tokens=1)["choices"][0]["logprobs"]["content"]
    assert b"".join(bytes(entry["bytes"]) for entry in content) == "答案!".encode()
    assert [top["bytes"] for top in content[0]["top_logprobs"]] == [[0xE7, 0xAD], [0xE6]]
    legacy = completion_response([[result]], "teacher", prompt_tokens=[1])["choices"][0]["logprobs"]
    assert legacy["text_offset"] == [0, 0, 1, 1, 1, 2, 3]
    assert legacy["top_logprobs"][0] == {"bytes:\\xe7\\xad": -0.1, "bytes:\\xe6": -2.0}


def test_models_and_error_bodies():
    assert models_response(["t"], created=1)["data"] == [
        {"id": "t", "object": "model", "created": 1, "owned_by": "distill-ray"}
    ]
    assert error_body("bad", param="n") == {
        "error": {"message": "bad", "type": "invalid_request_error", "param": "n", "code": None}
    }


def test_protocol_error_pickles_with_all_fields():
    err = pickle.loads(pickle.dumps(ProtocolError("nope", 404, param="model", code="model_not_found")))
    assert (err.message, err.status_code, err.param, err.code) == ("nope", 404, "model", "model_not_found")
    assert err.body()["error"]["code"] == "model_not_found"


def sample_bodies():
    """A chat body with logprobs (-inf among them) and no-logprobs choices, and a two-prompt completion body."""
    entries = [FakeLogprob("Hi", -0.5, [("Hi", -0.5), ("Yo", -1.0)]), FakeLogprob("é", float("-inf"), [])]
    chat = chat_response([FakeResult("Hi!", logprobs=entries), FakeResult("Yo", "length", 3)], "teacher", 10, created=9)
    per_prompt = [[FakeResult("a0", logprobs=entries)], [FakeResult("b0", "length", 4)]]
    completion = completion_response(per_prompt, "teacher", prompt_tokens=[3, 4], created=9)
    return chat, completion


def test_bodies_set_only_the_fields_served_today():
    """Optional openai fields we never fill stay off the wire; ones we set to None are written as null."""
    chat, completion = sample_bodies()
    assert set(chat) == {"id", "object", "created", "model", "choices", "usage"}
    assert set(chat["choices"][1]) == {"index", "message", "finish_reason", "logprobs", "completion_tokens"}
    assert chat["choices"][1]["logprobs"] is None
    assert chat["choices"][0]["logprobs"]["refusal"] is None
    assert set(chat["choices"][0]["logprobs"]) == {"content", "refusal"}
    assert set(chat["usage"]) == set(completion["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}
    assert set(completion) == {"id", "object", "created", "model", "choices", "usage"}
    assert set(completion["choices"][1]) == {"index", "text", "finish_reason", "logprobs"}
    assert completion["choices"][1]["logprobs"] is None
    assert completion["choices"][0]["logprobs"]["token_logprobs"] == [-0.5, MIN_LOGPROB]
    assert completion["choices"][0]["logprobs"]["text_offset"] == [0, 2]
    assert models_response(["t", "u"], created=1) == {
        "object": "list",
        "data": [{"id": name, "object": "model", "created": 1, "owned_by": "distill-ray"} for name in ("t", "u")],
    }
    json.dumps([chat, completion], allow_nan=False)


def test_bodies_validate_back_into_the_openai_types():
    chat, completion = sample_bodies()
    parsed = ChatCompletion.model_validate(chat)
    assert parsed.choices[0].logprobs.content[1].logprob == MIN_LOGPROB
    assert parsed.choices[0].logprobs.content[1].bytes == list("é".encode())
    assert parsed.choices[1].finish_reason == "length" and parsed.usage.total_tokens == 15
    assert [c.model_extra for c in parsed.choices] == [{"completion_tokens": 2}, {"completion_tokens": 3}]
    # Dumping the parsed object again gives the body back: nothing is lost or added on the way.
    assert parsed.model_dump(mode="json", exclude_unset=True) == chat
    parsed_completion = Completion.model_validate(completion)
    assert parsed_completion.choices[0].logprobs.top_logprobs == [{"Hi": -0.5, "Yo": -1.0}, {}]
    assert parsed_completion.model_dump(mode="json", exclude_unset=True) == completion
    body = models_response(["t"], created=1)
    assert [Model.model_validate(m).id for m in body["data"]] == ["t"]


def test_builders_refuse_what_the_openai_types_refuse():
    """The types are the source of truth: a finish reason outside OpenAI's set fails at build time."""
    with pytest.raises(ValidationError):
        chat_response([FakeResult("x", finish_reason="eos")], "teacher", prompt_tokens=1)
    with pytest.raises(ValidationError):
        completion_response([[FakeResult("x", finish_reason="tool_calls")]], "teacher", prompt_tokens=[1])


def test_official_client_parses_the_bodies():
    """The `openai` client, over an in-process transport, reads our bodies as its own response objects."""
    chat, completion = sample_bodies()
    models = models_response(["teacher"], created=1)
    bodies = {"/v1/chat/completions": chat, "/v1/completions": completion, "/v1/models": models}
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(200, json=bodies[request.url.path])

    http_client = httpx.Client(transport=httpx.MockTransport(handler))
    client = openai.OpenAI(api_key="unused", base_url="http://teacher.test/v1", http_client=http_client, max_retries=0)
    with client:
        reply = client.chat.completions.create(model="teacher", messages=[{"role": "user", "content": "hi"}], n=2)
        legacy = client.completions.create(model="teacher", prompt=["a", "b"])
        listed = client.models.list()
    assert seen == ["/v1/chat/completions", "/v1/completions", "/v1/models"]
    assert isinstance(reply, ChatCompletion) and reply.id == chat["id"] and reply.created == 9
    assert [c.message.content for c in reply.choices] == ["Hi!", "Yo"]
    assert [c.completion_tokens for c in reply.choices] == [2, 3]  # the extra per-choice field survives
    assert [t.logprob for t in reply.choices[0].logprobs.content] == [-0.5, MIN_LOGPROB]
    assert reply.choices[0].logprobs.content[0].top_logprobs[1].token == "Yo"
    assert reply.usage.completion_tokens == 5 and reply.choices[1].logprobs is None
    assert isinstance(legacy, Completion) and [c.text for c in legacy.choices] == ["a0", "b0"]
    assert legacy.choices[0].logprobs.tokens == ["Hi", "é"] and legacy.usage.prompt_tokens == 7
    assert [(m.id, m.owned_by, m.created) for m in listed] == [("teacher", "distill-ray", 1)]
    assert isinstance(listed.data[0], Model)
