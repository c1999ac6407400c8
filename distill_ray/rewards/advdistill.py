"""AdvDistill stage-1 scoring (METHODS.md section 3): rewards and group-relative advantages.

Flow: the teacher writes G responses per prompt -> grading.grader.grade marks each correct or
wrong -> **score_group** gives each a reward and an advantage -> **keep_group** drops prompts
with no correct response -> stage-2 training weights responses by softmax(advantage / tau).

Pure functions over plain values (text, token counts, booleans), so they are tested without
Ray or a tokenizer; the caller counts completion tokens with the teacher's tokenizer.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from distill_ray.grading.parsing import assistant_turn, extract_boxed

# A closed think block and, somewhere after it, a closed answer block. Tags are matched
# case-insensitively with inner spaces allowed, as parsing.py reads them.
_FORMAT = re.compile(
    r"<\s*think\s*>.*?<\s*/\s*think\s*>.*?<\s*answer\s*>(?P<answer>.*?)<\s*/\s*answer\s*>",
    re.DOTALL | re.IGNORECASE,
)


def format_reward(text: str, think_opened: bool = False) -> float:
    """1.0 iff `<think>...</think>` is followed by `<answer>...</answer>` holding a `\\boxed{}`.

    Only the layout is judged: an empty think block still counts, and text around the blocks
    is allowed; correctness and length are the other reward terms' business. think_opened: the chat
    template already wrote `<think>` at the start of the turn (`grading.parsing.prompt_opens_think`), so
    the completion's own layout starts inside the reasoning.
    """
    match = _FORMAT.search(assistant_turn(text, think_opened))
    if match is None:
        return 0.0
    return 1.0 if extract_boxed(match.group("answer")) is not None else 0.0


def cosine_length_reward(
    length: int,
    correct: bool,
    *,
    l_max: int = 2048,
    r0_correct: float = 2.0,
    rL_correct: float = 1.0,
    r0_wrong: float = 0.0,
    rL_wrong: float = -10.0,
) -> float:
    """Length-aware reward (Yeo et al. 2025): moves from r_start at length 0 to r_end at l_max
    along a half cosine; lengths beyond l_max score as l_max.

    Defaults follow AdvDistill's own statement of its aim (seed 001, section 3.1: the reward "penalizes
    lengthy incorrect answers while still rewarding concise correct answers"): a correct answer falls from
    2 to 1 and a wrong one from 0 to -10 as it grows, so a longer wrong answer always earns less. Yeo et
    al.'s wrong endpoints (-10 at length 0, 0 at l_max) would pay a wrong answer more the longer it runs,
    the GRPO length bias the paper set out to remove."""
    if l_max <= 0:
        raise ValueError(f"l_max must be positive, got {l_max}")
    r_start, r_end = (r0_correct, rL_correct) if correct else (r0_wrong, rL_wrong)
    clipped = min(max(length, 0), l_max)
    return r_end + 0.5 * (r_start - r_end) * (1.0 + math.cos(math.pi * clipped / l_max))


def composite_reward(format_r: float, cos_r: float, *, w_fmt: float = 1.0, w_cos: float = 2.0) -> float:
    """r = w_cos * R_cos + w_fmt * R_fmt (METHODS.md section 3)."""
    return w_cos * cos_r + w_fmt * format_r


def group_advantages(rewards: Sequence[float], eps: float = 1e-6) -> list[float]:
    """A_i = (r_i - mean) / (std + eps) within one prompt's group.

    Population std (ddof=0): the group is the whole population being ranked, not a sample of
    one, and ddof=0 is defined for every group size (GRPO-style code uses the same). A group of
    equal rewards gets all zeros, since every deviation is zero.
    """
    n = len(rewards)
    if n == 0:
        return []
    if n == 1:
        return [0.0]
    mean = sum(rewards) / n
    std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / n)
    return [(r - mean) / (std + eps) for r in rewards]


def keep_group(correct: Sequence[bool | None]) -> bool:
    """AdvDistill keeps a prompt only if at least one response is verified correct
    (None, meaning "not verifiable", does not count)."""
    return any(c is True for c in correct)


@dataclass(frozen=True)
class RewardParams:
    """Reward weights and cosine endpoints; defaults match DistillationConfig's."""

    w_cos: float = 2.0
    w_fmt: float = 1.0
    r0_correct: float = 2.0
    rL_correct: float = 1.0
    r0_wrong: float = 0.0
    rL_wrong: float = -10.0
    l_max: int = 2048
    eps: float = 1e-6

    @classmethod
    def from_config(cls, cfg: Any) -> "RewardParams":
        """From a `DistillationConfig` (or anything with the same attribute names)."""
        return cls(
            w_cos=cfg.w_cos,
            w_fmt=cfg.w_fmt,
            r0_correct=cfg.r0_correct,
            rL_correct=cfg.rL_correct,
            r0_wrong=cfg.r0_wrong,
            rL_wrong=cfg.rL_wrong,
            l_max=cfg.max_length_tokens,
            eps=cfg.advantage_eps,
        )


@dataclass
class ScoredResponse:
    """The scores of one response, in the order the caller gave the responses."""

    format_reward: float
    cosine_reward: float
    reward: float
    advantage: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def score_group(
    responses: Sequence[tuple[str, int, bool]], *, params: RewardParams = RewardParams()
) -> list[dict]:
    """Score one prompt's responses, given (text, completion_token_count, correct) each.

    Advantages are relative to this group only, so call it once per prompt, never on a batch
    mixing prompts.
    """
    scored = []
    for text, n_tokens, correct in responses:
        fmt = format_reward(text)
        cos = cosine_length_reward(
            n_tokens,
            bool(correct),
            l_max=params.l_max,
            r0_correct=params.r0_correct,
            rL_correct=params.rL_correct,
            r0_wrong=params.r0_wrong,
            rL_wrong=params.rL_wrong,
        )
        reward = composite_reward(fmt, cos, w_fmt=params.w_fmt, w_cos=params.w_cos)
        scored.append(ScoredResponse(fmt, cos, reward))
    advantages = group_advantages([s.reward for s in scored], eps=params.eps)
    for s, adv in zip(scored, advantages):
        s.advantage = adv
    return [s.to_dict() for s in scored]
