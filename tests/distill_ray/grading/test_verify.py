"""Answer checking (distill_ray.grading.verify): string, numeric and math-verify paths, and threads."""

import threading

import pytest

from distill_ray.grading.verify import answers_match, normalize_answer, verify_response


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
    assert answers_match(predicted, reference)


@pytest.mark.parametrize(
    "predicted, reference",
    [
        ("0.5", r"\frac{1}{2}"),
        (r"\dfrac{3}{4}", "0.75"),
        ("3/4", "0.75"),
        ("-3/4", r"-\frac{3}{4}"),
        ("1,000", "1000"),
        ("1000.00", "1000"),
        ("0.3333333", "1/3"),  # within rel 1e-6
        ("25%", "25"),  # the percent sign is dropped, not converted
    ],
)
def test_numeric_fallback(predicted, reference):
    assert answers_match(predicted, reference)


@pytest.mark.parametrize(
    "predicted, reference",
    [
        (r"\pi/2", r"\frac{\pi}{2}"),
        (r"\left( 3, \frac{\pi}{2} \right)", r"(3, \frac{\pi}{2})"),
        (r"\frac{1}{\sqrt{2}}", r"\frac{\sqrt{2}}{2}"),
    ],
)
def test_symbolic_equivalence_via_math_verify(predicted, reference):
    assert answers_match(predicted, reference)


@pytest.mark.parametrize(
    "predicted, reference",
    [
        ("17", "18"),
        ("0.5", "0.6"),
        ("1,001", "1000"),
        (r"\frac{\pi}{3}", r"\frac{\pi}{2}"),
        (r"(3, \frac{\pi}{4})", r"(3, \frac{\pi}{2})"),
        ("0.333", "1/3"),  # outside rel 1e-6
        (None, "1"),
        ("1", None),
        ("", "1"),
        ("  ", "1"),
        ("1", ""),
        ("banana", "18"),
    ],
)
def test_wrong_or_missing_answers_are_false(predicted, reference):
    assert answers_match(predicted, reference) is False


def test_garbage_never_raises():
    assert answers_match(r"\frac{", r"\sqrt{") is False
    assert answers_match("}{}{", "$$$") is False


def test_normalize_answer():
    assert normalize_answer(r" $ 12 \text{ dollars}$. ") == "12"
    assert normalize_answer(r"45^\circ") == "45"


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
            results.append(answers_match(predicted, reference, timeout_s=2.0))
        except BaseException as e:  # noqa: BLE001 - the test is that nothing escapes
            errors.append(e)

    worker = threading.Thread(target=check)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive()
    assert errors == []
    assert results == [expected]


def test_verify_response():
    text = r"<think>3 * 6 = 18</think><answer>\boxed{18}</answer>"
    correct, parsed = verify_response(text, "18")
    assert correct is True
    assert parsed.final_answer == "18"

    wrong, _ = verify_response(text, "19")
    assert wrong is False

    unknown, parsed_again = verify_response(text, None)
    assert unknown is None
    assert parsed_again == parsed


def test_verify_response_plain_gsm8k_reply():
    correct, parsed = verify_response("The total is $1,200.", "1200")
    assert correct is True
    assert parsed.final_answer == "1200"
