"""Reading a teacher's judgements: difficulty labels and 0-9 scores (RV, CD), robustly.

Where it sits: the `judge` stage asks the teacher to grade each CoT (prompts in distill_ray/prompts.py)
and parses the reply here. Judges do not always answer with the bare label they were asked for, so
the parsers accept common wrappings ("Difficulty: medium", "**7**", "Score = 7/9", "\\boxed{3}") and
refuse anything ambiguous (two different labels, a number outside 0-9) by returning None; the stage
then asks again and finally rejects the CoT with the unparsed text as the reason.
"""

from __future__ import annotations

import re

from distill_ray.config.processing import CRITERIA
from distill_ray.grading.parsing import THINK_CLOSE, THINK_OPEN

DIFFICULTY_LEVELS = ("easy", "medium", "hard")

_LEVEL_WORDS = {
    "easy": "easy", "simple": "easy", "trivial": "easy",
    "medium": "medium", "moderate": "medium", "intermediate": "medium",
    "hard": "hard", "difficult": "hard", "challenging": "hard",
}  # fmt: skip
_WORD = re.compile(r"[a-z]+")
_NUMBER = re.compile(r"(?<![\d.])(-?\d+(?:\.\d+)?)(?![\d.])")
_OUT_OF = re.compile(r"(?<![\d.])(\d+)\s*(?:/|out of)\s*(\d+)")


def strip_reasoning(text: str) -> str:
    """The part of a judge's reply after its reasoning: the verdict is what follows the last `</think>`. A
    reply whose think block never closes was cut mid-thought (a reasoning judge out of tokens) and holds no
    verdict yet: "" (unparseable, so the stage asks again and then rejects the CoT with that reply)."""
    closes = list(THINK_CLOSE.finditer(text))
    rest = text[closes[-1].end() :] if closes else text
    return "" if THINK_OPEN.search(rest) else rest


def parse_difficulty(text: str | None) -> str | None:
    """'easy' | 'medium' | 'hard', or None when no single level is named."""
    if not text:
        return None
    words = _WORD.findall(strip_reasoning(text).lower())
    levels = {_LEVEL_WORDS[w] for w in words if w in _LEVEL_WORDS}
    return levels.pop() if len(levels) == 1 else None


def parse_score(text: str | None, low: int = 0, high: int = 9) -> int | None:
    """An integer score in [low, high], or None when there is no single such number.

    "7/9" and "7 out of 9" read as 7; "Score: 7" and "\\boxed{7}" too. Several different numbers,
    decimals and out-of-range values are refused rather than guessed.
    """
    if not text:
        return None
    body = strip_reasoning(text)
    out_of = _OUT_OF.findall(body)
    if out_of:
        values = {int(num) for num, _ in out_of}
    else:
        values = set()
        for match in _NUMBER.findall(body):
            if "." in match:
                return None
            values.add(int(match))
    if len(values) != 1:
        return None
    value = values.pop()
    return value if low <= value <= high else None


def parse_judgement(criterion: str, text: str | None) -> str | int | None:
    if criterion == "difficulty":
        return parse_difficulty(text)
    if criterion in ("rv", "cd"):
        return parse_score(text)
    raise ValueError(f"unknown judge criterion '{criterion}' (known: {', '.join(CRITERIA)})")
