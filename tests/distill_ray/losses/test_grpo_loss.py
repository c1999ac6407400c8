"""GRPO's loss (distill_ray/losses/grpo.py) and the rollout tensors it is fed (distill_ray/training/rollout.py)."""

from __future__ import annotations

import pytest
import torch

from distill_ray.losses import get_loss
from distill_ray.training.rollout import completion_mask, left_pad


def test_gradient_is_advantage_times_score_over_length():
    # At ratio 1 (one update per rollout) and beta 0: d loss / d logp_t = -A_i / len_i on real tokens.
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, -9.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    adv = torch.tensor([2.0, -1.0])
    loss, metrics = get_loss("grpo")(logp, logp.detach(), None, adv, mask, clip_epsilon=0.2, beta=0.0)
    loss.backward()
    expected = torch.tensor([[-2 / 3, -2 / 3, -2 / 3], [0.5, 0.5, 0.0]])
    assert torch.allclose(logp.grad, expected)
    assert loss.item() == pytest.approx(-2.0 + 1.0)  # sum over rollouts of -A_i (ratio 1)
    assert metrics == {"kl": 0.0, "clip_fraction": 0.0}


def test_ratio_clipping_stops_the_gradient_past_the_clip():
    old = torch.zeros(1, 2)
    logp = torch.tensor([[0.5, 0.05]], requires_grad=True)  # ratios e^0.5 = 1.65 (clipped), e^0.05 = 1.05
    loss, metrics = get_loss("grpo")(logp, old, None, torch.tensor([1.0]), torch.ones(1, 2), clip_epsilon=0.2, beta=0.0)
    loss.backward()
    assert logp.grad[0, 0] == 0.0 and logp.grad[0, 1] < 0  # a positive advantage is not pushed past 1 + eps
    assert metrics["clip_fraction"] == 0.5
    # With a negative advantage the pessimistic bound keeps the unclipped (larger) loss, so the gradient flows.
    logp.grad = None
    loss, _ = get_loss("grpo")(logp, old, None, torch.tensor([-1.0]), torch.ones(1, 2), clip_epsilon=0.2, beta=0.0)
    loss.backward()
    assert logp.grad[0, 0] > 0


def test_kl_penalty_k3():
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    ref = torch.tensor([[-1.0, -1.0]])
    loss, metrics = get_loss("grpo")(logp, logp.detach(), ref, torch.zeros(1), torch.ones(1, 2), beta=0.5)
    kl2 = torch.exp(torch.tensor(1.0)) - 1.0 - 1.0  # token 2: delta = ref - logp = 1
    assert metrics["kl"] == pytest.approx(float(kl2) / 2)
    assert loss.item() == pytest.approx(0.5 * float(kl2) / 2)
    same, m = get_loss("grpo")(ref.clone(), ref, ref, torch.zeros(1), torch.ones(1, 2), beta=0.5)
    assert same.item() == 0.0 and m["kl"] == 0.0
    with pytest.raises(ValueError, match="reference"):
        get_loss("grpo")(logp, logp.detach(), None, torch.zeros(1), torch.ones(1, 2), beta=0.1)


def test_completion_mask_keeps_first_eos_only():
    completions = torch.tensor([[5, 6, 2, 0, 0], [2, 7, 7, 2, 0], [5, 5, 5, 5, 5]])
    assert completion_mask(completions, {2}).tolist() == [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]]
    assert completion_mask(torch.tensor([[4, 9, 3]]), {9, 3}).tolist() == [[1, 1, 0]]


def test_left_pad_right_aligns():
    ids, mask = left_pad([[1, 2, 3], [4]], pad_id=0)
    assert ids.tolist() == [[1, 2, 3], [0, 0, 4]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_completion_logps_match_unpadded_scoring():
    """Left padding with mask-based positions scores a completion exactly as the unpadded sequence does."""
    from distill_ray.models.loading import load_causal_lm, resolve_model
    from distill_ray.training.rollout import Rollouts, completion_logps

    model = load_causal_lm(resolve_model("tiny:smollm2")).eval()
    prompts, completion = [[11, 12, 13, 14], [21, 22]], [31, 32, 33]
    ids, mask = left_pad(prompts, pad_id=0)
    full = torch.cat([ids, torch.tensor([completion] * 2)], dim=1)
    attention = torch.cat([mask, torch.ones(2, 3, dtype=torch.long)], dim=1)
    rollouts = Rollouts(full, attention, ids.shape[1], torch.ones(2, 3, dtype=torch.long))
    with torch.no_grad():
        batched = completion_logps(model, rollouts)
        for row, prompt in enumerate(prompts):
            alone = torch.tensor([prompt + completion])
            logits = model(input_ids=alone).logits[0, len(prompt) - 1 : -1].float()
            expected = logits.log_softmax(-1).gather(-1, torch.tensor(completion)[:, None]).squeeze(-1)
            assert torch.allclose(batched[row], expected, atol=1e-4)
