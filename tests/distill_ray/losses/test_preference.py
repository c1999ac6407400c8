"""DPO and CogPO: the log 2 fixed point, per-pair beta, margin monotonicity, metrics."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from distill_ray.losses.preference import cogpo_loss, dpo_loss, sequence_logps


def random_logps(b=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [-10.0 * torch.rand(b, generator=g, dtype=torch.float64) for _ in range(4)]


def test_policy_equal_to_reference_gives_log_two():
    chosen, rejected, _, _ = random_logps()
    loss, metrics = dpo_loss(chosen, rejected, chosen.clone(), rejected.clone(), beta=0.3)
    assert loss.item() == pytest.approx(math.log(2.0))
    assert metrics["reward_margin"] == 0.0
    assert metrics["reward_accuracy"] == 0.0  # ties are not counted as correct


def test_by_hand_value_and_label_smoothing():
    pc, pr, rc, rr = (torch.tensor([v], dtype=torch.float64) for v in (-1.0, -3.0, -2.0, -2.5))
    h = (pc - rc) - (pr - rr)  # 1 - (-0.5) = 1.5
    loss, metrics = dpo_loss(pc, pr, rc, rr, beta=0.5)
    assert loss.item() == pytest.approx(-F.logsigmoid(0.5 * h).item())
    assert metrics["chosen_reward"] == pytest.approx(0.5)
    assert metrics["rejected_reward"] == pytest.approx(-0.25)
    smooth, _ = dpo_loss(pc, pr, rc, rr, beta=0.5, label_smoothing=0.1)
    expected = 0.9 * -F.logsigmoid(0.5 * h) + 0.1 * -F.logsigmoid(-0.5 * h)
    assert smooth.item() == pytest.approx(expected.item())


def test_larger_margin_lowers_loss():
    pc, pr, rc, rr = random_logps(seed=1)
    base, _ = dpo_loss(pc, pr, rc, rr)
    better, _ = dpo_loss(pc + 1.0, pr, rc, rr)
    worse, _ = dpo_loss(pc, pr + 1.0, rc, rr)
    assert better < base < worse


def test_reward_accuracy_counts_pairs_with_higher_chosen_reward():
    pc = torch.tensor([-1.0, -5.0, -2.0, -3.0])
    pr = torch.tensor([-2.0, -1.0, -4.0, -3.0])
    zeros = torch.zeros(4)
    _, metrics = dpo_loss(pc, pr, zeros, zeros)
    assert metrics["reward_accuracy"] == pytest.approx(0.5)  # pairs 0 and 2


def test_cogpo_with_equal_betas_is_dpo_and_betas_matter():
    pc, pr, rc, rr = random_logps(seed=2)
    dpo, dpo_metrics = dpo_loss(pc, pr, rc, rr, beta=0.2)
    cogpo, cogpo_metrics = cogpo_loss(pc, pr, rc, rr, betas=torch.full((6,), 0.2, dtype=torch.float64))
    torch.testing.assert_close(cogpo, dpo)
    assert cogpo_metrics == pytest.approx(dpo_metrics)
    betas = torch.tensor([0.1, 0.5, 0.2, 0.2, 1.0, 0.05], dtype=torch.float64)
    mixed, _ = cogpo_loss(pc, pr, rc, rr, betas=betas)
    h = (pc - rc) - (pr - rr)
    torch.testing.assert_close(mixed, (-F.logsigmoid(betas * h)).mean())
    with pytest.raises(ValueError, match="one beta per pair"):
        cogpo_loss(pc, pr, rc, rr, betas=torch.ones(3))
    with pytest.raises(ValueError, match="> 0"):
        cogpo_loss(pc, pr, rc, rr, betas=torch.zeros(6))


def test_sequence_logps_sums_response_tokens_and_carries_gradient():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 5, 7, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 7, (2, 5), generator=g)
    labels[:, 0] = -100
    got = sequence_logps(logits, labels)
    ce = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")
    torch.testing.assert_close(got, -ce.sum(1))
    loss, _ = dpo_loss(got[:1], got[1:], torch.zeros(1), torch.zeros(1))
    loss.backward()
    assert logits.grad.abs().sum() > 0
