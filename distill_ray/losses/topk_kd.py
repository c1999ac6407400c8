"""White-box KD against a teacher's stored top-k distribution (METHODS.md section 2).

Flow: the logits extractor runs the teacher once over the SFT data and stores, per response
position, the ids of its k most likely tokens and their log-probs under the teacher's full
softmax -> the KD trainer reads those shards next to the token ids -> **this module** turns the
student's logits (or its final hidden states plus the LM-head weight) into a divergence from the
stored teacher distribution -> `kd_mix` blends it with the ordinary cross-entropy by `kd_ratio`.

Divergences (`kind`), all summed over the outcomes of one position:
  - "forward_kl": KL(teacher || student), mass-covering.
  - "reverse_kl": KL(student || teacher), mode-seeking.
  - "jsd": generalised Jensen-Shannon with weight `beta` on the teacher:
    beta * KL(t || m) + (1 - beta) * KL(s || m), m = beta * t + (1 - beta) * s.
    beta = 0.5 is the symmetric JSD; 0 < beta < 1 is required (at the ends the mixture equals one
    of the two distributions and the value is identically 0).

The teacher only left k of its V probabilities behind, so the rest of its mass (the "tail",
1 - sum of the k stored probs) needs a declared treatment (`tail`):
  - "bucket" (default): both distributions are coarsened to k + 1 outcomes, the k stored ids plus
    one "everything else" bucket. The student's bucket is the sum of its probabilities outside the
    k ids, added up directly (no 1 - sum cancellation). The result is the exact divergence
    between the coarsened distributions: a lower bound on the full-vocabulary divergence (data
    processing inequality) that equals it when k = V.
  - "renormalize": the teacher's k probs are rescaled to sum to 1 and the student is restricted
    to the same k ids and renormalised over them. Cheap (no full-vocab log-sum-exp) but blind to
    how much mass the student puts outside the k ids.
  - "ignore": teacher probs are used as stored (they need not sum to 1) against the student's
    full-softmax log-probs on the k ids: sum_k p_t (log p_t - log p_s). This is the classic
    "top-k only" KD term; it is not a divergence (it can be negative) and only the forward
    direction has a meaning, so reverse / jsd with "ignore" raise ValueError.

`temperature` divides the student logits only; the teacher log-probs were stored at whatever
temperature they were extracted with. No T^2 factor is applied: a caller that wants the
Hinton-style gradient scale multiplies the loss itself.

Normalisation: every loss here is (sum over masked positions) / num_tokens, with num_tokens
defaulting to the mask's count. A trainer passes the token count of the whole optimizer step, so
micro-batch losses add up to the full-batch loss (gradient-accumulation invariance) and the KL is
divided by the token count exactly once.

Memory: `chunked_topk_kd_loss` never builds [B, T, V] logits. It keeps only the masked positions,
computes logits `chunk_tokens` rows at a time and checkpoints each chunk, so forward and backward
each hold one chunk's logits at a time. Within a chunk, `_StudentLogProbs` derives everything the
loss needs from the logits while keeping a single [chunk, V] buffer for the backward (about two
[chunk, V] fp32 tensors at the peak; one more when temperature != 1 and labels are given).
`topk_kd_loss` is the plain version for callers that already have logits; `dense_kl_loss` is the
full-vocabulary reference used by tests and the memory benchmark.
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch.utils.checkpoint import checkpoint

from distill_ray.losses.registry import register_loss

KINDS = ("forward_kl", "reverse_kl", "jsd")
TAILS = ("bucket", "renormalize", "ignore")

# Log-probs of the tail buckets are floored here. A tail can be exactly empty (k = V, or a teacher
# whose stored probs round to a sum >= 1); log 0 = -inf would turn 0 * (-inf) into NaN in both the
# value and the gradient. A probability below exp(-100) (about 4e-44) adds nothing measurable to
# a divergence, so the floor changes no loss value that matters.
_LOG_FLOOR = -100.0


def _check_options(kind: str, beta: float, tail: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if tail not in TAILS:
        raise ValueError(f"tail must be one of {TAILS}, got {tail!r}")
    if tail == "ignore" and kind != "forward_kl":
        raise ValueError(f"tail='ignore' is only defined for kind='forward_kl', got kind={kind!r}")
    if kind == "jsd" and not 0.0 < float(beta) < 1.0:
        raise ValueError(f"jsd needs 0 < beta < 1, got beta={beta}")


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # At least fp32 (bf16/fp16 logits lose the small differences a KL is made of); fp64 stays fp64.
    return torch.promote_types(dtype, torch.float32)


def _token_count(num_tokens: int | torch.Tensor | None, mask: torch.Tensor) -> int | torch.Tensor:
    if num_tokens is None:
        # An all-False mask gives a loss of 0 (an empty sum), not 0 / 0.
        return mask.sum().clamp_min(1)
    if isinstance(num_tokens, int) and num_tokens <= 0:
        raise ValueError(f"num_tokens must be positive, got {num_tokens}")
    return num_tokens


def _kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) over the last dim; both arguments are finite log-probs."""
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def _divergence(log_t: torch.Tensor, log_s: torch.Tensor, kind: str, beta: float) -> torch.Tensor:
    """Per-position divergence between teacher and student log-probs over the last dim."""
    if kind == "forward_kl":
        return _kl(log_t, log_s)
    if kind == "reverse_kl":
        return _kl(log_s, log_t)
    log_m = torch.logaddexp(log_t + math.log(beta), log_s + math.log1p(-beta))
    return beta * _kl(log_t, log_m) + (1.0 - beta) * _kl(log_s, log_m)


