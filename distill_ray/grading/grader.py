"""The grader: is a reply's final answer the reference's? The one verdict behind kept CoTs, AdvDistill rewards,
the reward service, GRPO and every eval number.

Flow: reply (+ its finish_reason) -> **final_region** (where a final answer may stand) -> **extract_final**
(what it is) -> **answers_equal** (exact checks, then math-verify's symbolic comparison) -> `Grade`.

Rules, each the answer to one kind of fault seen in real reasoning-model output:
- Where the final answer stands: in the last `<answer>...</answer>` when the reply has one; else after the
  last `</think>`; else anywhere. Drafts inside a closed think block never count.
- When there is none: a reply cut at the length limit (`finish_reason: length`), an unclosed think or answer
  block, or a last `\\boxed{` that never closes. `Grade.reason` says which, and the reply is not correct.
- What it is: the GSM8K marker's value (`#### 36`) when there is one; else math-verify's own extraction from
  the region (boxes first, several boxes as one answer, "final answer is $...$", relations, sets,
  intervals); else the last number written, with typographic variants (Unicode minus, thin spaces, `{,}`)
  read as the number they are.
- The reference may be a bare answer or a worked solution whose answer is boxed (MATH's `solution`).
- A computation is not its value: a final answer written as arithmetic on number literals (`5 * 11`, `16 + 24`,
  `(3 + 4) \\cdot 2`; `is_computation`), alone or as the right side of a relation (`$18 = 5 \\times 11$`, which
  math-verify reads as its right side), is wrong whatever it evaluates to, unless the reference is written as one
  too (a factorisation). Small models restate the question's expression as their last one ("... thus 5 * 11 is 18.
  This is the result for 5 * 11."), and math-verify would evaluate it to the reference. A power, a fraction and
  scientific notation stay values (`2^{10}`, `\\frac{3}{4}`, `12/4`, `3 \\times 10^{5}`). The price: a reply that
  ends on a check (`72 = 48 + 24`) is read as ending on the computation, and is wrong.
- Equality: exact values compare exactly. Strings after a normalisation that keeps meaning (escaped currency
  and spacing dropped; `\\text{...}` kept as its words, so "2 and 7" never becomes 27); plain numbers as
  fractions; other exact numbers (`\\frac{1}{3^{61}}`) to 60 significant digits. A tolerance applies only
  where one side is a decimal approximation of the other, and then half a unit of its last stated decimal.
  When both sides are numbers, that verdict stands and math-verify's looser numeric tolerance never
  overrules it; otherwise math-verify's symbolic comparison decides, with the reference as gold.

math-verify guards its own time limit with `signal.alarm`, which only works in the main thread; in any
other thread (Serve replicas, threaded actors) it runs with its timeouts off and the caller owns the time
limit (the reward service grades each item in a worker process with its own deadline).
"""

from __future__ import annotations

import logging
import math
import re
import threading
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from distill_ray.grading.parsing import (
    ANSWER_CLOSE,
    ANSWER_OPEN,
    BOX_OPEN,
    THINK_CLOSE,
    THINK_OPEN,
    extract_boxed,
    last_number,
    matching_brace,
)
from distill_ray.log import DropMessages

log = logging.getLogger(__name__)

FORMATS = ("auto", "think_answer", "boxed")


# math-verify logs "Timeout is disabled ..." once per process the first time it runs off the main thread: this
# module runs it there by design with its timeouts off (the module docstring says who owns the time limit then), and
# the warning reached the console from every grading worker of every stage.
for _name in ("math_verify.parser", "math_verify.grader"):  # the loggers that log it (getLogger imports nothing)
    logging.getLogger(_name).addFilter(DropMessages(("Timeout is disabled",)))


@dataclass(frozen=True)
class Grade:
    """The verdict on one reply.

    correct: True or False; None when there is no reference to grade against.
    final_answer: the final answer as the reply writes it; None when it has none.
    reason: why there is no final answer (cut at the length limit, an unclosed block or box, nothing found).
    """

    correct: bool | None
    final_answer: str | None
    reason: str | None = None


