"""Parsing synthesis replies and filling prompt templates."""

from distill_ray.data.synthesize import parse_instruction_list, parse_pairs, parse_single_instruction
from distill_ray.prompts import DATA_PROMPTS, data_prompt, fill_template


def test_instruction_list_skips_preamble_duplicates_and_the_original():
    reply = ("Here are three new ones:\n1. What is the sum of 12 and 30?\n2) What is the sum of 12 and 30?\n"
             "- Compute 7 times 8 please.\n3. What is 5 + 5?\n4. Short")
    got = parse_instruction_list(reply, n=3, exclude="what is 5 + 5?")
    assert got == ["What is the sum of 12 and 30?", "Compute 7 times 8 please."]


def test_instruction_list_stops_at_n():
    reply = "\n".join(f"{i}. Instruction number {i}" for i in range(1, 6))
    assert len(parse_instruction_list(reply, n=2)) == 2


def test_single_instruction_drops_labels_and_refuses_fragments():
    assert parse_single_instruction('Improved instruction: "Add 3 and 4, then double it."') == "Add 3 and 4, then double it."
    assert parse_single_instruction("ok") is None


def test_pairs_are_read_from_a_json_list_inside_prose():
    reply = 'Sure:\n[{"instruction": "What is X?", "response": "X is 1."}, {"instruction": "", "response": "y"}, 3]'
    assert parse_pairs(reply, n=5) == [("What is X?", "X is 1.")]
    assert parse_pairs("no json here", n=5) == []
    assert parse_pairs("[not json]", n=5) == []


def test_fill_template_keeps_latex_braces_and_literal_double_braces():
    out = fill_template("Q: {problem} -> \\boxed{{...}} ({n})", problem="\\frac{1}{2} {x}", n=3)
    assert out == "Q: \\frac{1}{2} {x} -> \\boxed{...} (3)"


def test_config_overrides_replace_one_prompt_only():
    overrides = {"rv": "Rate {response}"}
    assert data_prompt("rv", overrides) == "Rate {response}"
    assert data_prompt("cd", overrides) == DATA_PROMPTS["cd"]