class _StudentLogProbs(torch.autograd.Function):
    """Student log-probs at the k ids, of all other ids together, and at one target id, from logits [N, V].

    The values are log_softmax + gather and a log-sum-exp over the complement, but plain autograd
    would keep several [N, V] tensors per call (the logits, a masked copy, one gradient per piece).
    This keeps one, the probabilities outside the k ids, and builds the gradient in one more.
    """

    @staticmethod
    def forward(ctx, logits, ids, targets):
        z = logits.to(_compute_dtype(logits.dtype))
        lse = z.logsumexp(-1, keepdim=True)
        log_top = z.gather(-1, ids) - lse
        log_target = (z.gather(-1, targets[:, None]) - lse).squeeze(-1)
        # The tail is a sum of the complement's own probabilities, not 1 - sum(top): no
        # cancellation, so a tiny tail keeps its relative precision.
        probs = torch.sub(z, lse).exp_().scatter_(-1, ids, 0.0)
        rest = probs.sum(-1, keepdim=True)
        ctx.save_for_backward(probs, rest, log_top, ids, targets)
        ctx.logits_dtype = logits.dtype
        return log_top, rest.log(), log_target

    @staticmethod
    def backward(ctx, g_top, g_rest, g_target):
        probs, rest, log_top, ids, targets = ctx.saved_tensors
        # Each output is (log-sum-exp over some ids) - lse: it pushes its own ids up in proportion
        # to their share of that subset and every logit down by the softmax times its gradient.
        total = g_top.sum(-1, keepdim=True) + g_rest + g_target[:, None]
        per_rest = torch.where(rest > 0, g_rest / rest, 0.0)  # an empty tail has no ids to push
        grad = probs * (per_rest - total)
        # probs is 0 at the k ids; set their softmax term (scatter_, so a repeated id counts once),
        # then add each output's own pull (scatter_add_, so a repeated id collects every copy).
        grad.scatter_(-1, ids, -total * log_top.exp())
        grad.scatter_add_(-1, ids, g_top)
        grad.scatter_add_(-1, targets[:, None], g_target[:, None])
        return grad.to(ctx.logits_dtype), None, None


