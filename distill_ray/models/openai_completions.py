"""Legacy `/v1/completions` on the wire: prompts as text or token ids, echo and prompt logprobs (teacher scoring).

Where it sits: beside `openai_protocol` (the shared request base, chat, errors), with the same rules: requests are
validated by hand and refused with a ProtocolError naming the param, bodies are built from the `openai` package's
own types. `serve/teacher.py` parses a body with `parse_completion_request`, gets token ids, scores and samples
with the engine, describes each prompt with `prompt_echo` and builds the answer with `completion_response`.

Teacher scoring (issue 18) is this route with `echo` and `max_tokens: 0`, the legacy OpenAI way to ask for the
log-probabilities of a given text, or with vLLM's `prompt_logprobs` field:
- `prompt` may be a string, a list of strings, a list of token ids or a list of token-id lists (OpenAI's spec);
  token ids are used exactly as given, so a student's sampled tokens are scored with no re-tokenisation.
- `echo: true`: each choice's `text` starts with the prompt, and with `logprobs: k` its legacy `logprobs` start
  with one entry per prompt token: the first has `token_logprobs` null and `top_logprobs` null (no context), as
  OpenAI and vLLM answer. The generated tokens' entries follow; `text_offset` counts characters of the returned
  text, prompt included. The echoed text is the prompt tokens' exact bytes decoded (the same string for a text
  prompt with a byte-level BPE tokenizer; a special token, e.g. a BOS, adds none); prompt and completion are
  decoded apart, as vLLM does, so a character split between them shows as U+FFFD on each side.
- `prompt_logprobs: k` (vLLM's field, 0..20): each choice carries `prompt_logprobs`, vLLM's list: null for the
  first token, then per token a dict keyed by token id (a JSON string) of {"logprob", "rank", "decoded_token"},
  the prompt's own token first (its rank in the whole vocabulary, counted as vLLM counts it: tokens at least as
  likely, itself included), then the k most likely tokens with ranks 1..k; a prompt token among them appears once,
  with its top-k rank, as in vLLM's dict. `decoded_token` is our token name (OpenAI's `bytes:\\xNN` form for part
  of a character, where vLLM writes U+FFFD). vLLM's -1 (the whole vocabulary) is refused.
- `max_tokens: 0` generates nothing: allowed with `echo` (OpenAI, vLLM) or `prompt_logprobs` (vLLM itself needs
  `echo` for it, so a client meant for both engines sends `echo: true`); without either it is refused, since
  there would be nothing to answer. Such a choice has `finish_reason` "length" and 0 completion tokens.
- Prompt scores are always the raw distribution at temperature 1 (no top-p), whatever the sampling settings,
  which only shape generated tokens. Legacy top-logprob dicts hold the k alternatives (not the chosen token
  added as a (k+1)-th), for prompt and generated tokens alike.
Other choices: `max_tokens` defaults to 16 like OpenAI; without echo, legacy `text_offset` starts at 0 at the
completion (OpenAI's also counted the prompt); `suffix` is refused. `stream` is served (`openai_stream`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from openai.types import Completion, CompletionChoice
from openai.types.completion_choice import Logprobs as CompletionLogprobs
from pydantic import Field, field_validator, model_validator

from distill_ray.models.openai_protocol import MAX_TOP_LOGPROBS, ProtocolError, _dump, _finite, _parse, _Request, _usage
from distill_ray.models.token_bytes import char_offsets, decode_reply

COMPLETION_DEFAULT_MAX_TOKENS = 16
PROMPT_SHAPES = "a string, a list of strings, a list of token ids or a list of token-id lists"


class CompletionRequest(_Request):
    """A legacy completion request (see the module docstring for echo, prompt_logprobs and max_tokens 0)."""

    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(None, ge=0)
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    prompt_logprobs: int | None = None
    echo: bool | None = False
    suffix: str | None = None

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt_shape(cls, v):
        check_prompt(v)
        return v

    @field_validator("prompt_logprobs")
    @classmethod
    def _prompt_logprobs_range(cls, v):
        if v is not None and not 0 <= v <= MAX_TOP_LOGPROBS:
            raise ValueError(f"must be in 0..{MAX_TOP_LOGPROBS}, got {v} (-1, the whole vocabulary, is not served)")
        return v

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, v):
        if v:
            raise ValueError("suffix is not supported by this server")
        return v

    @model_validator(mode="after")
    def _something_to_do(self):
        # A ProtocolError, not a ValueError: pydantic lets it through, so it keeps its param.
        if self.max_tokens == 0 and not self.echo and self.prompt_logprobs is None:
            raise ProtocolError("max_tokens: 0 generates nothing; send echo=true or prompt_logprobs to score the "
                                "prompt, or max_tokens >= 1", param="max_tokens")  # fmt: skip
        return self

    @property
    def prompts(self) -> list[str | list[int]]:
        """One entry per prompt: its text, or its token ids."""
        if isinstance(self.prompt, str):
            return [self.prompt]
        if self.prompt and isinstance(self.prompt[0], int):
            return [list(self.prompt)]
        return list(self.prompt)

    @property
    def max_new_tokens(self) -> int:
        return COMPLETION_DEFAULT_MAX_TOKENS if self.max_tokens is None else self.max_tokens

    @property
    def want_logprobs(self) -> bool:
        # Legacy semantics: logprobs=k asks for the chosen token plus its k best alternatives; 0 is
        # "chosen token only", None is "no logprobs".
        return self.logprobs is not None

    @property
    def top_logprobs_value(self) -> int:
        return self.logprobs or 0

    @property
    def scoring_top_logprobs(self) -> int | None:
        """Alternatives per prompt token the answer needs (the larger of echo's and prompt_logprobs'), or None
        when the prompt need not be scored."""
        wanted = [k for k in (self.logprobs if self.echo else None, self.prompt_logprobs) if k is not None]
        return max(wanted) if wanted else None


def check_prompt(prompt: Any) -> None:
    """Raise ValueError unless `prompt` is one of OpenAI's prompt shapes with no empty list; the first item of a
    list says which list it is. Token ids are ints >= 0 (the vocabulary's upper bound is the engine's to check)."""
    if isinstance(prompt, str):
        return
    if not isinstance(prompt, list):
        raise ValueError(f"must be {PROMPT_SHAPES}")
    if not prompt:
        raise ValueError("the prompt list is empty")
    if isinstance(prompt[0], str):
        for i, text in enumerate(prompt):
            if not isinstance(text, str):
                raise ValueError(f"prompt[{i}] is {text!r}; a list of strings holds only strings")
    elif isinstance(prompt[0], list):
        for i, ids in enumerate(prompt):
            if not isinstance(ids, list) or not ids:
                raise ValueError(f"prompt[{i}] is {ids!r}; a list of token-id lists holds non-empty lists")
            _check_token_ids(ids, f"prompt[{i}]")
    else:
        _check_token_ids(prompt, "prompt")


def _check_token_ids(ids: list, where: str) -> None:
    for j, t in enumerate(ids):
        if isinstance(t, bool) or not isinstance(t, int) or t < 0:
            raise ValueError(f"{where}[{j}] is {t!r}; token ids are integers >= 0 (a prompt is {PROMPT_SHAPES})")


def parse_completion_request(body: Any) -> CompletionRequest:
    return _parse(CompletionRequest, body)


# ---- the prompt's part of each choice ------------------------------------------------------------------


class PromptToken(NamedTuple):
    """A prompt's first token in legacy logprobs: named and with its bytes, but no logprob (it has no context)."""

    token: str
    bytes: bytes
    logprob: None = None
    top: None = None


