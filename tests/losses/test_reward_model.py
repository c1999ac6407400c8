"""Reward-model losses and the loss registry."""

from __future__ import annotations

import math

import pytest
import torch

from distill_ray.losses import LOSSES, get_loss, register_loss
from distill_ray.losses.reward_model import (
    bradley_terry_loss,
    normalize_scores,
    pointwise_regression_loss,
    reward_from_prediction,
)


def test_normalize_maps_judge_range_to_unit_interval():
    got = normalize_scores(torch.tensor([0, 9, 3, 12, -1]))
    torch.testing.assert_close(got, torch.tensor([0.0, 1.0, 3 / 9, 1.0, 0.0]))
    with pytest.raises(ValueError):
        normalize_scores(torch.tensor([1]), low=5, high=5)


def test_pointwise_loss_is_zero_at_the_target_and_grows_away():
    targets = torch.tensor([0.0, 2.0, 4.5, 7.0, 9.0])
    inside = normalize_scores(targets).clamp(1e-6, 1 - 1e-6)
    predictions = torch.logit(inside.double())  # sigmoid(prediction) == normalised target
    loss, metrics = pointwise_regression_loss(predictions, targets)
    assert loss.item() == pytest.approx(0.0, abs=1e-10)
    assert metrics["mae"] == pytest.approx(0.0, abs=1e-6)
    off, off_metrics = pointwise_regression_loss(predictions + 1.0, targets)
    assert off.item() > 1e-3
    assert off_metrics["mae"] > 0


def test_pointwise_by_hand_and_gradient():
    predictions = torch.tensor([0.0, 0.0], requires_grad=True)  # sigmoid -> 0.5
    loss, metrics = pointwise_regression_loss(predictions, torch.tensor([9.0, 0.0]))
    assert loss.item() == pytest.approx(0.25)
    assert metrics["mae"] == pytest.approx(0.5)
    loss.backward()
    assert predictions.grad[0] < 0 < predictions.grad[1]


def test_reward_from_prediction_is_in_unit_interval():
    got = reward_from_prediction(torch.tensor([-50.0, 0.0, 50.0]))
    torch.testing.assert_close(got, torch.tensor([0.0, 0.5, 1.0]))


def test_bradley_terry_by_hand_margin_and_accuracy():
    chosen = torch.tensor([1.0, 0.0, 2.0, -1.0])
    rejected = torch.tensor([0.0, 0.5, 2.0, -3.0])
    loss, metrics = bradley_terry_loss(chosen, rejected)
    expected = sum(math.log1p(math.exp(-d)) for d in (1.0, -0.5, 0.0, 2.0)) / 4
    assert loss.item() == pytest.approx(expected)
    assert metrics["accuracy"] == pytest.approx(0.5)  # pairs 0 and 3; the tie does not count
    assert metrics["margin"] == pytest.approx((1.0 - 0.5 + 0.0 + 2.0) / 4)
    wide, _ = bradley_terry_loss(chosen + 1.0, rejected)
    assert wide < loss
    demanding, _ = bradley_terry_loss(chosen, rejected, margin=1.0)
    assert demanding > loss


def test_every_registered_name_resolves():
    expected = {"forward_kl", "reverse_kl", "jsd", "advdistill", "dpo", "cogpo", "rm_pointwise", "rm_pairwise"}
    assert expected <= set(LOSSES)
    for name in expected:
        assert callable(get_loss(name))
    assert get_loss("dpo").__name__ == "dpo_loss"
    assert get_loss("reverse_kl").keywords == {"kind": "reverse_kl"}


def test_top_k_names_compute_their_own_divergence():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 3, 5, generator=g, dtype=torch.float64)
    lps, ids = torch.log_softmax(torch.randn(1, 3, 5, generator=g, dtype=torch.float64), -1).topk(2, dim=-1)
    mask = torch.ones(1, 3, dtype=torch.bool)
    values = {name: get_loss(name)(logits, ids, lps, mask).item() for name in ("forward_kl", "reverse_kl", "jsd")}
    assert len(set(values.values())) == 3


def test_unknown_name_lists_known_ones_and_names_are_unique():
    with pytest.raises(KeyError, match="known losses: .*dpo.*forward_kl"):
        get_loss("kl_forward")
    with pytest.raises(ValueError, match="already registered"):
        register_loss("dpo")(lambda: None)
