"""Comparing a final answer with the reference (distill_ray.grading.grader.answers_equal): string, numeric and
math-verify paths, and threads. How a reply's final answer is found is test_grader.py's subject."""

import threading

import pytest

from distill_ray.grading.grader import answers_equal, grade, normalize_answer


@pytest.mark.parametrize(
    "predicted, reference",
    [
        ("18", "18"),
        ("$18$", "18"),
        ("18.", "18"),
        (r"5\text{ cm}", "5"),
        (r"\text{Monday}", "Monday"),
        (r"90^\circ", "90"),
        (r"90^{\circ}", "90"),
        (r"1\!000", "1000"),
        ("x + 1", "x+1"),
    ],
)
def test_normalised_strings_match(predicted, reference):
    assert answers_equal(predicted, reference)


@pytest.mark.parametrize(
    "predicted, reference",
    [
        ("0.5", r"\frac{1}{2}"),
        (r"\dfrac{3}{4}", "0.75"),
        ("3/4", "0.75"),
        ("-3/4", r"-\frac{3}{4}"),
        ("1,000", "1000"),
        ("1000.00", "1000"),
        ("0.3333333", "1/3"),  # a decimal within half a unit of its last digit
        ("0.333", "1/3"),  # ... whatever its precision
        ("25%", "25"),  # the percent sign is dropped, not converted
        ("12/4", "3"),  # a fraction, a power and scientific notation are values, not computations
        ("2^{10}", "1024"),
        (r"3 \times 10^{5}", "300000"),
        (r"5 \cdot 11", r"5 \cdot 11"),  # a computation compares as usual against a reference that is one
        (r"2 \cdot 3^2", r"3^2 \cdot 2"),
    ],
)
def test_numeric_fallback(predicted, reference):
    assert answers_equal(predicted, reference)


@pytest.mark.parametrize(
    "predicted, reference",
    [
        (r"\pi/2", r"\frac{\pi}{2}"),
        (r"\left( 3, \frac{\pi}{2} \right)", r"(3, \frac{\pi}{2})"),
        (r"\frac{1}{\sqrt{2}}", r"\frac{\sqrt{2}}{2}"),
    ],
)
def test_symbolic_equivalence_via_math_verify(predicted, reference):
    assert answers_equal(predicted, reference)


@pytest.mark.parametrize(
    "predicted, reference",
    [
        ("17", "18"),
        ("0.5", "0.6"),
        ("1,001", "1000"),
        (r"\frac{\pi}{3}", r"\frac{\pi}{2}"),
        (r"(3, \frac{\pi}{4})", r"(3, \frac{\pi}{2})"),
        ("0.334", "1/3"),  # more than half a unit of its last digit away
        ("0.3", "0.33"),  # two decimals compare exactly
        (None, "1"),
        ("1", None),
        ("", "1"),
        ("  ", "1"),
        ("1", ""),
        ("banana", "18"),
        ("5 * 11", "55"),  # a computation on number literals is not its value (grader.is_computation)
        (r"(3 + 4) \cdot 2", "14"),
        ("2 \u00d7 12", "24"),
    ],
)
def test_wrong_or_missing_answers_are_false(predicted, reference):
    assert answers_equal(predicted, reference) is False


def test_garbage_never_raises():
    assert answers_equal(r"\frac{", r"\sqrt{") is False
    assert answers_equal("}{}{", "$$$") is False


def test_normalize_answer():
    assert normalize_answer(r" $ 12 \text{ dollars}$. ") == "12dollars"  # words stay: units are math-verify's call
    assert normalize_answer(r"2 \text{ and } 7") == "2and7"  # never "27"
    assert normalize_answer(r"\$18") == "18"
    assert normalize_answer(r"45^\circ") == "45"
    assert answers_equal(r"12 \text{ dollars}", "12")


@pytest.mark.parametrize(
    "predicted, reference, expected",
    [
        (r"\pi/2", r"\frac{\pi}{2}", True),  # needs math-verify, which must not use signals here
        (r"\frac{\pi}{3}", r"\frac{\pi}{2}", False),
        ("0.5", r"\frac{1}{2}", True),
    ],
)
def test_works_from_a_non_main_thread(predicted, reference, expected):
    results, errors = [], []

    def check():
        try:
            results.append(answers_equal(predicted, reference, timeout_s=2.0))
        except BaseException as e:  # noqa: BLE001 - the test is that nothing escapes
            errors.append(e)

    worker = threading.Thread(target=check)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive()
    assert errors == []
    assert results == [expected]


def test_grade_reads_the_final_answer_then_compares():
    text = r"<think>3 * 6 = 18</think><answer>\boxed{18}</answer>"
    assert grade(text, "18").correct is True and grade(text, "18").final_answer == "18"
    assert grade(text, "19").correct is False
    assert grade(text, None).correct is None


def test_plain_gsm8k_reply():
    verdict = grade("The total is $1,200.", "1200")
    assert verdict.correct is True and verdict.final_answer == "1200"


def test_math_verify_timeout_notice_stays_off_the_console(caplog, monkeypatch):
    """Off the main thread math-verify's timeouts are off by design; its one-time warning saying so was printed by
    every grading worker. Other math-verify warnings still pass."""
    import logging

    from math_verify import grader as mv_grader
    from math_verify import parser as mv_parser

    monkeypatch.setattr(mv_parser, "TIMEOUT_WARNING_SHOWN", False)  # as in a fresh worker process
    monkeypatch.setattr(mv_grader, "TIMEOUT_WARNING_SHOWN", False, raising=False)
    caplog.set_level(logging.WARNING)
    test_works_from_a_non_main_thread(r"\pi/2", r"\frac{\pi}{2}", True)
    assert mv_parser.TIMEOUT_WARNING_SHOWN  # math-verify did take the no-timeout path
    assert not [r for r in caplog.records if "Timeout is disabled" in r.getMessage()]
    logging.getLogger("math_verify.parser").warning("another math-verify warning")
    assert [r.getMessage() for r in caplog.records] == ["another math-verify warning"]
