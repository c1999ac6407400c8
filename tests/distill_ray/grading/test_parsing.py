"""Response parsing and reference extraction (distill_ray.grading.parsing)."""

import pytest

from distill_ray.grading.parsing import ParsedResponse, extract_boxed, last_number, parse_response, reference_answer


@pytest.mark.parametrize(
    "text, expected",
    [
        (r"so \boxed{42}.", "42"),
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"\boxed{\sqrt{\frac{a}{b^{2}}}}", r"\sqrt{\frac{a}{b^{2}}}"),
        (r"first \boxed{1} then \boxed{2}", "2"),
        (r"\fbox{7}", "7"),
        (r"\boxed {  5 }", "5"),
        (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),
        ("no box here", None),
        (r"\boxed{\frac{1}{2}", None),  # truncated: braces never close
        (r"\boxed{1} and a cut-off \boxed{\frac{3", None),
        ("", None),
    ],
)
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("it costs $1,234.50 in total", "1234.50"),
        ("from 3 to -7", "-7"),
        ("10-5 = 5", "5"),
        ("values 2, then 3.25.", "3.25"),
        ("no digits", None),
    ],
)
def test_last_number(text, expected):
    assert last_number(text) == expected


def test_full_format_prefers_box_inside_answer():
    text = r"<think>try \boxed{3} first</think> <answer>So it is \boxed{4}.</answer> later \boxed{9}"
    parsed = parse_response(text)
    assert parsed.think == r"try \boxed{3} first"
    assert parsed.answer_text == r"So it is \boxed{4}."
    assert parsed.boxed == "4"
    assert parsed.has_think and parsed.has_answer


def test_box_anywhere_when_answer_has_none():
    parsed = parse_response(r"<think>x</think><answer>twelve</answer> \boxed{12}")
    assert parsed.answer_text == "twelve" and parsed.boxed == "12"


def test_answer_text_used_without_any_box():
    parsed = parse_response("<THINK>think</THINK>\n<Answer> 17 apples </Answer>")
    assert parsed.think == "think"
    assert parsed.answer_text == "17 apples"
    assert parsed.boxed is None


def test_plain_text_has_no_parts():
    parsed = parse_response("She pays 3 + 4 = 7 dollars, so the total is $1,050.")
    assert not parsed.has_think and not parsed.has_answer
    assert parsed.think is None and parsed.answer_text is None


def test_unclosed_think_runs_to_answer_or_end():
    truncated = parse_response("<think>  still reasoning about 5 and 6")
    assert truncated.think == "still reasoning about 5 and 6"
    assert truncated.has_think and not truncated.has_answer

    no_close = parse_response(r"<think>reasoning <answer>\boxed{8}</answer>")
    assert no_close.think == "reasoning"


def test_missing_open_think_tag_from_chat_template():
    parsed = parse_response(r"reasoning here</think><answer>\boxed{2}</answer>")
    assert parsed.think == "reasoning here"


def test_empty_response():
    parsed = parse_response("")
    assert parsed == ParsedResponse(None, None, None, False, False)


def test_to_dict_round_trip():
    parsed = parse_response(r"<think>a</think><answer>\boxed{1}</answer>")
    d = parsed.to_dict()
    assert d == {
        "think": "a",
        "answer_text": r"\boxed{1}",
        "boxed": "1",
        "has_think": True,
        "has_answer": True,
    }
    assert ParsedResponse(**d) == parsed


@pytest.mark.parametrize(
    "raw, fmt, expected",
    [
        ("Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 eggs.\n#### 18", "gsm8k", "18"),
        ("step #### 1 more\n#### 1,000", "gsm8k", "1000"),
        ("  42 ", "gsm8k", "42"),
        (r" \frac{\pi}{2} ", "plain", r"\frac{\pi}{2}"),
        (7, "plain", "7"),
        (2.5, "plain", "2.5"),
        (None, "plain", None),
        ("   ", "plain", None),
        ("####  ", "gsm8k", None),
    ],
)
def test_reference_answer(raw, fmt, expected):
    assert reference_answer(raw, fmt) == expected


def test_reference_answer_rejects_unknown_format():
    with pytest.raises(ValueError):
        reference_answer("1", "math")