@dataclass
class PromptEcho:
    """What one prompt adds to each of its choices.

    `text`: the prompt's text opening the choice's text (echo), else None. `entries`: its legacy logprob entries
    (echo with logprobs: a PromptToken, then TokenLogprob-likes with k alternatives), else None.
    `prompt_logprobs`: vLLM's `prompt_logprobs` value (prompt_logprobs=k), else None.
    """

    text: str | None = None
    entries: list | None = None
    prompt_logprobs: list[dict | None] | None = None


def prompt_echo(token_ids: list[int], scores: list | None, token_bytes, req: CompletionRequest) -> PromptEcho:
    """The PromptEcho of one prompt for `req`. `scores` are the engine's `score` entries for `token_ids` (None first;
    needed when `req.scoring_top_logprobs` is not None), `token_bytes` the engine's TokenBytes (names, bytes)."""
    echo = PromptEcho()
    if req.echo:
        echo.text = decode_reply(token_bytes.join(token_ids))
        if req.logprobs is not None:
            first = PromptToken(token_bytes.name(token_ids[0]), token_bytes.raw(token_ids[0]))
            echo.entries = [first, *(_with_top(e, req.logprobs) for e in scores[1:])]
    if req.prompt_logprobs is not None:
        echo.prompt_logprobs = [None, *(vllm_logprob_dict(e, req.prompt_logprobs) for e in scores[1:])]
    return echo


