"""GRPO rollouts as tensors: left-padded prompts, sampled completions, their masks and log-probs.

Where it sits: `jobs/train/grpo.py` calls `sample_completions` with the policy (HF `generate`, CPU or GPU),
scores the decoded texts through the reward service, then `completion_logps` gives the policy's and the
reference's log-probs of exactly the sampled tokens for `losses.grpo.grpo_loss`. Pure torch/transformers.

Layout of one rollout row: [pad ... pad, prompt tokens | completion tokens, pad ...]. Position ids follow
the attention mask (left padding does not shift positions), in generation and in scoring alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ids and attention mask [B, L], each row right-aligned."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        if seq:
            ids[i, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
            mask[i, width - len(seq):] = 1
    return ids, mask


def completion_mask(completions: torch.Tensor, eos_ids: set[int]) -> torch.Tensor:
    """1 on each completion's tokens up to and including its first end-of-sequence token, 0 after."""
    is_eos = torch.zeros_like(completions, dtype=torch.bool)
    for eos in eos_ids:
        is_eos |= completions == eos
    ended_before = (is_eos.long().cumsum(dim=1) - is_eos.long()) > 0
    return (~ended_before).long()


@dataclass
class Rollouts:
    """G completions for each of B prompts, row b * G + g is prompt b's g-th sample."""

    input_ids: torch.Tensor  # [B * G, P + T] prompt (left-padded) + completion
    attention_mask: torch.Tensor  # [B * G, P + T]
    prompt_width: int  # P
    completion_mask: torch.Tensor  # [B * G, T]

    @property
    def completions(self) -> torch.Tensor:
        return self.input_ids[:, self.prompt_width:]


@torch.no_grad()
def sample_completions(policy, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, group_size: int,
                       max_new_tokens: int, temperature: float, top_p: float, pad_id: int,
                       eos_ids: set[int], greedy: bool = False) -> Rollouts:  # fmt: skip
    """Sample `group_size` completions per prompt (or one greedy completion each when `greedy`)."""
    was_training = policy.training
    policy.eval()
    try:
        # top_k 0: sample from the whole (temperature-scaled) distribution, the one the loss scores.
        options = ({"do_sample": False} if greedy else
                   {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0})  # fmt: skip
        out = policy.generate(input_ids=prompt_ids, attention_mask=prompt_mask, max_new_tokens=max_new_tokens,
                              num_return_sequences=1 if greedy else group_size, pad_token_id=pad_id,
                              eos_token_id=sorted(eos_ids), **options)  # fmt: skip
    finally:
        policy.train(was_training)
    width = prompt_ids.shape[1]
    repeats = 1 if greedy else group_size
    completions = out[:, width:]  # generate adds at least one token per row
    cmask = completion_mask(completions, eos_ids)
    attention = torch.cat([prompt_mask.repeat_interleave(repeats, dim=0), cmask], dim=1)
    return Rollouts(out, attention, width, cmask)


def completion_logits(model, rollouts: Rollouts) -> torch.Tensor:
    """[B * G, T, V] logits that predict each completion token (position t of the completion is predicted at
    prompt_width + t - 1); positions past a completion's end hold garbage and are masked by the caller."""
    mask = rollouts.attention_mask
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    logits = model(input_ids=rollouts.input_ids, attention_mask=mask, position_ids=positions).logits
    return logits[:, rollouts.prompt_width - 1 : -1]


def completion_logps(model, rollouts: Rollouts, temperature: float = 1.0) -> torch.Tensor:
    """[B * G, T] log-prob of each sampled completion token under `model` (logits divided by temperature,
    the distribution the tokens were drawn from); positions past a completion's end hold garbage and are
    masked by the caller."""
    scores = completion_logits(model, rollouts).float() / temperature
    targets = rollouts.completions
    return scores.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - scores.logsumexp(dim=-1)
