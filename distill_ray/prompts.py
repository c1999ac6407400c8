"""Every prompt distill-ray sends to a model, in one place; each is overridable from the config.

Generation and eval use the system prompt and user templates; the data stages use `DATA_PROMPTS`.

The default system prompt asks for the reasoning format that the format reward and the parser expect:
`<think>...</think>` then `<answer>...\\boxed{...}</answer>`.
"""

from __future__ import annotations

DEFAULT_SYSTEM_PROMPT = (
    "Solve the problem step by step. Write your reasoning inside <think> and </think>, then give the "
    "result inside <answer> and </answer>, with the final value written as \\boxed{...}."
)


def system_prompt(override: str | None) -> str:
    """The system prompt in force: the config's `inference.system_prompt`, else ours."""
    return DEFAULT_SYSTEM_PROMPT if override is None else override


def render_user(problem: str, template: str = "{problem}") -> str:
    """The user turn: `template` with `{problem}` replaced (plain replace, so braces in math survive)."""
    return template.replace("{problem}", problem)


def chat_messages(problem: str, system: str | None, template: str = "{problem}") -> list[dict[str, str]]:
    """Messages for one problem; an empty system prompt ("") means no system message."""
    sys_text = system_prompt(system)
    messages = [{"role": "system", "content": sys_text}] if sys_text else []
    messages.append({"role": "user", "content": render_user(problem, template)})
    return messages


# Per-benchmark user templates for evaluation; `{problem}` is replaced by the problem text. A
# benchmark's `user_template` in the config overrides its entry here.
BENCHMARK_TEMPLATES = {
    "gsm8k": "{problem}\nGive the final number as \\boxed{...}.",
    "math500": "{problem}\nGive the final answer in simplest form as \\boxed{...}.",
    "aime": "{problem}\nThe answer is an integer from 0 to 999; give it as \\boxed{...}.",
    "arithmetic": "{problem}",
}


# ----------------------------------------------------------------------------- data-stage prompts
# Judge, rewrite and synthesis prompts (the judge/rewrite/synthesize stages). Placeholders in braces
# are filled with `fill_template`; `processing.prompts.<name>` in the config replaces any of them.

DATA_PROMPTS = {
    "difficulty": (
        "You grade worked solutions for a student model that is much smaller than the model that wrote "
        "them. Read the problem and the solution, then rate how hard the solution's reasoning is to "
        "follow and reproduce.\n- easy: short, few steps, little to learn from.\n- medium: several clear "
        "steps a capable student can follow.\n- hard: long or intricate reasoning, advanced ideas.\n\n"
        "Problem:\n{problem}\n\nSolution:\n{response}\n\nReply with one word: easy, medium or hard."
    ),
    "rv": (
        "Rate the reasoning verbosity of the solution below on an integer scale from 0 to 9.\n"
        "0-1: minimal, the answer with almost no reasoning. 2-3: concise, only the necessary steps "
        "explained. 4-5: moderate, steps explained in some detail. 6-7: extensive, each step justified "
        "at length. 8-9: exhaustive, explores alternatives and double-checks repeatedly.\n\n"
        "Problem:\n{problem}\n\nSolution:\n{response}\n\nReply with the integer only."
    ),
    "cd": (
        "Rate the cognitive difficulty of the reasoning in the solution below on an integer scale from 0 "
        "to 9.\n0-1: recalling a fact or one trivial operation. 2-3: multi-step arithmetic or simple "
        "enumeration. 4-5: an insight expected early in undergraduate studies. 6-7: advanced "
        "undergraduate techniques. 8-9: graduate-level abstraction.\n\n"
        "Problem:\n{problem}\n\nSolution:\n{response}\n\nReply with the integer only."
    ),
    "rewrite_easy": (
        "The solution below is correct but skips steps a small student model needs. Rewrite it so every "
        "step is stated explicitly, keeping the same method and the same final answer. Put the reasoning "
        "inside <think> and </think>, then the result inside <answer> and </answer> as \\boxed{{...}}.\n\n"
        "Problem:\n{problem}\n\nSolution:\n{response}"
    ),
    "rewrite_hard": (
        "The solution below is correct but long or convoluted for a small student model. Rewrite it as "
        "the shortest clear chain of steps that still justifies the answer, dropping detours and "
        "repeated checks, with the same final answer. Put the reasoning inside <think> and </think>, then "
        "the result inside <answer> and </answer> as \\boxed{{...}}.\n\nProblem:\n{problem}\n\n"
        "Solution:\n{response}"
    ),
    "expand_instruction": (
        "Here is an instruction from a training set:\n{instruction}\n\nWrite {n} new instructions on the "
        "same topic and of similar difficulty, each different from the original and from each other. "
        "Output one instruction per line, numbered 1. 2. 3. and nothing else."
    ),
    "refine_instruction": (
        "Improve the instruction below so it is clear, self-contained and unambiguous, keeping its intent "
        "and difficulty. Output only the improved instruction.\n\nInstruction:\n{instruction}"
    ),
    "extract_pairs": (
        "Read the text below and write up to {n} question-answer pairs that can be answered from it alone. "
        'Output a JSON list of objects with keys "instruction" and "response", and nothing else.\n\n'
        "Text:\n{text}"
    ),
    "cot_long_to_short": (
        "Shorten the reasoning below: keep only the steps needed to reach the answer, in order, and the "
        "same final answer. Put the reasoning inside <think> and </think>, then the result inside "
        "<answer> and </answer>.\n\nProblem:\n{problem}\n\nReasoning:\n{response}"
    ),
    "cot_short_to_long": (
        "Expand the reasoning below: explain each step and why it follows, check the result, and keep the "
        "same final answer. Put the reasoning inside <think> and </think>, then the result inside "
        "<answer> and </answer>.\n\nProblem:\n{problem}\n\nReasoning:\n{response}"
    ),
}


def fill_template(template: str, **fields: object) -> str:
    """Replace `{name}` for the given names only; `{{`/`}}` become literal braces. Any other braces
    (LaTeX in problems) pass through untouched, unlike str.format."""
    out = template.replace("{{", "\x00").replace("}}", "\x01")  # literal braces, kept out of the way
    for name, value in fields.items():
        out = out.replace("{" + name + "}", str(value).replace("\x00", "").replace("\x01", ""))
    return out.replace("\x00", "{").replace("\x01", "}")


def data_prompt(name: str, overrides: dict[str, str] | None = None) -> str:
    """The template in force for `name`: the config's override, else ours."""
    if overrides and name in overrides:
        return overrides[name]
    return DATA_PROMPTS[name]
