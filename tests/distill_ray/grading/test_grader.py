"""The grader against the kinds of output real reasoning models write: one row per case, each with the kind of
fault it stands for and where such inputs were reported (issue 14 distilled them from public bug reports)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distill_ray.grading.grader import Grade, grade

# (reply, reference, finish_reason, correct, kind / source)
CASES = [
    # 0. the grader keeps what math-verify's own extraction and comparison get right
    (r"$\dfrac{1}{3} $", "1/3", None, True, "0 fraction in math mode; math-verify corpus"),
    (r"... Final Answer: The final answer is $14{,}916$. I hope it is correct.", "14916", None, True,
     "0 'final answer is' phrase with {,} thousands; MATH minerva-style replies"),
    (r"\boxed{1},\boxed{2},\boxed{3}", "{1,2,3}", None, True, "0 several boxes form one answer; math-verify issues"),
    (r"Therefore $x \geq 5$ is the solution.", "x >= 5", None, True, "0 a relation; math-verify corpus"),
    (r"The solution set is $[2, 5)$.", "[2,5)", None, True, "0 an interval"),
    (r"So the answer is $\begin{pmatrix} 1 \\ 2 \end{pmatrix}$.", r"\begin{pmatrix}1\\2\end{pmatrix}", None, True,
     "0 a matrix"),
    (r"The day is \boxed{\text{Monday}}.", r"\text{Monday}", None, True, "0 a text answer"),
    (r"\boxed{3}", r"We add the two. The answer is $\boxed{3}$.", None, True,
     "0 a worked solution as the reference (MATH `solution`)"),
    # 1. cheap pre-checks never say equal when the values differ
    (r"\boxed{2000001}", "2000000", None, False, "1 relative tolerance on exact integers; verl reports"),
    (r"\boxed{27}", r"2 \text{ and } 7", None, False, "1 \\text{} removal joins two values; open-r1 reports"),
    (r"\boxed{0.52}", "0.5", None, False, "1 two decimals compare exactly"),
    (r"\boxed{0.333}", r"\frac{1}{3}", None, True, "1 a decimal approximation within its stated precision"),
    (r"\boxed{0.33}", r"\frac{1}{3}", None, True, "1 ... to two decimals"),
    (r"\boxed{0.3}", r"\frac{1}{3}", None, True, "1 ... to one decimal"),
    (r"\boxed{0.34}", r"\frac{1}{3}", None, False, "1 ... but not a wrong rounding"),
    # 2. escaped currency
    (r"\boxed{18}", r"\$18", None, True, "2 escaped dollar in the reference; MATH / GSM8K-style data"),
    (r"The total is \$1,250.", "1250", None, True, "2 escaped dollar and thousands in the reply"),
    # 3. a looser library tolerance never overrules an exact 'different'
    (r"\boxed{\frac{1}{3^{60}}}", r"\frac{1}{3^{61}}", None, False, "3 math-verify's float tolerance"),
    (r"\boxed{\frac{2}{6}}", r"\frac{1}{3}", None, True, "3 equal exact values still match"),
    (r"\boxed{\sqrt{8}}", r"2\sqrt{2}", None, True, "3 equal surds"),
    (r"\boxed{9^{9^{9}}}", "1", None, False, "3 a value beyond the float range is not inf == inf; found in item 13"),
    (r"\boxed{10^{10^{8}}}", "10^{10^{8}}", None, True, "3 ... and still equals itself"),
    (r"\boxed{\sin(10^{10^{6}})}", "1", None, False, "3 exact evaluation that would take minutes is cut off"),
    # 4. where the reasoning ends
    ("<think>Maybe it is \\boxed{9}. Recheck: 4*5 is 20, not 9.</think>\nThe result is 20.", "20", None, True,
     "4 a draft box inside the think block; R1-style replies"),
    ("<think>I get 9</think><answer>The answer is \\boxed{20}</answer>", "20", None, True, "4 the answer block wins"),
    ("<THINK>think</THINK>\n<Answer> 17 apples </Answer>", "17", None, True, "4 an answer block without a box"),
    (r"<think>try \boxed{3}</think> <answer>So it is \boxed{4}.</answer>", "4", None, True, "4 the box in the answer"),
    ("Okay, 4*5=20, so \\boxed{20}.\n</think>\n\nThe answer is \\boxed{21}.", "20", None, False,
     "4 a template that opened <think> in the prompt: only the text after </think> counts"),
    # 5. truncated replies have no final answer
    (r"Therefore the area is \boxed{6\sqrt{", "6", None, False, "5 an unclosed box; vLLM max_tokens cuts"),
    ("<think>The area is 6. Let me double-check", "6", None, False, "5 an unclosed think block"),
    ("The area is 6, and so", "6", "length", False, "5 finish_reason length"),
    ("<answer>The area is \\boxed{6}", "6", None, False, "5 an unclosed answer block"),
    # 6. plain-text fallback
    ("#### 36\nHope these 2 steps help.", "36", None, True, "6 the GSM8K marker; TRL / open-instruct reports"),
    ("She has \u22125 degrees left.", "-5", None, True, "6 the Unicode minus sign"),
    ("The population is 12\u2009500.", "12500", None, True, "6 a thin-space thousands separator"),
    ("The answer is 7 apples", "7", None, True, "6 a plain reply"),
]


@pytest.mark.parametrize(("reply", "reference", "finish_reason", "correct", "kind"), CASES,
                         ids=[c[4].split(";")[0] for c in CASES])  # fmt: skip
def test_grade(reply, reference, finish_reason, correct, kind):
    result = grade(reply, reference, finish_reason=finish_reason)
    assert result.correct is correct, (kind, result)


@pytest.mark.parametrize(("reply", "finish_reason", "reason"), [
    (r"so \boxed{6\sqrt{", None, "unclosed \\boxed"),
    ("<think>still thinking", None, "unclosed think block"),
    ("<answer>6", None, "unclosed answer block"),
    ("anything at all 6", "length", "cut at the length limit (finish_reason: length)"),
    ("no digits here", None, "no final answer found"),
])  # fmt: skip
def test_a_reply_without_a_final_answer_says_why(reply, finish_reason, reason):
    assert grade(reply, "6", finish_reason=finish_reason) == Grade(False, None, reason)


def test_no_reference_means_no_verdict_but_the_answer_is_still_read():
    assert grade(r"so \boxed{12}", None) == Grade(None, "12", None)
    assert grade(r"so \boxed{12}", "  ").correct is None


RESTATED = [json.loads(line) for line in (Path(__file__).parent / "data" / "restated_question_replies.jsonl").open()]


@pytest.mark.parametrize("row", RESTATED, ids=[r["problem"] for r in RESTATED])
def test_a_reply_whose_last_expression_restates_the_question_is_wrong(row):
    """Teacher replies the old grader kept as verified CoTs in two quickstart runs (9 of 99 kept rows): each ends
    on the question's own expression, which math-verify evaluated to the reference."""
    result = grade(row["response"], row["reference"], finish_reason=row["finish_reason"])
    assert result.correct is False, result
    expression = row["problem"].removeprefix("What is ").rstrip("?")
    assert result.final_answer.strip().rstrip(".").strip() == expression


