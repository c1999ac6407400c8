"""Drawing one token per row, each row from its own `torch.Generator`, in one batched operation (pure torch).

The engine gives every sequence its own generator so that a seeded sequence produces the same tokens whatever
shares its batch. `torch.multinomial` takes one generator per call, so drawing with it means one call per row;
on a CPU each call over a 49,152-token vocabulary (SmolLM2's) draws 49,152 exponential numbers from the row's
Mersenne Twister, about 1.2 ms: 18.6 ms for 16 rows, a sixth of a decode step of SmolLM2-135M at batch 16 on 2
cores.

This module draws the same distribution for the whole batch at once. It is the exponential race that
`torch.multinomial` itself runs for one sample (token = argmax_i p_i / E_i with E_i ~ Exp(1) independent, the
Gumbel-max trick in another form: P(token = i) = p_i / sum(p)), with E_i made from a counter-based hash: the
row's generator gives one 32-bit key per step, and E_i = -log(u_i) with u_i the hash of (key, i). So the noise of
token i depends only on the row's seed, the step and i, never on the batch, and the race is as insensitive as
multinomial's to the float noise that batching puts in the logits (the winner changes only when two candidates
tie to that noise). An inverse-CDF draw (one uniform, a cumulative sum, a search) is faster still but is not:
it moves with the rounding of a 49,152-term sum, and a seeded row then drew other tokens in another batch.
vLLM's Triton `gumbel_sample` keys its noise the same way, by (seed + position, token index). No library offers
this draw for torch tensors on a CPU, hence this module.

The hash is Chris Wellons' `lowbias32` integer finaliser over a Weyl sequence (key + (i + 1) x 0x9E3779B9, the
golden-ratio increment), in int32 arithmetic that wraps; its top 23 bits make u_i (`unit_interval`), which keeps
every u_i exactly representable in float32 and strictly inside (0, 1): a u_i of 1.0 would make E_i = 0 and let a
token of any probability, even 0, win.
"""

from __future__ import annotations

import torch

_WEYL, _MUL1, _MUL2 = (c - (1 << 32) if c >= 1 << 31 else c for c in (0x9E3779B9, 0x7FEB352D, 0x846CA68B))
_offsets: dict[tuple[int, str], torch.Tensor] = {}
ROW_CHUNK = 16  # rows hashed at once (see draw_tokens)


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int32 values (torch's `>>` is arithmetic: it copies the sign bit)."""
    return (x >> bits) & ((1 << (32 - bits)) - 1)


def hashed_uniforms(keys: torch.Tensor, width: int) -> torch.Tensor:
    """[R, width] float32 numbers in [2^-24, 1 - 2^-24]: entry (r, i) is a hash of (keys[r], i) alone.

    `keys`: [R] int32, one per row (a fresh one per draw). Uniform on a grid of 2^23 values; entries of one row, and
    of rows with different keys, behave as independent draws.
    """
    device = keys.device
    offsets = _offsets.get((width, str(device)))
    if offsets is None:
        offsets = _offsets[(width, str(device))] = torch.arange(1, width + 1, dtype=torch.int32, device=device) * _WEYL
    x = keys.to(torch.int32)[:, None] + offsets
    x = (x ^ _shift_right(x, 16)) * _MUL1
    x = (x ^ _shift_right(x, 15)) * _MUL2
    x = x ^ _shift_right(x, 16)
    return unit_interval(_shift_right(x, 9))


def unit_interval(bits: torch.Tensor) -> torch.Tensor:
    """Integers in [0, 2^23) -> float32 (bits + 0.5) / 2^23, in [2^-24, 1 - 2^-24]: exact in float32 (24
    significant bits at most), so never 0 or 1. With 24 bits, (2^24 - 1 + 0.5) would round up to 2^24, i.e. 1.0."""
    return (bits.to(torch.float32) + 0.5) * (1.0 / (1 << 23))


def race(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """The exponential race: per row, argmax_i probs[i] / -log(uniforms[i]).

    `probs`: [R, V] non-negative, each row with a positive total (normalising is not needed); `uniforms`: [R, V]
    in (0, 1). Returns [R] int64 token ids, token i with probability probs[i] / sum(probs) when the uniforms are
    independent; a token of probability 0 is never returned. Raises ValueError when the shapes differ.
    """
    if probs.dim() != 2 or uniforms.shape != probs.shape:
        raise ValueError(f"probs and uniforms must both be [R, V]; got {tuple(probs.shape)}, {tuple(uniforms.shape)}")
    return (probs / -torch.log(uniforms)).argmax(dim=-1)


def draw_tokens(probs: torch.Tensor, generators: list[torch.Generator]) -> list[int]:
    """One token per row of `probs` ([R, V], the sampling distribution after temperature and top-p), row r keyed
    by one draw from `generators[r]`: a row's tokens depend only on its generator's seed and its own
    probabilities. Returns R ints. Raises ValueError when there is not one generator per row, or when a row has a
    NaN or infinite entry or no positive one (as torch.multinomial does).
    """
    if len(generators) != probs.shape[0]:
        raise ValueError(f"{probs.shape[0]} rows of probabilities but {len(generators)} generators")
    if not generators:
        return []
    if not bool(torch.isfinite(probs).all()) or bool((probs.amax(dim=-1) <= 0).any()):
        raise ValueError("every row of probabilities must be finite with a positive entry")
    keys = torch.cat([torch.randint(-(1 << 31), 1 << 31, (1,), generator=g, device=probs.device,
                                    dtype=torch.int32) for g in generators])  # fmt: skip
    # In chunks of rows: the hash's [rows, V] temporaries then stay in the CPU's cache (64 rows at once took 35 ms
    # on the 2-core box, four chunks of 16 took 12 ms).
    picks = [race(probs[i : i + ROW_CHUNK], hashed_uniforms(keys[i : i + ROW_CHUNK], probs.shape[-1]))
             for i in range(0, len(generators), ROW_CHUNK)]  # fmt: skip
    return torch.cat(picks).tolist()
