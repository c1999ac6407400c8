"""Parsing the teacher's replies to the synthesis operators (instruction expansion, refinement, pair
extraction). Pure functions; an empty result means "unparseable" and the stage asks again.
"""

from __future__ import annotations

import json
import re

_NUMBERED = re.compile(r"^\s*(?:\d+[.):]|[-*\u2022])\s+(.*\S)\s*$")
_MIN_CHARS = 8  # shorter "instructions" are fragments, not tasks


def _normal(text: str) -> str:
    return " ".join(text.lower().split())


def parse_instruction_list(reply: str, n: int, exclude: str | None = None) -> list[str]:
    """Up to `n` distinct instructions from a numbered or bulleted list (one per line).

    Lines that are not list items are ignored (a preamble such as "Here are three..."), as are copies
    of the original instruction and duplicates.
    """
    seen = {_normal(exclude)} if exclude else set()
    out = []
    for line in reply.splitlines():
        match = _NUMBERED.match(line)
        if not match:
            continue
        text = match.group(1).strip().strip('"')
        key = _normal(text)
        if len(text) >= _MIN_CHARS and key not in seen:
            seen.add(key)
            out.append(text)
        if len(out) == n:
            break
    return out


def parse_single_instruction(reply: str) -> str | None:
    """The refined instruction: the reply without a leading label ("Improved instruction:") or quotes."""
    text = reply.strip()
    text = re.sub(r"^(?:improved|refined|rewritten)?\s*instruction\s*:\s*", "", text, flags=re.IGNORECASE)
    text = text.strip().strip('"').strip()
    return text if len(text) >= _MIN_CHARS else None


def parse_pairs(reply: str, n: int) -> list[tuple[str, str]]:
    """Up to `n` (instruction, response) pairs from a JSON list of objects somewhere in the reply."""
    start, end = reply.find("["), reply.rfind("]")
    if start < 0 or end <= start:
        return []
    try:
        items = json.loads(reply[start : end + 1])
    except json.JSONDecodeError:
        return []
    pairs = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        instruction, response = item.get("instruction"), item.get("response")
        if isinstance(instruction, str) and isinstance(response, str) and instruction.strip() and response.strip():
            pairs.append((instruction.strip(), response.strip()))
        if len(pairs) == n:
            break
    return pairs
