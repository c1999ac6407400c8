"""AdvDistill: reduces to SFT on the one good response, weights, penalty and its clamp."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from distill_ray.losses.advdistill import (
    advdistill_loss,
    best_response_index,
    sequence_token_logprobs,
    weighted_token_count,
)
from distill_ray.losses.sft import response_ce_sum


def make_group(g=4, t=6, v=9, seed=0):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(g, t, v, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, v, (g, t), generator=gen)
    labels[:, :2] = -100  # prompt positions
    labels[-1, -1] = -100  # a shorter response
    return logits, labels


def test_sequence_token_logprobs_matches_cross_entropy():
    logits, labels = make_group()
    logp, mask = sequence_token_logprobs(logits, labels)
    ce = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")
    torch.testing.assert_close(logp, -ce)
    assert torch.equal(mask, labels != -100)


def test_single_response_is_plain_sft():
    logits, labels = make_group(g=1)
    logp, mask = sequence_token_logprobs(logits, labels)
    loss, metrics = advdistill_loss(logp, mask, torch.tensor([0.3]), torch.tensor([True]))
    sft = F.cross_entropy(logits[0], labels[0], ignore_index=-100)
    torch.testing.assert_close(loss, sft)
    assert metrics["max_weight"] == pytest.approx(1.0)
    assert metrics["penalty"] == 0.0


def test_tiny_tau_without_penalty_is_sft_on_the_best_response():
    logits, labels = make_group(g=4, seed=1)
    logp, mask = sequence_token_logprobs(logits, labels)
    advantages = torch.tensor([-0.5, 1.2, 0.9, -1.6])
    correct = torch.tensor([False, True, True, False])
    loss, metrics = advdistill_loss(logp, mask, advantages, correct, tau=1e-4, lam=0.0)
    best = best_response_index(advantages)
    assert best == 1
    torch.testing.assert_close(loss, F.cross_entropy(logits[best], labels[best], ignore_index=-100))
    assert metrics["max_weight"] == pytest.approx(1.0)


def test_weights_sum_to_one_and_follow_softmax():
    logits, labels = make_group(seed=2)
    logp, mask = sequence_token_logprobs(logits, labels)
    advantages = torch.tensor([0.1, -0.2, 0.7, 0.0], dtype=torch.float64)
    correct = torch.ones(4, dtype=torch.bool)
    loss, metrics = advdistill_loss(logp, mask, advantages, correct, tau=0.5, lam=0.5)
    weights = torch.softmax(advantages / 0.5, 0)
    ce = -(logp.sum(1) / mask.sum(1))
    torch.testing.assert_close(loss, (weights * ce).sum())
    assert metrics["max_weight"] == pytest.approx(weights.max().item())
    assert weights.sum().item() == pytest.approx(1.0)


def test_penalty_comes_only_from_wrong_responses():
    logits, labels = make_group(seed=3)
    logp, mask = sequence_token_logprobs(logits, labels)
    advantages = torch.zeros(4)
    correct = torch.tensor([True, False, True, False])
    loss, metrics = advdistill_loss(logp, mask, advantages, correct, lam=0.7)
    p_bar = (logp.exp() * mask).sum(1) / mask.sum(1)
    expected_penalty = -(torch.log1p(-p_bar[1]) + torch.log1p(-p_bar[3]))
    assert metrics["penalty"] == pytest.approx(expected_penalty.item())
    assert loss.item() == pytest.approx(metrics["weighted_ce"] + 0.7 * expected_penalty.item())
    # Flipping a correct response's tokens does not change the penalty.
    logp_changed = logp.clone()
    logp_changed[0] = logp[0] - 1.0
    _, changed = advdistill_loss(logp_changed, mask, advantages, correct, lam=0.7)
    assert changed["penalty"] == pytest.approx(metrics["penalty"])
    _, all_correct = advdistill_loss(logp, mask, advantages, torch.ones(4, dtype=torch.bool))
    assert all_correct["penalty"] == 0.0


def test_p_max_keeps_loss_finite_when_wrong_response_is_certain():
    logp = torch.full((2, 3), -1e-12, dtype=torch.float64, requires_grad=True)  # p_bar -> 1
    mask = torch.ones(2, 3, dtype=torch.bool)
    loss, metrics = advdistill_loss(logp, mask, torch.tensor([1.0, 0.0]), torch.tensor([True, False]), p_max=0.99)
    assert math.isfinite(loss.item())
    assert metrics["penalty"] == pytest.approx(-math.log(0.01))
    loss.backward()
    assert torch.isfinite(logp.grad).all()


def test_gradient_reaches_the_logits():
    logits, labels = make_group(seed=4)
    logits.requires_grad_(True)
    logp, mask = sequence_token_logprobs(logits, labels)
    loss, _ = advdistill_loss(logp, mask, torch.randn(4), torch.tensor([True, False, False, True]))
    loss.backward()
    assert logits.grad.abs().sum() > 0
    # Prompt positions get no gradient.
    assert logits.grad[:, :2].abs().sum() == 0


def test_bad_arguments():
    logp, mask = torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="tau"):
        advdistill_loss(logp, mask, torch.zeros(2), torch.ones(2, dtype=torch.bool), tau=0.0)
    with pytest.raises(ValueError, match="normalize"):
        advdistill_loss(logp, mask, torch.zeros(2), torch.ones(2, dtype=torch.bool), normalize="sequence")
    with pytest.raises(ValueError):
        best_response_index(torch.tensor([]))
    assert best_response_index(torch.tensor([0.5, 2.0, 2.0])) == 1


def _two_groups():
    """Two groups whose best replies differ in length (4 and 1 response tokens), as logits [2, 6, 9] + labels."""
    groups = []
    for seed, cut in ((5, 2), (6, 5)):
        logits, labels = make_group(g=2, seed=seed)
        labels[0, :cut] = -100  # the best reply: 6 - cut tokens
        groups.append((logits, labels, torch.tensor([1.0, -1.0]), torch.tensor([True, False])))
    return groups


def test_token_normalization_with_all_weight_on_the_best_reply_is_sft_per_token_mean():
    """Summed over a step's groups and divided by their weighted token count, the "token" loss at tau -> 0 and
    lam 0 is SFT's per-token mean over the best replies; the paper's "response" mean is not."""
    token_sum = units = response_sum = 0.0
    sft_sum = sft_tokens = 0.0
    for logits, labels, advantages, correct in _two_groups():
        # Aligned as the trainer does: position t's logits score label t + 1 (response_ce_sum shifts itself).
        logp, mask = sequence_token_logprobs(logits[:, :-1], labels[:, 1:])
        loss, metrics = advdistill_loss(logp, mask, advantages, correct, tau=1e-4, lam=0.0, normalize="token")
        token_sum, units = token_sum + loss, units + weighted_token_count(mask, advantages, 1e-4)
        response_sum += advdistill_loss(logp, mask, advantages, correct, tau=1e-4, lam=0.0)[0]
        best_ce = response_ce_sum(logits[:1], labels[:1])
        sft_sum, sft_tokens = sft_sum + best_ce, sft_tokens + int((labels[0, 1:] != -100).sum())
        assert metrics["weighted_ce"] == pytest.approx(float(best_ce) / int(mask[0].sum()))
    assert units == pytest.approx(sft_tokens) and sft_tokens == 4 + 1
    assert float(token_sum / units) == pytest.approx(float(sft_sum / sft_tokens), rel=1e-6)  # sft: float32
    assert abs(float(response_sum / 2) - float(sft_sum / sft_tokens)) > 1e-3


def test_token_normalization_keeps_the_penalty_share():
    """Replies of equal length L: the "token" loss is L times the "response" loss, the penalty included."""
    logits, labels = make_group(g=4, seed=7)
    labels[-1, -1] = 5  # every reply 4 tokens long
    logp, mask = sequence_token_logprobs(logits, labels)
    advantages = torch.tensor([0.4, -0.3, 1.1, -1.2], dtype=torch.float64)
    correct = torch.tensor([True, False, True, False])
    response, r_metrics = advdistill_loss(logp, mask, advantages, correct, tau=0.5, lam=0.5)
    token, t_metrics = advdistill_loss(logp, mask, advantages, correct, tau=0.5, lam=0.5, normalize="token")
    assert weighted_token_count(mask, advantages, 0.5) == pytest.approx(4.0)
    torch.testing.assert_close(token, 4.0 * response)
    assert t_metrics == pytest.approx(r_metrics)


def test_weighted_token_count_is_the_advantage_weighted_length():
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)  # lengths 3, 1, 0 -> 1
    advantages = torch.tensor([0.5, 0.0, -0.5])
    w = torch.softmax(advantages.double() / 0.5, 0)
    assert weighted_token_count(mask, advantages, 0.5) == pytest.approx(float(w[0] * 3 + w[1] + w[2]))


def test_token_normalization_weighs_each_reply_by_its_token_count():
    """Unequal lengths and spread weights: the "token" sum is sum_i w_i * (reply i's summed token losses)."""
    logits, labels = make_group(g=3, seed=8)
    labels[1, 2:4] = -100  # lengths 4, 2, 3
    logp, mask = sequence_token_logprobs(logits, labels)
    advantages = torch.tensor([0.3, 0.2, -0.6], dtype=torch.float64)
    w = torch.softmax(advantages / 0.5, 0)
    loss, metrics = advdistill_loss(logp, mask, advantages, torch.ones(3, dtype=torch.bool), normalize="token")
    expected = (w * -(logp * mask).sum(1)).sum()
    torch.testing.assert_close(loss, expected)
    assert metrics["weighted_ce"] == pytest.approx(float(expected) / weighted_token_count(mask, advantages, 0.5))
