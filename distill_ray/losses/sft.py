"""SFT's loss: next-token cross-entropy over the response tokens (the sft job, AdvDistill's sft_best baseline).

Returns a SUM over the micro-batch's response tokens; the trainer divides it by the optimizer step's
response-token count (the normalisation note in `jobs/train/loop.py`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from distill_ray.losses.registry import register_loss


@register_loss("sft")
def response_ce_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy of logits [B, T, V] against labels [B, T] (-100 = not a response token).

    Position t's logits score token t + 1, so the last position and the first label drop out; prompt
    and padding labels are -100 and add nothing. Computed in float32 whatever the logits' dtype.
    """
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), reduction="sum")
