"""Reward-model losses and the loss registry."""

from __future__ import annotations

import math

import pytest
import torch

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
