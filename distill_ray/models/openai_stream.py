"""Streamed answers (`stream: true`) in OpenAI's chunk format, for chat and legacy completions.

Where it sits: beside `openai_protocol` and `openai_completions`, no Ray and no torch. `serve/teacher.py` turns a
streaming request into events per choice and hands them to `ChatStream` or `CompletionStream`, which give the
chunk bodies; the router writes each as a server-sent event (`sse_event`) and ends with `data: [DONE]`.

Engine-agnostic on purpose: a stream consumes, per choice index, any number of `Delta`s (text and logprob entries
that are final) and then the choice's whole result (a GenResult-like: `text`, `finish_reason`, `completion_tokens`,
`logprobs`). The last chunk of a choice carries what its deltas had not said, taken from the result, so the
chunks of a choice always concatenate to the non-streamed answer: an engine that gives no deltas streams each
choice in one chunk, and one with a per-token hook streams token by token. `ReplyDeltas` makes those deltas from
the token ids of our engine (`distill_ray.models.engine`, `GenRequest.on_token`).

The chunks (as OpenAI sends them):
- chat (`chat.completion.chunk`): first a role chunk per choice (`delta: {"role": "assistant", "content": ""}`),
  then content chunks (`delta.content`, and `logprobs.content` for that text's tokens when logprobs were asked
  for); the choice's last content chunk has its `finish_reason` and, as in the whole answer, its own
  `completion_tokens`.
- legacy completions (`text_completion`): `choices[0].text` chunks; with `echo` (or vLLM's `prompt_logprobs`) a
  choice opens with the prompt's chunk, as the whole answer opens with it; legacy `logprobs` of a chunk hold its
  tokens, `text_offset` counted in the choice's whole text, as in the whole answer.
- `stream_options.include_usage`: every chunk has `usage: null` and the stream ends with a chunk of empty `choices`
  and the request's usage (the same numbers as the whole answer's).
Choices of `n > 1` (and of several legacy prompts) interleave, each chunk naming its `index`.
"""

from __future__ import annotations

import codecs
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from openai.types import Completion, CompletionChoice
from openai.types.chat import ChatCompletionChunk
from openai.types.chat.chat_completion_chunk import Choice as ChunkChoice
from openai.types.chat.chat_completion_chunk import ChoiceDelta
from openai.types.chat.chat_completion_chunk import ChoiceLogprobs as ChunkLogprobs

from distill_ray.models.openai_completions import PromptEcho, _Logprobs
from distill_ray.models.openai_protocol import _dump, _finite, _usage, chat_token_logprobs, error_body

DONE = "data: [DONE]\n\n"


def sse_event(body: dict) -> str:
    """One server-sent event holding a JSON body: `data: {...}` and a blank line."""
    return f"data: {json.dumps(body, separators=(',', ':'))}\n\n"


def sse_error(message: str, type: str = "server_error") -> str:
    """An event holding OpenAI's error body; the official client raises it as an APIError mid-stream."""
    return sse_event(error_body(message, type=type))


@dataclass
class Delta:
    """New text of one choice and the logprob entries (TokenLogprob-likes) of the tokens that wrote it; both final:
    they open what is left of the choice's whole answer."""

    text: str
    logprobs: list = field(default_factory=list)


