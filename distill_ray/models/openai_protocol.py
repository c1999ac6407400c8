"""OpenAI wire format for the teacher service: the shared request base, chat, models and error bodies.

Where it sits: pydantic and the `openai` package's types, no Ray and no torch. `serve/teacher.py`
parses incoming JSON with the request models here, runs the engine, and hands the engine's results
(duck-typed like `distill_ray.models.engine.GenResult`) to the response builders; clients inside the
project can reuse the same models to build requests. Legacy `/v1/completions` (text or token-id prompts,
echo, prompt logprobs: teacher scoring) is `distill_ray.models.openai_completions`, built on the base here.

Response side: the bodies are built from the `openai` package's own pydantic types (`ChatCompletion`,
`Completion`, `CompletionUsage`, `Model`, ...), the very types the official client parses them into,
so the wire format has one source of truth and a builder that drifts from it fails here, when the
object is built, instead of in a client. The builders still return JSON-ready dicts, dumped with
`exclude_unset=True`: only fields we set reach the wire. Optional fields we never fill (`refusal`,
`service_tier`, `system_fingerprint`, usage details, ...) stay absent; fields we set to None (a
choice's `logprobs`, `logprobs.refusal`) are written as null. `GET /v1/models` has no list type in
the package (the client's `SyncPage` is a pagination helper), so that list wraps `Model` dumps by hand.

Request side: written by hand (the strict models below). The package's request params are
TypedDicts for building calls, not validators, and this server's rules differ from the API's (see
below), and every refusal must name the offending param as OpenAI does (`messages[0].role`).
The error body (`error_body`) is still a plain dict; its inner object has the shape of
`openai.types.ErrorObject`.

Choices that differ from, or pin down, OpenAI's behaviour:
- Unknown fields are ignored (clients send many we do not use); `null` means "use the default".
- `stream=true` answers with server-sent events in OpenAI's chunk format (`distill_ray.models.openai_stream`);
  `stream_options` (`include_usage`) is refused unless `stream` is true, as OpenAI does.
- Every message needs `content` (a string, possibly empty, or a non-empty list of text parts); a missing or
  null one is a 400 naming `messages[i].content`. OpenAI lets an assistant message with `tool_calls` omit it;
  this server takes no tools, so no message may.
- Seeds: a request with `seed=s` and `n>1` samples choice i with seed `s + i` (wrapped into the
  64-bit range), so every choice differs yet the whole response is reproducible.
- `temperature` may go up to 5 (OpenAI stops at 2) because our generation jobs sweep that range.
- Logprobs describe the raw model distribution (see the engine); a log-probability of -inf is
  written as -9999.0, as OpenAI does, because JSON has no infinity.
- Logprob `bytes` are the engine's exact token bytes (`entry.bytes`), never the token string re-encoded: a
  token holding part of a character has no string of its own, and its `token` is OpenAI's `bytes:\\xNN`
  form (`distill_ray.models.token_bytes.token_name`). Each entry's `bytes` is what its token put into the
  reply, so concatenated they are the reply's UTF-8 (the eos token's are empty). Legacy `text_offset[i]` is
  the character offset in the returned `text` where token i's bytes start (without echo, ours start at 0 where
  OpenAI's also counted the prompt); a token that starts inside a character gets that character's offset
  (`token_bytes.char_offsets`).
- Chat completions default to `max_tokens=256` (legacy completions to 16, like OpenAI).
- Each chat choice also carries `completion_tokens`, its own sample's length (see `chat_response`);
  the openai types keep unknown fields, so the official client exposes it too.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any, Literal

from openai import BaseModel as OpenAIModel
from openai.types import CompletionUsage, Model
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionMessage,
    ChatCompletionTokenLogprob,
)
from openai.types.chat.chat_completion import Choice as ChatChoice
from openai.types.chat.chat_completion import ChoiceLogprobs
from openai.types.chat.chat_completion_token_logprob import TopLogprob
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

MAX_TOP_LOGPROBS = 20
MAX_N = 64
MAX_STOP = 16
MAX_TEMPERATURE = 5.0
CHAT_DEFAULT_MAX_TOKENS = 256
MIN_LOGPROB = -9999.0
SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1
_SEED_SPAN = 2**64


class ProtocolError(Exception):
    """A request the server refuses, with the HTTP status and OpenAI error fields to answer with."""

    def __init__(
        self,
        message: str,
        status_code: int = 400,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.type = type
        self.param = param
        self.code = code

    def __reduce__(self):
        # Crosses Ray process boundaries (DeploymentHandle calls): rebuild from all fields, not args.
        return (type(self), (self.message, self.status_code, self.type, self.param, self.code))

    def body(self) -> dict:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(
    message: str, type: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict:
    """OpenAI's error shape: {"error": {"message", "type", "param", "code"}}."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool | None = None


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    n: int | None = Field(None, ge=1, le=MAX_N)
    temperature: float | None = Field(None, ge=0, le=MAX_TEMPERATURE)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    seed: int | None = Field(None, ge=SEED_MIN, le=SEED_MAX)
    stop: str | list[str] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None

    @field_validator("stop")
    @classmethod
    def _stop_valid(cls, v):
        stops = [v] if isinstance(v, str) else (v or [])
        if len(stops) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop sequences are supported")
        if any(not s for s in stops):
            raise ValueError("stop sequences must be non-empty strings")
        return v

    @model_validator(mode="after")
    def _stream_options_need_stream(self):
        # A ProtocolError, not a ValueError: pydantic lets it through, so it keeps its param.
        if self.stream_options is not None and not self.stream:
            raise ProtocolError("stream_options: only allowed when stream is true", param="stream_options")
        return self

    @property
    def include_usage(self) -> bool:
        """Whether a stream ends with a chunk holding the request's `usage` (stream_options.include_usage)."""
        return bool(self.stream_options and self.stream_options.include_usage)

    @property
    def num_choices(self) -> int:
        return self.n or 1

    @property
    def temperature_value(self) -> float:
        return 1.0 if self.temperature is None else self.temperature

    @property
    def top_p_value(self) -> float:
        return 1.0 if self.top_p is None else self.top_p

    @property
    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def choice_seeds(self) -> list[int | None]:
        return choice_seeds(self.seed, self.num_choices)


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    """One chat message. `content` is required for every role: OpenAI lets only an assistant message that
    carries `tool_calls` leave it out, and this server takes no tools, so a message without content (or with
    null, or an empty list of parts) is a 400 naming `messages[i].content`, never an empty turn."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    @field_validator("content", mode="before")
    @classmethod
    def _content_given(cls, v):
        if v is None:
            raise ValueError("required, and null is not allowed: send a string or a list of text parts")
        if isinstance(v, list) and not v:
            raise ValueError("an empty list of parts is not allowed: send a string or at least one text part")
        if not isinstance(v, (str, list)):
            raise ValueError("must be a string or a list of text parts")
        return v

    def as_template_dict(self) -> dict:
        """{role, content} for a chat template: text parts joined, `developer` read as `system`."""
        text = "".join(part.text for part in self.content) if isinstance(self.content, list) else self.content
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class ChatCompletionRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)

    @field_validator("top_logprobs")
    @classmethod
    def _top_needs_logprobs(cls, v, info):
        if v and not info.data.get("logprobs"):
            raise ValueError("top_logprobs needs logprobs=true")
        return v

    @property
    def max_new_tokens(self) -> int:
        # max_completion_tokens is the newer name; it wins when both are given.
        return self.max_completion_tokens or self.max_tokens or CHAT_DEFAULT_MAX_TOKENS

    @property
    def want_logprobs(self) -> bool:
        return bool(self.logprobs)

    @property
    def top_logprobs_value(self) -> int:
        return self.top_logprobs or 0

    def template_messages(self) -> list[dict]:
        return [m.as_template_dict() for m in self.messages]


def choice_seeds(seed: int | None, n: int) -> list[int | None]:
    """Per-choice seeds: `seed + i` for choice i, wrapped into the signed 64-bit range."""
    if seed is None:
        return [None] * n
    return [((seed + i - SEED_MIN) % _SEED_SPAN) + SEED_MIN for i in range(n)]


def parse_chat_request(body: Any) -> ChatCompletionRequest:
    return _parse(ChatCompletionRequest, body)


def _parse(model_cls: type[_Request], body: Any):
    if not isinstance(body, dict):
        raise ProtocolError("request body must be a JSON object")
    try:
        return model_cls.model_validate(body)
    except ValidationError as exc:
        errors = exc.errors()
        field = _param_path(errors[0].get("loc", ())) or ""
        # A union (content: a string or a list of parts) reports a miss per branch; the branch that got furthest
        # into the value (content[0].text) says what is wrong, not "should be a valid string".
        first = max((e for e in errors if (_param_path(e.get("loc", ())) or "").startswith(field)),
                    key=lambda e: len(e.get("loc", ())))  # fmt: skip
        param = _param_path(first.get("loc", ()))
        message = "required" if first.get("type") == "missing" else first.get("msg", "invalid value")
        message = message.removeprefix("Value error, ")
        raise ProtocolError(f"{param}: {message}" if param else message, param=param) from None


def _param_path(loc: Sequence) -> str | None:
    """Pydantic's ('messages', 0, 'role') as OpenAI writes it: 'messages[0].role'."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in ("str", "list[str]", "list[TextPart]") or "[" in str(part):
            continue  # union-branch labels pydantic adds; not part of the client's field path
        else:
            path += f".{part}" if path else str(part)
    return path or None