def student_logprobs(
    logits: torch.Tensor, ids: torch.Tensor, targets: torch.Tensor | None = None, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(log p_s at ids [N, k], log p_s of every other id [N, 1], log p_s(target) [N] or None) from logits [N, V].

    `temperature` divides the logits for the first two; the target log-prob (the cross-entropy
    term) is always at temperature 1. Log-probs are computed in at least fp32.
    """
    if temperature == 1.0:
        log_top, log_rest, log_target = _StudentLogProbs.apply(logits, ids, ids[:, 0] if targets is None else targets)
        return log_top, log_rest, None if targets is None else log_target
    log_top, log_rest, _ = _StudentLogProbs.apply(logits / temperature, ids, ids[:, 0])
    if targets is None:
        return log_top, log_rest, None
    return log_top, log_rest, _StudentLogProbs.apply(logits, ids[:, :0], targets)[2]


def _teacher_divergence(
    log_top: torch.Tensor, log_rest: torch.Tensor, teacher: torch.Tensor, kind: str, beta: float, tail: str
) -> torch.Tensor:
    """Per-position divergence [N] between the student's (log_top, log_rest) and the stored teacher top-k."""
    teacher = teacher.to(log_top.dtype).clamp_min(_LOG_FLOOR)
    if tail == "ignore":  # forward direction only (checked by _check_options)
        return (teacher.exp() * (teacher - log_top)).sum(-1)
    if tail == "renormalize":
        log_s = log_top - log_top.logsumexp(-1, keepdim=True)
        log_t = teacher - teacher.logsumexp(-1, keepdim=True)
        return _divergence(log_t, log_s, kind, beta)
    # The stored probs may sum to slightly over 1 after fp16 rounding: such a tail is empty.
    teacher_rest_mass = (-torch.expm1(teacher.logsumexp(-1, keepdim=True))).clamp_min(0.0)
    log_t = torch.cat([teacher, teacher_rest_mass.log().clamp_min(_LOG_FLOOR)], dim=-1)
    log_s = torch.cat([log_top, log_rest.clamp_min(_LOG_FLOOR)], dim=-1)
    return _divergence(log_t, log_s, kind, beta)


def topk_kd_loss(
    student_logits: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_logprobs: torch.Tensor,
    mask: torch.Tensor,
    kind: str = "forward_kl",
    beta: float = 0.5,
    tail: str = "bucket",
    temperature: float = 1.0,
    num_tokens: int | torch.Tensor | None = None,
) -> torch.Tensor:
    """Divergence between the student and the stored teacher top-k, summed over masked positions / num_tokens.

    student_logits [B, T, V] (any float dtype), topk_ids [B, T, k], topk_logprobs [B, T, k] (the
    teacher's full-softmax log-probs of those ids), mask [B, T] bool. Positions are aligned by the
    caller. Only masked positions are read, so padding may hold any ids.
    """
    _check_options(kind, beta, tail)
    mask = mask.bool()
    log_top, log_rest, _ = student_logprobs(student_logits[mask], topk_ids[mask].long(), temperature=temperature)
    per_token = _teacher_divergence(log_top, log_rest, topk_logprobs[mask], kind, beta, tail)
    return per_token.sum() / _token_count(num_tokens, mask)


def _chunk_sums(
    hidden: torch.Tensor, weight: torch.Tensor, ids: torch.Tensor, teacher: torch.Tensor,
    kd_rows: torch.Tensor, targets: torch.Tensor, ce_rows: torch.Tensor,
    kind: str, beta: float, tail: str, temperature: float, with_ce: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of KD terms, sum of CE terms) for one chunk of rows; the only place logits exist."""
    logits = hidden @ weight.T
    log_top, log_rest, log_target = student_logprobs(logits, ids, targets if with_ce else None, temperature)
    kd_sum = torch.where(kd_rows, _teacher_divergence(log_top, log_rest, teacher, kind, beta, tail), 0.0).sum()
    ce_sum = torch.where(ce_rows, -log_target, 0.0).sum() if with_ce else kd_sum.new_zeros(())
    return kd_sum, ce_sum


def chunked_topk_kd_loss(
    hidden: torch.Tensor,
    lm_head_weight: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_logprobs: torch.Tensor,
    mask: torch.Tensor,
    labels: torch.Tensor | None = None,
    kind: str = "forward_kl",
    beta: float = 0.5,
    tail: str = "bucket",
    temperature: float = 1.0,
    chunk_tokens: int = 1024,
    num_tokens: int | torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(kd_loss, ce_loss) from final hidden states [B, T, H] and the LM head [V, H], chunk by chunk.

    kd_loss equals `topk_kd_loss(hidden @ lm_head_weight.T, ...)`. ce_loss is the token
    cross-entropy against `labels` [B, T] (-100 = ignore), or None without labels; it is divided
    by `num_tokens` too when given (the step's response-token count), else by its own label count,
    which makes it equal to F.cross_entropy's mean. Peak memory is O(chunk_tokens x V), not B x T x V.
    """
    _check_options(kind, beta, tail)
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    mask = mask.bool()
    ce_mask = (labels != -100) if labels is not None else torch.zeros_like(mask)
    rows = mask | ce_mask
    kd_rows, ce_rows = mask[rows], ce_mask[rows]
    # Rows kept only for CE carry no teacher data: give them harmless finite stand-ins (their KD
    # term is dropped by kd_rows) so NaN padding cannot leak into the sums or the gradients.
    ids = torch.where(kd_rows[:, None], topk_ids[rows].long(), 0)
    teacher = torch.where(kd_rows[:, None], topk_logprobs[rows], 0.0)
    targets = torch.where(ce_rows, labels[rows], 0) if labels is not None else ids[:, 0]
    h = hidden[rows]
    sums = partial(_chunk_sums, kind=kind, beta=beta, tail=tail, temperature=temperature,
                   with_ce=labels is not None)
    # Start from a zero tied to `hidden`, so a micro-batch with no selected rows still yields a
    # loss that backward() accepts (an exact 0: h has no elements to sum then).
    kd_sum = ce_sum = h.sum().to(_compute_dtype(h.dtype)) * 0.0 if h.shape[0] == 0 else 0.0
    for start in range(0, h.shape[0], chunk_tokens):
        part = slice(start, start + chunk_tokens)
        # Checkpointing drops the chunk's logits after the forward and rebuilds them in the
        # backward, so at most one chunk's [chunk_tokens, V] tensors are alive at any time.
        kd_part, ce_part = checkpoint(
            sums, h[part], lm_head_weight, ids[part], teacher[part], kd_rows[part], targets[part],
            ce_rows[part], use_reentrant=False,
        )
        kd_sum, ce_sum = kd_sum + kd_part, ce_sum + ce_part
    kd_loss = kd_sum / _token_count(num_tokens, mask)
    ce_loss = ce_sum / _token_count(num_tokens, ce_mask) if labels is not None else None
    return kd_loss, ce_loss


def dense_kl_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor,
    kind: str = "forward_kl",
    beta: float = 0.5,
    num_tokens: int | torch.Tensor | None = None,
) -> torch.Tensor:
    """Full-vocabulary divergence between student and teacher logits [B, T, V]: the reference.

    Same kinds, beta convention and normalisation as `topk_kd_loss`; teacher logits may be fp16.
    """
    _check_options(kind, beta, "bucket")
    mask = mask.bool()
    dtype = _compute_dtype(student_logits.dtype)
    log_s = torch.log_softmax(student_logits.to(dtype), dim=-1)
    log_t = torch.log_softmax(teacher_logits.to(dtype), dim=-1)
    per_token = _divergence(log_t, log_s, kind, beta)
    return torch.where(mask, per_token, 0.0).sum() / _token_count(num_tokens, mask)


def kd_mix(kd_loss: torch.Tensor, ce_loss: torch.Tensor | None, kd_ratio: float) -> torch.Tensor:
    """kd_ratio * kd + (1 - kd_ratio) * ce; kd_ratio = 1 needs no CE (ce_loss may be None)."""
    if not 0.0 <= kd_ratio <= 1.0:
        raise ValueError(f"kd_ratio must be in [0, 1], got {kd_ratio}")
    if kd_ratio == 1.0:
        return kd_loss
    if ce_loss is None:
        raise ValueError(f"kd_ratio={kd_ratio} < 1 mixes in cross-entropy, but ce_loss is None (pass labels)")
    return kd_ratio * kd_loss + (1.0 - kd_ratio) * ce_loss


# The kd job's `training.kd.loss` names one of these: the chunked loss it trains with, `kind` fixed.
for _kind in KINDS:
    register_loss(_kind)(partial(chunked_topk_kd_loss, kind=_kind))
