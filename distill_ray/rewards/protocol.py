"""Wire format of the reward service: our `/v1/rewards` schema and OpenRLHF's `/get_reward` protocol.

Where it sits: pure Python, no Ray. `serve/reward.py` parses request bodies here into `RewardItem`s,
scores them, and builds the response bodies here. Bad requests raise `ProtocolError` (an HTTP 4xx
with a message naming the field), the same error type and JSON shape the teacher service uses.

`POST /v1/rewards`
    request  {"items": [{"prompt": str, "response": str, "reference": str | number | null}, ...],
              "setting": "vanilla" | "rv" | "cd" | "rv_cd"  (optional; default: the service's)}
    response {"setting": ..., "terms": [...], "results": [{"reward", "format", "accuracy", "correct",
              "rv", "cd", "r_rv", "r_cd"}, ...]}   (rv / cd: the reward models' outputs in [0, 1], or
              null when the service has no such model; r_rv / r_cd: their interval penalties)

`POST /get_reward` (OpenRLHF's remote reward model)
    request  {"query": [prompt + response, ...], "prompts": [prompt, ...], "labels": [reference, ...]}
    response {"rewards": [R, ...], "scores": [accuracy, ...], "extra_logs": {"format": [...], ...}}
    The response is the query with its prompt prefix removed (OpenRLHF sends the decoded full sequence),
    and trailing special tokens such as `<|im_end|>` are dropped. The prompt is scored as sent: when
    OpenRLHF applies a chat template, the reward models see the templated prompt.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from distill_ray.config.reward import SETTING_TERMS
from distill_ray.models.openai_protocol import ProtocolError

_TRAILING_SPECIAL = re.compile(r"(?:\s*(?:<\|[^|<>]{1,40}\|>|</s>|<eos>))+\s*$")


@dataclass(frozen=True)
class RewardItem:
    prompt: str
    response: str
    reference: str | None = None


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
        parsed.append(RewardItem(_text(item.get("prompt"), f"items[{i}].prompt"),
                                 _text(item.get("response"), f"items[{i}].response"),
                                 _reference(item.get("reference"), f"items[{i}].reference")))  # fmt: skip
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
        response = query[len(prompt):] if prompt and query.startswith(prompt) else query
        items.append(RewardItem(prompt, _TRAILING_SPECIAL.sub("", response), _reference(label, f"labels[{i}]")))
    return items


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
