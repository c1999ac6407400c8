"""The loss registry is the trainers' dispatch path: every name a config can select resolves, to the loss
the trainer should use (the chunked KD loss for the kd job's names), and names are unique."""

from __future__ import annotations

import typing

import pytest
import torch

from distill_ray.config.training import DPOConfig, KDConfig, OPDConfig, RewardModelConfig
from distill_ray.losses import LOSSES, get_loss, register_loss
from distill_ray.losses.topk_kd import chunked_topk_kd_loss, topk_kd_loss


def _choices(section, key: str) -> tuple[str, ...]:
    return typing.get_args(section.model_fields[key].annotation)


def test_every_name_a_config_can_select_is_registered():
    names = {"sft", "advdistill", "grpo", *_choices(KDConfig, "loss"), *_choices(DPOConfig, "loss"),
             *(f"rm_{o}" for o in _choices(RewardModelConfig, "objective")),
             *(f"opd_{o}" for o in _choices(OPDConfig, "loss"))}  # fmt: skip
    assert names == set(LOSSES)


def test_kd_names_are_the_chunked_loss_the_kd_job_trains_with():
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(1, 3, 4, generator=g, dtype=torch.float64)
    weight = torch.randn(5, 4, generator=g, dtype=torch.float64)
    lps, ids = torch.log_softmax(torch.randn(1, 3, 5, generator=g, dtype=torch.float64), -1).topk(2, dim=-1)
    mask = torch.ones(1, 3, dtype=torch.bool)
    values = {}
    for name in _choices(KDConfig, "loss"):
        assert get_loss(name).func is chunked_topk_kd_loss
        kd, ce = get_loss(name)(hidden, weight, ids, lps, mask, chunk_tokens=2)
        assert ce is None
        reference = topk_kd_loss(hidden @ weight.T, ids, lps, mask, kind=name)
        assert torch.allclose(kd, reference)
        values[name] = kd.item()
    assert len(set(values.values())) == len(values)  # each name computes its own divergence


def test_unknown_name_lists_known_ones_and_names_are_unique():
    with pytest.raises(KeyError, match="known losses: .*cogpo.*forward_kl"):
        get_loss("kl_forward")
    with pytest.raises(ValueError, match="already registered"):
        register_loss("sigmoid")(lambda: None)