def grade(reply: str | None, reference: Any, *, finish_reason: str | None = None, fmt: str = "auto",
          timeout_s: float = 5.0) -> Grade:  # fmt: skip
    """Grade one reply against its reference (a bare answer, or a worked solution with a boxed answer).

    reply: the model's whole text (reasoning included). reference: str / number / None (None: nothing to
    grade against, correct is None). finish_reason: the server's (`length` means cut off). fmt: where the
    final answer must stand: `auto` (the rules above), `think_answer` (in an `<answer>` block), `boxed` (in a
    `\\boxed{}`). timeout_s: budget of each math-verify call in the main thread. Raises ValueError for
    an unknown fmt only; a reply or reference it cannot read is graded, never an exception.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    region, reason = final_region(reply or "", finish_reason)
    if region is not None and fmt == "think_answer" and not ANSWER_OPEN.search(reply or ""):
        region, reason = None, "no <answer> block"
    if region is not None and fmt == "boxed" and not BOX_OPEN.search(region):
        region, reason = None, "no \\boxed answer"
    final, parsed = (None, None) if region is None else extract_final(region, timeout_s)
    if region is not None and final is None:
        reason = "no final answer found"
    gold = reference_answer_text(reference)
    if gold is None:
        return Grade(None, final, reason)
    if final is None:
        return Grade(False, None, reason)
    return Grade(answers_equal(final, gold, timeout_s, parsed), final, None)


def check_answer(reply: str | None, reference: Any, timeout_s: float = 5.0, finish_reason: str | None = None):
    """`grade(...).correct` alone (True / False / None): small to send back from a worker process."""
    return grade(reply, reference, finish_reason=finish_reason, timeout_s=timeout_s).correct


def warm_up() -> None:
    """Import sympy / math-verify and grade once, so that a worker process's first real item is not charged
    the ~1-2 s of imports (the reward service's verifier workers run this when they start)."""
    check_answer("\\boxed{x + \\frac{1}{2}}", "0.5 + x", 1.0)


# ------------------------------------------------------------------------------------------ where and what


def final_region(reply: str, finish_reason: str | None = None) -> tuple[str | None, str | None]:
    """(the text a final answer may stand in, None) or (None, why the reply has no final answer)."""
    if finish_reason == "length":
        return None, "cut at the length limit (finish_reason: length)"
    closes = list(THINK_CLOSE.finditer(reply))
    if closes:
        region = reply[closes[-1].end() :]
        if THINK_OPEN.search(region):
            return None, "unclosed think block"
    elif THINK_OPEN.search(reply):
        return None, "unclosed think block"
    else:
        region = reply
    answers = list(ANSWER_OPEN.finditer(region))
    if answers:
        rest = region[answers[-1].end() :]
        closed = ANSWER_CLOSE.search(rest)
        if closed is None:
            return None, "unclosed answer block"
        region = rest[: closed.start()]
    boxes = list(BOX_OPEN.finditer(region))
    if boxes and matching_brace(region, boxes[-1].end() - 1) is None:
        return None, "unclosed \\boxed"
    return region, None


_GSM8K_MARK = re.compile(r"####\s*([^\n]*)")


def extract_final(region: str, timeout_s: float = 5.0) -> tuple[str | None, list | None]:
    """(the final answer written in `region`, math-verify's parse of it when that is where it came from)."""
    region = typographic_numbers(region)
    marks = _GSM8K_MARK.findall(region)
    if marks:
        value = last_number(marks[-1])
        if value is not None:
            return value, None
    boxes = _closed_boxes(region)
    if len(boxes) == 1 and _plain_number(boxes[0]) is not None:
        return boxes[0], None  # the common case, decided without sympy
    if len(boxes) > 1:  # several boxes are one answer, a set ("500, 501": never the number 500501)
        joined = "\\{" + ", ".join(boxes) + "\\}"
        return joined, _mv_parse(f"${joined}$", timeout_s) or None
    parsed = _mv_parse(region, timeout_s)
    if parsed:
        return str(parsed[-1]), parsed
    return last_number(region), None


def _closed_boxes(region: str) -> list[str]:
    """The contents of every closed `\\boxed{...}` / `\\fbox{...}` in the region, in order."""
    found = []
    for opened in BOX_OPEN.finditer(region):
        close = matching_brace(region, opened.end() - 1)
        if close is not None:
            found.append(region[opened.end() : close].strip())
    return found


def typographic_numbers(text: str) -> str:
    """Numbers as plain ASCII: Unicode minus signs and dashes become `-`, full-width digits become digits, and
    thin / narrow / no-break spaces and `{,}` between digit groups (thousands separators) are dropped."""
    text = text.translate(_TYPOGRAPHIC)
    text = re.sub(r"(?<=\d)(?:\{,\}|[\u2009\u202f\u00a0](?=\d{3}\b))", "", text)
    return text


_TYPOGRAPHIC = {0x2212: "-", 0x2013: "-", 0xFE63: "-", 0xFF0D: "-",
                **{0xFF10 + d: str(d) for d in range(10)}}  # fmt: skip


def reference_answer_text(reference: Any) -> str | None:
    """The answer a reference states: its last box when it is a worked solution, else itself; None if empty."""
    if reference is None:
        return None
    text = str(reference).strip()
    if not text:
        return None
    boxed = extract_boxed(text) if BOX_OPEN.search(text) else None
    if boxed:
        return boxed
    if "####" in text:
        return text.rsplit("####", 1)[-1].strip() or None
    return text


# ------------------------------------------------------------------------------------------ equality


def answers_equal(predicted: str, reference: str, timeout_s: float = 5.0, parsed: list | None = None) -> bool:
    """True when the predicted final answer equals the reference's (see the module docstring); False when
    either is missing or empty. Never raises."""
    if predicted is None or reference is None:
        return False
    try:
        return _answers_equal(str(predicted).strip(), str(reference).strip(), timeout_s, parsed)
    except Exception:  # noqa: BLE001 - a grader must not crash a stage; unknown means not shown correct
        log.debug("grading %r vs %r failed", predicted, reference, exc_info=True)
        return False


def _answers_equal(predicted: str, reference: str, timeout_s: float, parsed: list | None) -> bool:
    if not predicted or not reference:
        return False
    # math-verify reads a relation `a = b` as b: `18 = 5 \\times 11` ends on a computation as `5 * 11` does
    if is_computation(predicted.rsplit("=", 1)[-1]) and not is_computation(reference):
        return False
    p_key, r_key = normalize_answer(predicted), normalize_answer(reference)
    if p_key and p_key == r_key:
        return True
    x, y = _plain_number(predicted), _plain_number(reference)
    if x is not None and y is not None:
        return _numbers_equal(x, y)
    gold = _mv_parse(_as_latex(reference), timeout_s)
    pred = parsed or _mv_parse(_as_latex(predicted), timeout_s)
    if not gold or not pred:
        return False
    verdict = _exact_numbers_verdict(gold[0], pred[0], str(gold[-1]), str(pred[-1]), timeout_s)
    if verdict is not None:
        return verdict
    return _mv_verify(gold, pred, timeout_s)


# A number literal with an optional integer power (`2^{10}`), in any brackets, or two of them as a fraction (`12/4`).
_LITERAL = r"-?\d+(?:\.\d+)?(?:\^\{?-?\d+\}?)?"
_BRACKETED = rf"(?:[(\[]|\\\{{)*{_LITERAL}(?:[)\]]|\\\}})*"
_OPERAND = rf"{_BRACKETED}(?:/{_BRACKETED})?"
_BINARY_OP = r"(?:[-+*\u00d7\u00b7\u00f7]|\\times|\\cdot|\\div)"
_COMPUTATION = re.compile(rf"{_OPERAND}(?:{_BINARY_OP}{_OPERAND})+")
_SCIENTIFIC = re.compile(r"-?\d+(?:\.\d+)?(?:[*\u00d7\u00b7]|\\times|\\cdot)10\^\{?-?\d+\}?")
_FRAC = re.compile(r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}")


def is_computation(answer: str) -> bool:
    """True when `answer` is arithmetic on number literals (`5 * 11`, `16 + 24.`, `$(3 + 4) \\cdot 2$`, `3^2 + 4`,
    `1 + \\frac{1}{2}`): numbers, powers, fractions and brackets joined by + - * (their Unicode forms, \\times, \\cdot,
    \\div), and nothing else. One number is not one, whatever its form (`-5`, `2^{10}`, `(1/2)`, `\\frac{12}{4}`), nor
    is scientific notation (`3 \\times 10^{5}`) or anything with a root, a constant or a letter (`2\\sqrt{2}`, `x+1`)."""
    s = typographic_numbers(answer).replace("\\$", "").replace("$", "")
    s = _SPACING.sub("", s).replace("\\(", "").replace("\\)", "")
    s = _FRAC.sub(r"(\1)/(\2)", re.sub(r"\s+", "", s)).rstrip(".")
    return _COMPUTATION.fullmatch(s) is not None and _SCIENTIFIC.fullmatch(s) is None


_TEXT = re.compile(r"\\(?:text|textbf|textrm|textit|mbox|mathrm|operatorname)\s*\{([^{}]*)\}")
_SPACING = re.compile(r"\\[!,;: ]|\\quad|\\qquad|\\left|\\right|\\displaystyle")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?")


def normalize_answer(s: str) -> str:
    """A comparison key for exact string equality: no math delimiters, escaped currency, spacing, degree
    marks, `\\dfrac` / `\\tfrac` spellings or trailing full stop; `\\text{...}` becomes its words (kept apart
    from their neighbours, so two values never merge into one)."""
    s = s.replace("\\$", " ").replace("$", " ")
    s = _SPACING.sub(" ", s)
    s = _DEGREES.sub("", s)
    s = _TEXT.sub(lambda m: f" {m.group(1)} ", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    return re.sub(r"\s+", "", s).rstrip(".")


@dataclass(frozen=True)
class _Number:
    value: Fraction
    decimals: int | None  # digits after the decimal point of a decimal literal; None for an exact form


_PLAIN_FRAC = re.compile(r"^(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}$")
_SLASH = re.compile(r"^(-?\d+)/(-?\d+)$")
_DECIMAL = re.compile(r"^-?(?:\d+(?:\.(\d*))?|\.(\d+))$")


def _plain_number(s: str) -> _Number | None:
    """The value of a plain number (integer, decimal, `a/b`, `\\frac{a}{b}`), from a final answer or a reference
    as written; None for anything else. A trailing percent sign is dropped (GSM8K writes 25 for 25%)."""
    s = typographic_numbers(s).replace("\\$", "").replace("$", "").replace("\\%", "").rstrip("%").strip()
    s = _SPACING.sub("", s).replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace(" ", "").rstrip(".")
    if re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", s):
        s = s.replace(",", "")
    try:
        decimal = _DECIMAL.match(s)
        if decimal:
            digits = decimal.group(1) if decimal.group(1) is not None else decimal.group(2)
            return _Number(Fraction(s), len(digits) if digits is not None and "." in s else None)
        frac = _PLAIN_FRAC.match(s)
        if frac:
            sign, num, den = frac.groups()
            value = Fraction(int(num), int(den))
            return _Number(-value if sign else value, None)
        slash = _SLASH.match(s)
        if slash:
            return _Number(Fraction(int(slash.group(1)), int(slash.group(2))), None)
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    return None


def _numbers_equal(x: _Number, y: _Number) -> bool:
    """Exact, unless exactly one side is a decimal approximation of a value the other states exactly: then
    within half a unit of the decimal's last digit (1/3 = 0.333, but 0.5 != 0.52 and 2000000 != 2000001)."""
    if x.value == y.value:
        return True
    if (x.decimals is None) == (y.decimals is None):
        return False
    approx = x if x.decimals is not None else y
    return abs(x.value - y.value) <= Fraction(1, 2 * 10**approx.decimals)


def _exact_numbers_verdict(gold, pred, gold_text: str, pred_text: str, timeout_s: float = 5.0) -> bool | None:
    """For two numbers math-verify parsed: exact comparison (60 significant digits) when both are exact,
    the stated-precision tolerance when one is a decimal; None when either is not a number.

    All arithmetic stays in sympy / mpmath: a value beyond the float range (`9^{9^{9}}`) must not become
    `inf`, where `inf <= tolerance * inf` would call it equal to anything. Evaluating to 60 digits can take
    unbounded time (`\\sin(10^{10^{6}})` needs a million digits of pi), so it runs under the same time
    limit as math-verify's own calls; running out means not shown equal (False)."""
    from math_verify.errors import TimeoutException  # a BaseException: `except Exception` lets it through
    from math_verify.utils import timeout

    try:
        return timeout(_limit(timeout_s))(_numbers_verdict)(gold, pred, gold_text, pred_text)
    except TimeoutException:
        log.debug("comparing %s and %s ran out of time", gold_text, pred_text)
        return False


def _numbers_verdict(gold, pred, gold_text: str, pred_text: str) -> bool | None:
    import sympy

    if not (isinstance(gold, sympy.Expr) and isinstance(pred, sympy.Expr)):
        return None
    if not (gold.is_number and pred.is_number):
        return None
    g_float, p_float = gold.has(sympy.Float), pred.has(sympy.Float)
    a, b = sympy.N(gold, 60), sympy.N(pred, 60)
    if not (a.is_finite and b.is_finite):
        return None
    diff = sympy.Abs(a - b)
    if g_float == p_float:
        scale = sympy.Max(1, sympy.Abs(a), sympy.Abs(b))
        return bool(diff <= sympy.Float("1e-12" if g_float else "1e-45", 60) * scale)
    decimals = _stated_decimals(pred_text if p_float else gold_text)
    if decimals is None:
        return None
    return bool(diff <= sympy.Rational(1, 2 * 10**decimals) * sympy.Float("1.000000001", 60))


def _stated_decimals(text: str) -> int | None:
    found = re.findall(r"\d\.(\d+)", text)
    return len(found[-1]) if found else None


# ------------------------------------------------------------------------------------------ math-verify


def _as_latex(s: str) -> str:
    """math-verify reads LaTeX inside math delimiters or a box, so a bare answer is wrapped in `$...$`
    (escaped currency and stray `$` dropped first: an answer is one expression)."""
    s = s.strip().rstrip(".").strip()
    if "\\boxed" in s or "\\fbox" in s:
        return s
    return "$" + s.replace("\\$", "").replace("$", "").strip() + "$"


def _limit(timeout_s: float) -> int | None:
    # signal.alarm takes whole seconds and works only in the main thread (see the module docstring).
    return max(1, math.ceil(timeout_s)) if threading.current_thread() is threading.main_thread() else None


def _mv_parse(text: str, timeout_s: float) -> list:
    from math_verify import parse  # deferred: importing sympy costs ~1 s

    try:
        return parse(text, parsing_timeout=_limit(timeout_s)) or []
    except Exception:  # noqa: BLE001 - includes math-verify's TimeoutException
        log.debug("math-verify could not parse %r", text, exc_info=True)
        return []


def _mv_verify(gold: list, pred: list, timeout_s: float) -> bool:
    from math_verify import verify

    try:
        return bool(verify(gold, pred, timeout_seconds=_limit(timeout_s)))  # the reference first, as gold
    except Exception:  # noqa: BLE001
        log.debug("math-verify could not compare %r and %r", gold, pred, exc_info=True)
        return False