class ReplyDeltas:
    """Our engine's tokens of one sequence, as they come, -> the `Delta`s that are already certain.

    Mirrors how the engine makes a reply's text (`engine` module docstring): the reply's bytes are the tokens' bytes,
    less an ending end-of-turn token, cut before the first stop string, less an unfinished last character. So text
    is given only up to where it cannot change: bytes that could still be the start of a stop string wait, as does
    an unfinished character (an incremental UTF-8 decoder keeps it), and nothing is given after an end token or a
    stop string: the result gives the rest. An entry is given once all its bytes are given text.
    """

    def __init__(self, token_bytes, stop: Sequence[str], end_ids: set[int]):
        self._token_bytes = token_bytes
        self._stops = [s.encode("utf-8") for s in stop]
        self._end_ids = end_ids
        self._raw = bytearray()
        self._given = 0  # bytes of _raw fed to the decoder
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._pending: list[tuple[object, int]] = []  # (entry, where its bytes end in _raw), not given yet
        self._ended = False

    def push(self, token_id: int, entry=None) -> Delta | None:
        """Take the sequence's next token (and its logprob entry, if asked for); the Delta it makes final, if any."""
        if self._ended:
            return None
        if token_id in self._end_ids:
            self._ended = True  # the result drops the end token's bytes; it says the rest
            return None
        self._raw += self._token_bytes.raw(token_id)
        if entry is not None:
            self._pending.append((entry, len(self._raw)))
        if any(self._raw.find(s, self._given) >= 0 for s in self._stops):
            self._ended = True  # a stop string starts at or after _given (earlier ones were held back)
            return None
        limit = len(self._raw) - self._stop_prefix_len()
        text = self._decoder.decode(bytes(self._raw[self._given : limit])) if limit > self._given else ""
        self._given = max(self._given, limit)
        decoded = self._given - len(self._decoder.getstate()[0])
        ready = [e for e, end in self._pending if end <= decoded]
        self._pending = self._pending[len(ready) :]
        return Delta(text, ready) if text or ready else None

    def _stop_prefix_len(self) -> int:
        """Length of the longest end of the bytes so far that starts some stop string (0 when none does)."""
        longest = 0
        for stop in self._stops:
            for k in range(min(len(stop) - 1, len(self._raw)), longest, -1):
                if self._raw.endswith(stop[:k]):
                    longest = k
                    break
        return longest


@dataclass
class _Choice:
    """What a choice's chunks have said so far."""

    text: str = ""
    entries: int = 0
    done: bool = False
    completion_tokens: int = 0


class _Stream:
    """Bookkeeping shared by chat and legacy streams: per-choice progress, ids, usage."""

    id_prefix = ""

    def __init__(self, model: str, num_choices: int, prompt_tokens: int, include_usage: bool, created=None):
        self.model = model
        self.id = f"{self.id_prefix}{uuid.uuid4().hex}"
        self.created = int(time.time()) if created is None else created
        self.prompt_tokens = prompt_tokens
        self.include_usage = include_usage
        self.choices = [_Choice() for _ in range(num_choices)]

    @property
    def finished(self) -> bool:
        return all(c.done for c in self.choices)

    def delta(self, index: int, delta: Delta) -> dict | None:
        """The chunk for a Delta of choice `index` (None for an empty one or one after the choice ended)."""
        choice = self.choices[index]
        if choice.done or not (delta.text or delta.logprobs):
            return None
        choice.text += delta.text
        choice.entries += len(delta.logprobs)
        return self._content_chunk(index, delta.text, delta.logprobs, None)

    def result(self, index: int, result) -> dict:
        """The last chunk of choice `index`: what its deltas had not said of `result`, and its finish_reason."""
        choice = self.choices[index]
        if not result.text.startswith(choice.text):  # a producer broke the Delta contract: say it, keep going
            raise ValueError(f"choice {index}: streamed text {choice.text!r} does not open the result's text")
        rest = result.text[len(choice.text) :]
        entries = list(result.logprobs[choice.entries :]) if result.logprobs is not None else []
        choice.text, choice.entries, choice.done = result.text, choice.entries + len(entries), True
        choice.completion_tokens = result.completion_tokens
        return self._content_chunk(index, rest, entries, result)

    def closing(self) -> list[dict]:
        """The chunks after every choice's last: the usage chunk when `include_usage`, else none."""
        if not self.include_usage:
            return []
        completion_tokens = sum(c.completion_tokens for c in self.choices)
        return [self._dump(self._body([], usage=_usage(self.prompt_tokens, completion_tokens)))]

    def _dump(self, body) -> dict:
        return _dump(body)

    def _usage_field(self) -> dict:
        return {"usage": None} if self.include_usage else {}

    def _content_chunk(self, index: int, text: str, entries: list, result) -> dict:
        raise NotImplementedError

    def _body(self, choices: list, **usage):
        raise NotImplementedError


