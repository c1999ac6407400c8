"""Batched per-row-generator token draws (distill_ray.models.sampling): the right distribution, zero-probability
tokens never drawn, a row's draws independent of the rows beside it and as stable under float noise as
torch.multinomial."""

import pytest
import torch

from distill_ray.models import sampling
from distill_ray.models.sampling import draw_tokens, hashed_uniforms, race, unit_interval


def test_draws_follow_the_distribution_and_skip_zero_probability_tokens():
    probs = torch.tensor([[0.1, 0.0, 0.6, 0.3, 0.0], [0.0, 0.25, 0.25, 0.0, 0.5]])
    generators = [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)]
    draws = torch.tensor([draw_tokens(probs, generators) for _ in range(20000)])  # [20000, 2]
    for row in range(2):
        freq = torch.bincount(draws[:, row], minlength=5).float() / len(draws)
        assert torch.allclose(freq, probs[row], atol=0.012), (row, freq)
        assert freq[probs[row] == 0].sum() == 0


def test_unnormalised_rows_are_drawn_from_the_normalised_distribution():
    probs = torch.tensor([[2.0, 0.0, 6.0]])  # a total of 8, as after top-p filtering without renormalising
    g = torch.Generator().manual_seed(3)
    draws = torch.tensor([draw_tokens(probs, [g])[0] for _ in range(8000)])
    assert abs((draws == 2).float().mean().item() - 0.75) < 0.015 and not (draws == 1).any()


def test_hashed_uniforms_are_uniform_and_independent_of_the_batch():
    keys = torch.tensor([0, 1, -7, 123456789], dtype=torch.int32)
    u = hashed_uniforms(keys, 50000)
    assert u.shape == (4, 50000) and float(u.min()) > 0 and float(u.max()) < 1
    for row in u:  # each decile holds a tenth, and neighbouring tokens are uncorrelated
        counts = torch.histc(row, bins=10, min=0, max=1) / len(row)
        assert torch.allclose(counts, torch.full((10,), 0.1), atol=0.006), counts
        assert abs(torch.corrcoef(torch.stack([row[:-1], row[1:]]))[0, 1].item()) < 0.02
    assert abs(torch.corrcoef(u[:2])[0, 1].item()) < 0.02  # consecutive keys give unrelated rows
    assert torch.equal(hashed_uniforms(keys[2:3], 50000)[0], u[2])  # a row's numbers do not depend on its mates


def test_uniforms_are_never_0_or_1_so_a_zero_probability_token_never_wins():
    grid = unit_interval(torch.arange(1 << 23, dtype=torch.int32))
    assert float(grid.min()) > 0 and float(grid.max()) < 1 and grid.unique().numel() == 1 << 23
    # key -1748 at SmolLM2's vocabulary hit the top 24-bit value, which rounded to 1.0 in float32 (E = 0 there),
    # and the race then drew token 20832 whatever its probability
    u = hashed_uniforms(torch.tensor([-1748], dtype=torch.int32), 49152)
    assert float(u.max()) < 1
    probs = torch.full((1, 49152), 1.0 / 49151)
    probs[0, 20832] = 0.0
    assert race(probs, u).item() != 20832


def test_chunking_the_rows_does_not_change_the_draws(monkeypatch):
    torch.manual_seed(2)
    probs = torch.softmax(torch.randn(40, 500) * 2, dim=-1)

    def draws():
        return draw_tokens(probs, [torch.Generator().manual_seed(r) for r in range(40)])

    chunked = draws()  # 16 + 16 + 8 rows
    monkeypatch.setattr(sampling, "ROW_CHUNK", 1)
    assert draws() == chunked
    monkeypatch.setattr(sampling, "ROW_CHUNK", 64)
    assert draws() == chunked


def test_a_rows_draws_do_not_depend_on_its_batch_mates():
    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(6, 1000) * 3, dim=-1)

    def stream(rows, seeds, steps=50):
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        return [draw_tokens(probs[rows], generators) for _ in range(steps)]

    alone = [step[0] for step in stream([3], [42])]
    in_a_batch = [step[2] for step in stream([0, 5, 3, 1], [7, 8, 42, 9])]
    assert alone == in_a_batch
    assert len(set(alone)) > 10  # it did draw, not repeat one token


def test_float_noise_in_the_probabilities_rarely_changes_the_draw():
    # Batching perturbs logits at the float-rounding level; the race's winner moves only on a near tie, unlike an
    # inverse-CDF draw, which moves whenever its uniform lands within the accumulated rounding of a boundary.
    torch.manual_seed(1)
    logits = torch.randn(64, 49152)
    noisy = logits + torch.randn_like(logits) * 1e-3  # an inverse-CDF draw kept 90% here
    same = 0
    for seed in range(20):
        draws = [draw_tokens(torch.softmax(x, -1), [torch.Generator().manual_seed(seed * 64 + r) for r in range(64)])
                 for x in (logits, noisy)]
        same += sum(a == b for a, b in zip(*draws))
    assert same >= 0.99 * 20 * 64, same


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="2 rows of probabilities but 1 generators"):
        draw_tokens(torch.ones(2, 3) / 3, [torch.Generator()])
    with pytest.raises(ValueError, match="must both be"):
        race(torch.ones(2, 3), torch.rand(2, 4))
    assert draw_tokens(torch.ones(0, 3), []) == []
    for bad in (torch.tensor([[0.5, float("nan")]]), torch.tensor([[0.0, 0.0]]), torch.tensor([[float("inf"), 1.0]])):
        with pytest.raises(ValueError, match="finite with a positive entry"):
            draw_tokens(bad, [torch.Generator()])