def _finite(logprob: float) -> float:
    return logprob if logprob > MIN_LOGPROB else MIN_LOGPROB


def _dump(obj: OpenAIModel) -> dict:
    """JSON-ready dict of an openai response object: the fields we set (None ones as null), no others."""
    return obj.model_dump(mode="json", exclude_unset=True)


def _chat_logprobs(entries) -> ChoiceLogprobs | None:
    return None if entries is None else ChoiceLogprobs(content=chat_token_logprobs(entries), refusal=None)


def chat_token_logprobs(entries) -> list[ChatCompletionTokenLogprob]:
    """One `ChatCompletionTokenLogprob` per engine TokenLogprob-like entry (see `chat_logprobs`)."""
    return [
        ChatCompletionTokenLogprob(
            token=entry.token,
            logprob=_finite(entry.logprob),
            bytes=list(entry.bytes),
            top_logprobs=[
                TopLogprob(token=t.token, logprob=_finite(t.logprob), bytes=list(t.bytes)) for t in entry.top
            ],
        )
        for entry in entries
    ]


def chat_logprobs(entries) -> dict | None:
    """Chat `choices[i].logprobs` from engine TokenLogprob-like entries (None -> None): each entry has `token`,
    `logprob`, `bytes` and `top`, a list of alternatives with `token`, `logprob` and `bytes`."""
    logprobs = _chat_logprobs(entries)
    return None if logprobs is None else _dump(logprobs)


