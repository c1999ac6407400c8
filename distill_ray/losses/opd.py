"""On-policy distillation losses: the student samples, the teacher scores every sampled token (issue 18).

Sources: GKD (Agarwal et al. 2024, "On-Policy Distillation of Language Models: Learning from Self-Generated
Mistakes", ICLR, section 3: divergences on student-generated sequences) and the sampled reverse-KL form of
the 2025 public on-policy distillation reports (a per-token advantage equal to minus the sampled estimate of
the reverse KL, optimised with the clipped policy gradient of PPO / GRPO).

`reverse_kl` (registered "opd_reverse_kl"): per completion token t of rollout i, with x_t the sampled token,

    A_t     = log p_teacher(x_t | x_<t) - log p_old(x_t | x_<t)          (detached; no gradient)
    ratio_t = exp(logp_t - old_logp_t)
    pg_t    = -min(ratio_t * A_t, clip(ratio_t, 1 - eps, 1 + eps) * A_t)
    loss_i  = mean over i's completion tokens of pg_t

Over samples x ~ p_student, E[A_t * grad log p(x_t)] = -grad KL(p_student || p_teacher) (the score-function
identity, with E[grad log p] = 0), so descending this loss lowers the reverse KL; A_t = 0 everywhere when the
teacher is the student, and then loss and gradient are exactly 0. An optional sequence advantage from task
rewards (the reward service, as in `grpo`) is added to every token's A_t with weight `reward_weight`.

`forward_kl` / `jsd` (registered "opd_forward_kl", "opd_jsd"): the divergence at every sampled position
between the teacher's top-k (plus the tail bucket) and the student's full softmax, as the `kd` job computes
it (`topk_kd`), averaged over each rollout's tokens. With k = vocabulary size the bucket form is the full
divergence.

Every loss returns the SUM over rollouts of each rollout's token mean (the trainer divides by the step's
rollout count, as for `grpo`), and a dict of float metrics, each the MEAN over rollouts of each rollout's token
mean: averaged the way the loss is, so the trainer's rollout-weighted average of them over micro-batches and
workers is the same number however a step is split (a token mean per micro-batch would not be). Pure torch.
"""

from __future__ import annotations

from functools import partial

import torch

from distill_ray.losses.registry import register_loss
from distill_ray.losses.topk_kd import _check_options, _teacher_divergence, student_logprobs


def _per_rollout_mean(per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[N] token means of per_token [N, T] over mask [N, T] (a rollout with no tokens contributes 0)."""
    return (per_token * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


@register_loss("opd_reverse_kl")
def reverse_kl_pg_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    teacher_logp: torch.Tensor,
    mask: torch.Tensor,
    clip_epsilon: float = 0.2,
    seq_advantages: torch.Tensor | None = None,
    reward_weight: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """logp, old_logp, teacher_logp, mask: [N, T] over the sampled completion tokens (mask 1 on real tokens);
    seq_advantages: [N] task-reward advantages or None. Returns (sum over rollouts of token-mean loss,
    {"reverse_kl": sampled k1 estimate of KL(student || teacher) per token, "clip_fraction": share of tokens whose
    ratio is clipped}, both means over rollouts of per-rollout token means).
    Raises ValueError for reward_weight > 0 without seq_advantages."""
    mask = mask.to(logp.dtype)
    advantage = (teacher_logp - old_logp).detach().to(logp.dtype)
    if reward_weight > 0:
        if seq_advantages is None:
            raise ValueError("reward_weight > 0 needs the rollouts' task-reward advantages")
        advantage = advantage + reward_weight * seq_advantages.to(logp.dtype).unsqueeze(1)
    ratio = torch.exp(logp - old_logp.detach())
    clipped = torch.clamp(ratio, 1.0 - clip_epsilon, 1.0 + clip_epsilon)
    per_token = -torch.minimum(ratio * advantage, clipped * advantage)
    with torch.no_grad():
        metrics = {
            "reverse_kl": float(_per_rollout_mean(old_logp.detach() - teacher_logp, mask).mean()),
            "clip_fraction": float(_per_rollout_mean(((ratio - 1.0).abs() > clip_epsilon).to(mask.dtype), mask).mean()),
        }
    return _per_rollout_mean(per_token, mask).sum(), metrics


def topk_divergence_loss(
    student_logits: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_logprobs: torch.Tensor,
    mask: torch.Tensor,
    kind: str = "forward_kl",
    beta: float = 0.5,
) -> tuple[torch.Tensor, dict[str, float]]:
    """student_logits [N, T, V] at the positions that predict the sampled tokens; topk_ids / topk_logprobs
    [N, T, k] the teacher's k most likely ids there and their log-probs; mask [N, T]. Returns (sum over
    rollouts of the token-mean divergence with the tail bucket, {"topk_mass": the teacher's top-k mass, mean over
    rollouts of per-rollout token means}).
    Raises ValueError for an unknown kind or a beta outside (0, 1) with jsd."""
    _check_options(kind, beta, "bucket")
    keep = mask.bool()
    log_top, log_rest, _ = student_logprobs(student_logits[keep], topk_ids[keep].long())
    divergence = _teacher_divergence(log_top, log_rest, topk_logprobs[keep], kind, beta, "bucket")
    per_token = torch.zeros(mask.shape, dtype=divergence.dtype, device=divergence.device)
    per_token[keep] = divergence
    with torch.no_grad():
        mass = _per_rollout_mean(topk_logprobs.float().exp().sum(-1), mask.float()).mean()
    return _per_rollout_mean(per_token, mask.to(per_token.dtype)).sum(), {"topk_mass": float(mass)}


for _kind in ("forward_kl", "jsd"):
    register_loss(f"opd_{_kind}")(partial(topk_divergence_loss, kind=_kind))
