"""Logprob entries: what the teacher says about the token at one position, for generated and given tokens alike.

Where it sits: `engine.GenerationEngine.generate` fills one per generated token, `scoring.score_sequences` one per
given token after the first; `openai_protocol` and `openai_completions` put them on the wire. Plain data, no torch.

Values are log-probabilities of the raw model distribution (log_softmax of the unscaled logits: no temperature, no
top-p). `bytes` are exact token bytes (`token_bytes.TokenBytes`); `token` names the whole token (`TokenBytes.name`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


class TokenAlternative(NamedTuple):
    """One of the most likely tokens at a position: its name, log-probability, exact bytes and id."""

    token: str
    logprob: float
    bytes: bytes
    token_id: int | None = None


@dataclass
class TokenLogprob:
    """The token at one position: name, log-probability, most likely alternatives (descending) and its bytes.

    For a generated token `bytes` is what it put into the reply text (cut where the reply ends, see the engine);
    for a scored (given) token it is the token's exact bytes. `rank` is set by scoring: the token's place in the
    distribution counted as vLLM counts it, the number of tokens at least as likely, itself included (1 = the most
    likely when there is no tie); generation leaves it None.
    """

    token: str
    logprob: float
    top: list[TokenAlternative]
    bytes: bytes
    token_id: int | None = None
    rank: int | None = None