def _usage(prompt_tokens: int, completion_tokens: int) -> CompletionUsage:
    return CompletionUsage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
    )


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return _dump(_usage(prompt_tokens, completion_tokens))


def chat_response(results: Sequence, model: str, prompt_tokens: int, created: int | None = None) -> dict:
    """A `chat.completion` body; `prompt_tokens` counts the shared prompt once, as OpenAI does."""
    choices = [
        ChatChoice(
            index=i,
            message=ChatCompletionMessage(role="assistant", content=r.text),
            finish_reason=r.finish_reason,
            logprobs=_chat_logprobs(r.logprobs),
            # Not in OpenAI's schema (its types keep unknown fields, and so do clients): each sample's
            # own length, which the cosine length reward needs; `usage` only has the sum over the n choices.
            completion_tokens=r.completion_tokens,
        )
        for i, r in enumerate(results)
    ]
    return _dump(
        ChatCompletion(
            id=f"chatcmpl-{uuid.uuid4().hex}",
            object="chat.completion",
            created=int(time.time()) if created is None else created,
            model=model,
            choices=choices,
            usage=_usage(prompt_tokens, sum(r.completion_tokens for r in results)),
        )
    )


def models_response(names: Sequence[str], created: int, owned_by: str = "distill-ray") -> dict:
    """`GET /v1/models` body: {"object": "list", "data": [Model, ...]}, the shape the client pages over."""
    models = [Model(id=name, object="model", created=created, owned_by=owned_by) for name in names]
    return {"object": "list", "data": [_dump(m) for m in models]}