class ChatStream(_Stream):
    """The `chat.completion.chunk` bodies of one streamed chat request (see the module docstring).

    `logprobs`: whether the request asked for them (each content chunk then carries its tokens' entries).
    """

    id_prefix = "chatcmpl-"

    def __init__(self, model: str, num_choices: int, prompt_tokens: int, include_usage: bool, logprobs: bool,
                 created: int | None = None):  # fmt: skip
        super().__init__(model, num_choices, prompt_tokens, include_usage, created)
        self.logprobs = logprobs

    def opening(self) -> list[dict]:
        """The role chunk of every choice."""
        role = ChoiceDelta(role="assistant", content="")
        choices = [
            ChunkChoice(index=i, delta=role, logprobs=None, finish_reason=None) for i in range(len(self.choices))
        ]
        return [self._dump(self._body([choice], **self._usage_field())) for choice in choices]

    def _content_chunk(self, index: int, text: str, entries: list, result) -> dict:
        logprobs = ChunkLogprobs(content=chat_token_logprobs(entries), refusal=None) if self.logprobs else None
        extra = {} if result is None else {"completion_tokens": result.completion_tokens}
        choice = ChunkChoice(index=index, delta=ChoiceDelta(content=text), logprobs=logprobs,
                             finish_reason=None if result is None else result.finish_reason, **extra)  # fmt: skip
        return self._dump(self._body([choice], **self._usage_field()))

    def _body(self, choices: list, **usage) -> ChatCompletionChunk:
        return ChatCompletionChunk(id=self.id, object="chat.completion.chunk", created=self.created, model=self.model,
                                   choices=choices, **usage)  # fmt: skip


class _StreamedCompletionChoice(CompletionChoice):
    # The package types a legacy choice's finish_reason without null, but every chunk before a choice's last has
    # none yet: OpenAI writes null there, and the client (which parses without validating) keeps it.
    finish_reason: Literal["stop", "length", "content_filter"] | None = None


class CompletionStream(_Stream):
    """The `text_completion` chunk bodies of one streamed legacy completion request (see the module docstring).

    `echoes[p]` is what prompt p's choices show of it (`openai_completions.prompt_echo`); choice index is
    p * n + j. `logprobs`: whether the request asked for them.
    """

    id_prefix = "cmpl-"

    def __init__(self, model: str, n: int, echoes: Sequence[PromptEcho | None], prompt_tokens: int,
                 include_usage: bool, logprobs: bool, created: int | None = None):  # fmt: skip
        super().__init__(model, n * len(echoes), prompt_tokens, include_usage, created)
        self.logprobs = logprobs
        self.echoes = [echoes[i // n] for i in range(len(self.choices))]
        # Legacy text_offset counts characters of the choice's whole text: a decoder per choice counts them.
        self._decoders = [codecs.getincrementaldecoder("utf-8")("replace") for _ in self.choices]
        self._chars = [0] * len(self.choices)

    def opening(self) -> list[dict]:
        """Each choice's prompt chunk (echoed text, its logprob entries, `prompt_logprobs`), where it has one."""
        chunks = []
        for index, echo in enumerate(self.echoes):
            if echo is None or (echo.text is None and echo.prompt_logprobs is None):
                continue
            entries = echo.entries or []
            logprobs = self._logprobs(index, entries) if self.logprobs else None
            # The whole answer counts completion offsets from the echoed text's end when it has prompt entries,
            # with a decoder of their own.
            self._chars[index] = len(echo.text) if entries else 0
            self._decoders[index] = codecs.getincrementaldecoder("utf-8")("replace")
            extra = {} if echo.prompt_logprobs is None else {"prompt_logprobs": echo.prompt_logprobs}
            choice = _StreamedCompletionChoice(index=index, text=echo.text or "", logprobs=logprobs, finish_reason=None,
                                      **extra)  # fmt: skip
            chunks.append(self._dump(self._body([choice], **self._usage_field())))
        return chunks

    def _logprobs(self, index: int, entries: list) -> _Logprobs:
        decoder, offsets = self._decoders[index], []
        for entry in entries:
            offsets.append(self._chars[index])
            self._chars[index] += len(decoder.decode(entry.bytes))
        return _Logprobs(
            tokens=[e.token for e in entries],
            token_logprobs=[None if e.logprob is None else _finite(e.logprob) for e in entries],
            top_logprobs=[None if e.top is None else {t.token: _finite(t.logprob) for t in e.top} for e in entries],
            text_offset=offsets,
        )

    def _content_chunk(self, index: int, text: str, entries: list, result) -> dict:
        logprobs = self._logprobs(index, entries) if self.logprobs else None
        finish = None if result is None else result.finish_reason
        choice = _StreamedCompletionChoice(index=index, text=text, logprobs=logprobs, finish_reason=finish)
        return self._dump(self._body([choice], **self._usage_field()))

    def _body(self, choices: list, **usage) -> Completion:
        return Completion(id=self.id, object="text_completion", created=self.created, model=self.model,
                          choices=choices, **usage)  # fmt: skip
