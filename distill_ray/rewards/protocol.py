"""Wire format of the reward service: our `/v1/rewards` schema and OpenRLHF's `/get_reward` protocol.

Where it sits: pure Python, no Ray. `serve/reward.py` parses request bodies here into `RewardItem`s,
scores them, and builds the response bodies here. Bad requests raise `ProtocolError` (an HTTP 4xx
with a message naming the field), the same error type and JSON shape the teacher service uses.

`POST /v1/rewards`
    request  {"items": [{"prompt": str, "response": str, "reference": str | number | null,
                         "think_opened": bool (optional: the chat template wrote `<think>` before the
                         response; default: the service's `reward.think_opened`, else read off the prompt)}, ...],
              "setting": "vanilla" | "rv" | "cd" | "rv_cd"  (optional; default: the service's)}
    response {"setting": ..., "terms": [...], "results": [{"reward", "format", "accuracy", "correct",
              "rv", "cd", "r_rv", "r_cd"}, ...]}   (rv / cd: the reward models' outputs in [0, 1], or
              null when the service has no such model; r_rv / r_cd: their interval penalties)

`POST /get_reward` (OpenRLHF's remote reward model)
    request  {"query": [prompt + response, ...], "prompts": [prompt, ...], "labels": [reference, ...]}
    response {"rewards": [R, ...], "scores": [accuracy, ...], "extra_logs": {"format": [...], ...}}
    OpenRLHF sends each query as the decoded full sequence with special tokens kept: left pads, the
    templated prompt, the response, the end-of-turn token and right pads. **split_query** takes the response
    off it (see there). The prompt is scored as sent: the reward models see the templated prompt, and a
    prompt that ends with `<think>` marks its response as starting inside the reasoning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from distill_ray.config.reward import SETTING_TERMS
from distill_ray.grading.parsing import assistant_turn, prompt_opens_think
from distill_ray.models.openai_protocol import ProtocolError

# Control tokens of the common chat-model families, as a tokenizer decodes them with special tokens kept:
# `<|...|>` (Qwen, SmolLM, Llama 3, Phi-3, GPT-style `<|endoftext|>`), DeepSeek's full-width `<｜...｜>`,
# SentencePiece's `<s>` / `</s>` / `<unk>` (Llama 2, Mistral), Gemma's `<pad>` / `<bos>` / `<eos>` /
# `<end_of_turn>`, BERT-style `[PAD]`.
_SPECIAL = r"<\|[^|<>\s]{1,48}\|>|<｜[^｜<>]{1,48}｜>|</?s>|<unk>|<pad>|<bos>|<eos>|<end_of_turn>|\[PAD\]"
_LEADING = re.compile(rf"^(?:\s*(?:{_SPECIAL}))+")
_TRAILING = re.compile(rf"(?:\s*(?:{_SPECIAL}))+\s*$")
_ANY_SPECIAL = re.compile(_SPECIAL)


@dataclass(frozen=True)
class RewardItem:
    prompt: str
    response: str
    reference: str | None = None
    think_opened: bool | None = None  # None: the service's setting, else read off the prompt

    def assistant_turn(self, think_opened: bool | None = None) -> str:
        """The response as its whole assistant turn (`<think>` + response when the template opened the
        reasoning). Which decides: this item's own `think_opened`, else `think_opened` (the service's
        setting), else whether the prompt ends with `<think>`."""
        opened = self.think_opened if self.think_opened is not None else think_opened
        return assistant_turn(self.response, prompt_opens_think(self.prompt) if opened is None else opened)


def parse_rewards_request(body: Any, max_items: int) -> tuple[list[RewardItem], str | None]:
    """Items and the requested setting (None: the service's) of a /v1/rewards body."""
    if not isinstance(body, dict):
        raise ProtocolError("the request body must be a JSON object with an 'items' list")
    items = body.get("items")
    _check_list(items, "items", max_items)
    parsed = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ProtocolError(f"items[{i}] must be an object with 'prompt' and 'response'", param=f"items[{i}]")
        opened = item.get("think_opened")
        if opened is not None and not isinstance(opened, bool):
            raise ProtocolError(
                f"items[{i}].think_opened must be true, false or absent", param=f"items[{i}].think_opened"
            )
        parsed.append(RewardItem(_text(item.get("prompt"), f"items[{i}].prompt"),
                                 _text(item.get("response"), f"items[{i}].response"),
                                 _reference(item.get("reference"), f"items[{i}].reference"), opened))  # fmt: skip
    setting = body.get("setting")
    if setting is not None and setting not in SETTING_TERMS:
        raise ProtocolError(f"setting must be one of {', '.join(SETTING_TERMS)}, got {setting!r}", param="setting")
    return parsed, setting


def parse_openrlhf_request(body: Any, max_items: int) -> list[RewardItem]:
    """Items of an OpenRLHF /get_reward body: {"query", "prompts", "labels"} (labels optional)."""
    if not isinstance(body, dict):
        raise ProtocolError("the request body must be a JSON object with 'query', 'prompts' and 'labels' lists")
    queries, prompts, labels = body.get("query"), body.get("prompts"), body.get("labels")
    _check_list(queries, "query", max_items)
    n = len(queries)
    if prompts is None:
        prompts = [""] * n
    if labels is None:
        labels = [None] * n
    for name, values in (("prompts", prompts), ("labels", labels)):
        if not isinstance(values, list) or len(values) != n:
            raise ProtocolError(f"'{name}' must be a list as long as 'query' ({n})", param=name)
    items = []
    for i, (query, prompt, label) in enumerate(zip(queries, prompts, labels)):
        query, prompt = _text(query, f"query[{i}]"), _text(prompt, f"prompts[{i}]")
        items.append(RewardItem(prompt, split_query(query, prompt), _reference(label, f"labels[{i}]")))
    return items


def split_query(query: str, prompt: str) -> str:
    """The response of one OpenRLHF query (the decoded full sequence, special tokens kept) whose prompt is `prompt`.

    Pad, bos and eos tokens are stripped from both ends of the query and the start of the prompt first (as
    OpenRLHF's own reward-model server strips its tokenizer's pad and eos; here for the control tokens of every
    common family, since the service has no tokenizer), and the end-of-turn token goes with them. Then the
    response is what follows the prompt: an exact prefix; else, when the client decoded the prompt without
    its control tokens or with other spacing, the match with control tokens removed and runs of whitespace
    read as equal. With no match at all the whole query is the response (control tokens removed): it is
    graded rather than dropped, and the prompt's own tags may then count.
    """
    # The prompt keeps its trailing control tokens: templates end it with the assistant header.
    query, prompt = _strip_edges(query), _LEADING.sub("", prompt)
    if not prompt:
        return query
    if query.startswith(prompt):
        return _strip_edges(query[len(prompt) :])
    bare_query, bare_prompt = _ANY_SPECIAL.sub("", query), _ANY_SPECIAL.sub("", prompt)
    words = [re.escape(w) for w in bare_prompt.split()]
    match = re.match(r"\s*" + r"\s*".join(words), bare_query) if words else None
    if match is None:
        return bare_query.strip()
    rest = bare_query[match.end() :]
    return rest.lstrip() if bare_prompt[-1:].isspace() else rest


def _strip_edges(text: str) -> str:
    return _TRAILING.sub("", _LEADING.sub("", text))


def rewards_response(results: list[dict], setting: str) -> dict:
    return {"setting": setting, "terms": list(SETTING_TERMS[setting]), "results": results}


def openrlhf_response(results: list[dict]) -> dict:
    """`rewards` drive the advantages; `scores` (accuracy in {0, 1}) feed OpenRLHF's dynamic filtering;
    `extra_logs` are logged per batch (only the parts this service computed)."""
    logs = {"format": [r["format"] for r in results], "accuracy": [r["accuracy"] for r in results]}
    for key in ("rv", "cd"):
        if results and all(r[key] is not None for r in results):
            logs[key] = [r[key] for r in results]
    return {"rewards": [r["reward"] for r in results], "scores": [r["accuracy"] for r in results], "extra_logs": logs}


def _check_list(values: Any, name: str, max_items: int) -> None:
    if not isinstance(values, list) or not values:
        raise ProtocolError(f"'{name}' must be a non-empty list", param=name)
    if len(values) > max_items:
        raise ProtocolError(f"'{name}' has {len(values)} entries; this service takes at most {max_items} per request",
                            status_code=413, param=name)  # fmt: skip


def _text(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise ProtocolError(f"{param} must be a string, got {type(value).__name__}", param=param)
    return value


def _reference(value: Any, param: str) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ProtocolError(f"{param} must be a string, a number or null", param=param)
    return str(value)
