"""Rule-based answer checking: is a parsed final answer equal to the reference?

Flow: parsing.parse_response -> **answers_match / verify_response** -> keep/reject rows and
the correctness input of rewards. Cheap checks go first (normalised strings, then numbers);
math-verify (sympy) runs only when they fail, because it is slow and can hang on odd input.

math-verify guards its own time limit with `signal.alarm`, which only works in the main thread
of the main interpreter. In any other thread (Serve replicas, threaded Ray actors, Ray Data
UDFs) we call it with its timeouts off (`parsing_timeout=None`, `timeout_seconds=None`); there
the caller owns the time limit (e.g. run the whole check in a subprocess or a Ray task).
"""

from __future__ import annotations

import logging
import math
import re
import threading
from fractions import Fraction

from distill_ray.grading.parsing import ParsedResponse, parse_response

log = logging.getLogger(__name__)

_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|textrm|mbox|mathrm)\s*\{([^{}]*)\}")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?")
# LaTeX spacing commands carry no meaning in an answer.
_LATEX_SPACES = re.compile(r"\\[!,;: ]|\\quad|\\qquad")
_THOUSANDS = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_FRAC = re.compile(r"^(-?)\\[dt]?frac\{(-?\d+)\}\{(-?\d+)\}$")
_SLASH = re.compile(r"^(-?\d+)/(-?\d+)$")
_DECIMAL = re.compile(r"^-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?$")


def _drop_text_units(s: str) -> str:
    """`\\text{...}` alone is the answer ("\\text{Monday}"); after a value it is a unit ("5\\text{ cm}")."""
    whole = _TEXT_WRAPPER.fullmatch(s)
    if whole:
        return whole.group(1)
    return _TEXT_WRAPPER.sub("", s)


def normalize_answer(s: str) -> str:
    """A comparison key: no `$`, whitespace, spacing commands, degree marks, unit wrappers or
    trailing full stop. Used for exact string equality only, so it may destroy LaTeX meaning."""
    s = s.replace("$", "").strip()
    s = _LATEX_SPACES.sub("", s)
    s = _DEGREES.sub("", s)
    s = _drop_text_units(s.strip())
    s = re.sub(r"\s+", "", s)
    return s.rstrip(".")


def _as_number(s: str) -> Fraction | None:
    """Exact value of a plain number, "3/4" or `\\frac{3}{4}` (also dfrac/tfrac); else None.

    A trailing percent sign is dropped without dividing by 100: GSM8K-style references write
    "25" for an answer of "25%", and math-verify gets the other reading (0.25) later.
    """
    s = s.replace("{,}", "").replace("\\%", "").rstrip("%")
    if _THOUSANDS.match(s):
        s = s.replace(",", "")
    try:
        if _DECIMAL.match(s):
            return Fraction(s)
        frac = _FRAC.match(s) or _SLASH.match(s)
        if frac is None:
            return None
        if frac.re is _FRAC:
            sign, num, den = frac.groups()
            value = Fraction(int(num), int(den))
            return -value if sign else value
        return Fraction(int(frac.group(1)), int(frac.group(2)))
    except (ValueError, ZeroDivisionError, OverflowError):
        return None


def _numbers_equal(a: str, b: str) -> bool:
    x, y = _as_number(a), _as_number(b)
    if x is None or y is None:
        return False
    if x == y:
        return True
    return math.isclose(float(x), float(y), rel_tol=1e-6, abs_tol=1e-9)


def _as_latex(s: str) -> str:
    """math-verify's LaTeX extractor only looks inside math delimiters or `\\boxed`, so a bare
    answer like `\\frac{\\pi}{2}` is wrapped in `$...$` (any `$` already in it is dropped first:
    answers are single expressions, and "$5" means dollars)."""
    s = s.strip().rstrip(".").strip()
    if "\\boxed" in s or "\\fbox" in s:
        return s
    return "$" + s.replace("$", "").strip() + "$"


def _math_verify_equal(predicted: str, reference: str, timeout_s: float) -> bool:
    """Symbolic equivalence via math-verify; any failure or timeout counts as not equal."""
    from math_verify import parse, verify  # deferred: importing sympy costs ~1 s
    from math_verify.errors import TimeoutException

    in_main = threading.current_thread() is threading.main_thread()
    # signal.alarm takes whole seconds; round up so a 0.5 s budget does not become "no limit".
    limit = max(1, math.ceil(timeout_s)) if in_main else None
    try:
        gold = parse(_as_latex(reference), parsing_timeout=limit)
        pred = parse(_as_latex(predicted), parsing_timeout=limit)
        if not gold or not pred:
            return False
        # verify is asymmetric by design: the reference goes first, as gold.
        return bool(verify(gold, pred, timeout_seconds=limit))
    except (Exception, TimeoutException):
        log.debug("math-verify failed on %r vs %r", predicted, reference, exc_info=True)
        return False


def answers_match(predicted: str | None, reference: str | None, timeout_s: float = 5.0) -> bool:
    """True when the predicted answer equals the reference; never raises."""
    if predicted is None or reference is None:
        return False
    predicted, reference = str(predicted).strip(), str(reference).strip()
    if not predicted or not reference:
        return False
    p_key, r_key = normalize_answer(predicted), normalize_answer(reference)
    if p_key and p_key == r_key:
        return True
    if _numbers_equal(p_key, r_key):
        return True
    return _math_verify_equal(predicted, reference, timeout_s)


def verify_response(
    text: str, reference: str | None, timeout_s: float = 5.0
) -> tuple[bool | None, ParsedResponse]:
    """Parse a response and check it; correctness is None when there is no reference."""
    parsed = parse_response(text)
    if reference is None:
        return None, parsed
    return answers_match(parsed.final_answer, reference, timeout_s), parsed


def check_answer(text: str, reference: str | None, timeout_s: float = 5.0) -> bool | None:
    """`verify_response`'s verdict alone: small to send back from a worker process."""
    return verify_response(text, reference, timeout_s)[0]
