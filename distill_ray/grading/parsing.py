"""Read a model response into its parts: the reasoning, the answer block, the last box.

Flow: teacher/student text -> **parse_response** (the parts a row stores and the format reward reads) and
`grader.grade` (which final answer the reply gives, and whether it is right; it uses the brace and number
scanners here). Datasets' reference answers are normalised here too (`reference_answer`).

Pure string handling: no sympy, no Ray.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

# `\boxed {x}` with a space is valid LaTeX, so whitespace before the brace is allowed.
BOX_OPEN = re.compile(r"\\(?:boxed|fbox)\s*\{")

# A thousands-grouped number first, so "1,234.50" is not cut at the comma. A minus sign only
# counts when it cannot be a binary minus ("10-5" gives 5, not -5).
_NUMBER = re.compile(
    r"(?:(?<![\w)\]}])-)?(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
)

THINK_OPEN = re.compile(r"<\s*think\s*>", re.IGNORECASE)
THINK_CLOSE = re.compile(r"<\s*/\s*think\s*>", re.IGNORECASE)
ANSWER_OPEN = re.compile(r"<\s*answer\s*>", re.IGNORECASE)
ANSWER_CLOSE = re.compile(r"<\s*/\s*answer\s*>", re.IGNORECASE)


# A chat template that opens the reasoning itself ends the prompt with `<think>` (DeepSeek-R1 distills, QwQ,
# Qwen3 in thinking mode); only whitespace may follow it.
_OPENED_AT_END = re.compile(r"<\s*think\s*>\s*$", re.IGNORECASE)


def prompt_opens_think(prompt: str | None) -> bool:
    """True when `prompt` (as the model saw it, chat template applied) ends with an opened `<think>`, so the
    completion starts inside the reasoning and holds only its `</think>`. A system prompt that merely
    describes the tags ends elsewhere and does not count."""
    return bool(prompt) and _OPENED_AT_END.search(prompt) is not None


def assistant_turn(completion: str, think_opened: bool) -> str:
    """The assistant's whole turn: `<think>` + completion when the template wrote the opening tag (unless the
    completion opens one itself before any close), else the completion unchanged. Format scores and the
    grader read this, so a completion is judged the same whoever wrote its first tag (issue 14 item 7)."""
    completion = completion or ""
    if not think_opened:
        return completion
    opened, closed = THINK_OPEN.search(completion), THINK_CLOSE.search(completion)
    if opened is not None and (closed is None or opened.start() < closed.start()):
        return completion
    return "<think>" + completion


def matching_brace(text: str, open_idx: int) -> int | None:
    """Index of the `}` closing the `{` at open_idx, or None when the text ends first."""
    depth = 0
    i = open_idx
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            # `\{` and `\}` are literal braces in LaTeX (set notation), not grouping.
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def extract_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` / `\\fbox{...}`, nested braces kept; None if absent.

    A last box whose braces never close (a truncated generation) gives None rather than an
    earlier box: the model's final word is unknown, and an earlier box is often a draft.
    """
    if not text:
        return None
    matches = list(BOX_OPEN.finditer(text))
    if not matches:
        return None
    last = matches[-1]
    open_idx = last.end() - 1
    close_idx = matching_brace(text, open_idx)
    if close_idx is None:
        return None
    return text[open_idx + 1 : close_idx].strip()


def last_number(text: str) -> str | None:
    """The last number written in the text, thousands commas removed ("$1,234.50" -> "1234.50")."""
    if not text:
        return None
    found = _NUMBER.findall(text)
    return found[-1].replace(",", "") if found else None


@dataclass(frozen=True)
class ParsedResponse:
    """The parts of one response. `has_think` / `has_answer` say whether the tag was seen at
    all (closed or not); format_reward applies the stricter closed-block rule itself. Which final answer
    the response gives is the grader's call (`distill_ray.grading.grader`), not a part."""

    think: str | None
    answer_text: str | None
    boxed: str | None
    has_think: bool
    has_answer: bool

    def to_dict(self) -> dict:
        return asdict(self)


def _split_think(text: str) -> str | None:
    """Reasoning text, tolerating a missing `</think>` (truncation) or a missing `<think>`
    (chat templates that put the opening tag in the prompt, as R1-style models do)."""
    opened = THINK_OPEN.search(text)
    if opened is None:
        closed = THINK_CLOSE.search(text)
        return text[: closed.start()].strip() if closed else None
    rest = text[opened.end() :]
    stops = [m.start() for m in (THINK_CLOSE.search(rest), ANSWER_OPEN.search(rest)) if m]
    return rest[: min(stops)].strip() if stops else rest.strip()


def _split_answer(text: str) -> str | None:
    """Text of the last `<answer>` block; an unclosed one runs to the end of the text."""
    opens = list(ANSWER_OPEN.finditer(text))
    if not opens:
        return None
    rest = text[opens[-1].end() :]
    closed = ANSWER_CLOSE.search(rest)
    return (rest[: closed.start()] if closed else rest).strip()


def parse_response(text: str) -> ParsedResponse:
    """Split a response into its parts: reasoning, the last `<answer>` block, and its box (else the last box)."""
    text = text or ""
    think = _split_think(text)
    answer_text = _split_answer(text)
    boxed = extract_boxed(answer_text) if answer_text else None
    if boxed is None:
        boxed = extract_boxed(text)
    return ParsedResponse(
        think=think,
        answer_text=answer_text,
        boxed=boxed,
        has_think=think is not None,
        has_answer=answer_text is not None,
    )


def reference_answer(raw: str | int | float | None, answer_format: str) -> str | None:
    """A dataset's reference answer as a comparable string.

    `gsm8k`: the text after the last '####' with commas removed (GSM8K writes "1,000");
    `plain`: the value as written. Missing or empty gives None, meaning "cannot verify".
    """
    if raw is None:
        return None
    text = str(raw).strip()
    if answer_format == "gsm8k":
        # Rows without '####' are taken whole: some GSM8K copies keep only the final number.
        text = text.rsplit("####", 1)[-1].strip().replace(",", "")
    elif answer_format != "plain":
        raise ValueError(f"answer_format must be 'plain' or 'gsm8k', got {answer_format!r}")
    return text or None
