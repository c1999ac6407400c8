"""The loss library: pure torch functions, looked up by trainers under the name their config gives.

Flow: a trainer's objective calls `get_loss(name)` with its config's value -> the function takes plain
tensors and returns a loss (the preference, reward-model, AdvDistill and GRPO losses also return a dict of
float metrics). Nothing here knows about Ray, models or data loading.

Registered names (the config key that selects each, and the trainer that dispatches through it):
  - "sft": `sft.response_ce_sum` (sft job, and advdistill's `sft_best` baseline).
  - "forward_kl", "reverse_kl", "jsd" (`training.kd.loss`): `topk_kd.chunked_topk_kd_loss` with `kind` fixed,
    the memory-bounded KD from hidden states that the kd job trains with. The unchunked
    `topk_kd.topk_kd_loss` is its reference implementation (tests compare the two), not a training path.
  - "advdistill" (`training.advdistill.mode`): `advdistill.advdistill_loss`.
  - "sigmoid", "cogpo" (`training.dpo.loss`): `preference.dpo_loss`, `preference.cogpo_loss` (per-pair beta).
  - "rm_pointwise", "rm_pairwise" (`training.rm.objective`): `reward_model.pointwise_regression_loss`
    (judge-score regression), `reward_model.bradley_terry_loss`.
  - "grpo": `grpo.grpo_loss` (clipped policy gradient + k3 KL to the reference).
  - "opd_reverse_kl", "opd_forward_kl", "opd_jsd" (`training.opd.loss`): `opd.reverse_kl_pg_loss` (the sampled
    reverse KL as a per-token advantage), `opd.topk_divergence_loss` (GKD over the teacher's top-k).
Adding a loss is one decorated function in one module (imported below); a duplicate name is a ValueError.
"""

from __future__ import annotations

from distill_ray.losses import advdistill, grpo, opd, preference, reward_model, sft, topk_kd
from distill_ray.losses.registry import LOSSES, get_loss, register_loss

__all__ = ["LOSSES", "register_loss", "get_loss", "advdistill", "grpo", "opd", "preference", "reward_model", "sft",
           "topk_kd"]