@pytest.mark.parametrize(("reply", "reference", "correct"), [
    ("So 25 + 18 = 43.", "43", True),  # the value after the restated question still counts
    ("The answer is 25 + 18.", "43", False),
    (r"The answer is $25 \times 18$.", "450", False),
    (r"\boxed{25 + 18}", "43", False),
    (r"\boxed{2^{10}}", "1024", True),  # a power is a value, not a restated computation
    (r"\boxed{3 \times 10^{5}}", "300000", True),  # ... as is scientific notation
    (r"\boxed{(1/2)}", r"\frac{1}{2}", True),  # ... and one fraction, in any brackets or spelling
    (r"\boxed{1/(2)}", "0.5", True),
    ("The answer is 12.0/4.", "3", True),
    (r"\boxed{\frac{12}{4}}", "3", True),
    (r"\boxed{1 + \frac{1}{2}}", r"\frac{3}{2}", False),  # a sum of values is a computation
    ("This is the result for $3^2 + 4$.", "13", False),
    (r"So it is $\left[5 \times 11\right]$.", "55", False),
    (r"\boxed{\frac{5 \cdot 11}{1}}", "55", False),
    ("This is the result for 5 * 11.", r"55 \text{ cm}", False),  # a reference with a unit is still a number
    ("This is the result for 5 * 11.", r"55^\circ", False),
    (r"\boxed{2^2 \cdot 3}", r"2^2 \cdot 3", True),  # a reference written as a computation (a factorisation)
    (r"so 5 * 11 is 18. $18 = 5 \times 11$", "55", False),  # a relation ending on the computation
    (r"Check: $11 = 11 + 1$", "12", False),  # an on-policy student's answer to 11 * 1, 300-problem eval
    (r"$x = 3 + 4$", "7", False),
    ("Total = 72\nCheck: 72 = 48 + 24", "72", False),  # the price: a check written value first ends on a computation
    ("$x = 7$", "7", True),
])  # fmt: skip
def test_a_computation_is_not_its_value_but_one_number_in_any_form_is(reply, reference, correct):
    assert grade(reply, reference).correct is correct