def _with_top(entry, k: int):
    return entry if len(entry.top) <= k else replace(entry, top=entry.top[:k])


def vllm_logprob_dict(entry, k: int) -> dict[str, dict]:
    """One position of vLLM's prompt logprobs: {token id: {"logprob", "rank", "decoded_token"}}, the scored token
    first, then its k most likely alternatives (ranks 1..k); an alternative that is the scored token replaces its
    value in place, as in vLLM's dict. Keys are strings, as JSON writes them, so handle and HTTP answers agree."""
    found = {str(entry.token_id): {"logprob": _finite(entry.logprob), "rank": entry.rank, "decoded_token": entry.token}}
    for rank, alt in enumerate(entry.top[:k], start=1):
        found[str(alt.token_id)] = {"logprob": _finite(alt.logprob), "rank": rank, "decoded_token": alt.token}
    return found


class NoCompletion(NamedTuple):
    """The completion part of a choice with `max_tokens: 0`: nothing generated."""

    text: str = ""
    finish_reason: str = "length"
    completion_tokens: int = 0
    logprobs: list | None = None


def no_completions(req: CompletionRequest) -> list[NoCompletion]:
    """The `n` empty completions of one prompt when `req` generates nothing (`max_tokens: 0`)."""
    return [NoCompletion(logprobs=[] if req.want_logprobs else None)] * req.num_choices


# ---- the body ---------------------------------------------------------------------------------------------


class _Logprobs(CompletionLogprobs):
    # The package types these lists without nulls, but an echoed prompt's first token has none to give: OpenAI's
    # legacy API and vLLM write null there, and the client (which parses without validating) keeps it.
    token_logprobs: list[float | None] | None = None
    top_logprobs: list[dict[str, float] | None] | None = None


def _completion_logprobs(entries, echo: PromptEcho | None) -> CompletionLogprobs | None:
    if entries is None:
        return None
    prompt = echo.entries if echo is not None and echo.entries is not None else []
    offsets = char_offsets([e.bytes for e in prompt])
    start = len(echo.text) if prompt else 0
    offsets += [start + o for o in char_offsets([e.bytes for e in entries])]
    every = [*prompt, *entries]
    return _Logprobs(
        tokens=[e.token for e in every],
        token_logprobs=[None if e.logprob is None else _finite(e.logprob) for e in every],
        top_logprobs=[None if e.top is None else {t.token: _finite(t.logprob) for t in e.top} for e in every],
        text_offset=offsets,
    )


def completion_logprobs(entries, echo: PromptEcho | None = None) -> dict | None:
    """Legacy completions `choices[i].logprobs`: parallel token lists, top-k dicts and character offsets, the
    echoed prompt's entries first when `echo` has them."""
    logprobs = _completion_logprobs(entries, echo)
    return None if logprobs is None else _dump(logprobs)


def _choice(index: int, r, echo: PromptEcho | None) -> CompletionChoice:
    text = r.text if echo is None or echo.text is None else echo.text + r.text
    extra = {} if echo is None or echo.prompt_logprobs is None else {"prompt_logprobs": echo.prompt_logprobs}
    logprobs = _completion_logprobs(r.logprobs, echo)
    return CompletionChoice(index=index, text=text, finish_reason=r.finish_reason, logprobs=logprobs, **extra)


def completion_response(
    results_per_prompt: Sequence[Sequence],
    model: str,
    prompt_tokens: Sequence[int],
    created: int | None = None,
    echoes: Sequence[PromptEcho | None] | None = None,
) -> dict:
    """A `text_completion` body; choice index is prompt_index * n + j, as OpenAI orders them.

    `results_per_prompt[p]` are prompt p's completions (GenResult-likes, or NoCompletions), `prompt_tokens[p]` its
    length (counted once however many choices), `echoes[p]` what its choices show of it (None: nothing)."""
    echoes = echoes if echoes is not None else [None] * len(results_per_prompt)
    choices = []
    for results, echo in zip(results_per_prompt, echoes, strict=True):
        for r in results:
            choices.append(_choice(len(choices), r, echo))
    completion_tokens = sum(r.completion_tokens for results in results_per_prompt for r in results)
    return _dump(
        Completion(
            id=f"cmpl-{uuid.uuid4().hex}",
            object="text_completion",
            created=int(time.time()) if created is None else created,
            model=model,
            choices=choices,
            usage=_usage(sum(prompt_tokens), completion_tokens),
        )
    )
