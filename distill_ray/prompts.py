"""Every prompt distill-ray sends to a model, in one place; each is overridable from the config.

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
