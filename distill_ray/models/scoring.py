"""Scoring given token sequences: the teacher's log-probability of every token after the first, with top-k.

Where it sits: `GenerationEngine.score` validates its input and calls `score_sequences` here; the Serve teacher
answers `/v1/completions` with `echo` / `prompt_logprobs` through it, and on-policy distillation can call the engine
in-process. Pure torch: the model is any causal LM whose forward takes input ids, an attention mask and positions.

How: the sequences are right-padded into one batch and run through the model once (no KV cache, no sampling). The
logits at position t - 1 give the distribution of token t, so token t's entry is log_softmax(logits[t - 1]) at its
id: the raw distribution, temperature 1, no top-p (what distillation compares against). Token 0 has no context and
gets None, as OpenAI's and vLLM's prompt logprobs do. A batch whose logits would pass `LOGITS_BUDGET` elements is
run as several forward passes of consecutive sequences, so a long batch cannot allocate a (batch x length x vocab)
tensor of any size; each sequence's numbers do not depend on how the batch was split (padding is masked out).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from distill_ray.models.token_logprobs import TokenAlternative, TokenLogprob

# At most this many logit elements per forward pass: 2^28 is 1 GiB in float32 (5,461 positions of a 49,152-token
# vocabulary, 1,766 of Qwen's 152,064).
LOGITS_BUDGET = 2**28


def score_sequences(
    model,
    sequences: Sequence[Sequence[int]],
    top_logprobs: int,
    *,
    pad_token_id: int,
    token_bytes,
    logits_budget: int = LOGITS_BUDGET,
) -> list[list[TokenLogprob | None]]:
    """Per sequence (B of them, each of length L_b >= 1), L_b entries: None, then token t's TokenLogprob for t >= 1.

    `top_logprobs` (k >= 0) alternatives per entry, most likely first; `token_bytes` is the tokenizer's
    `TokenBytes` (names and exact bytes). The caller validates ids and lengths and holds `torch.inference_mode()`.
    """
    device = next(model.parameters()).device
    vocab = int(model.config.vocab_size)
    scored: list[list[TokenLogprob | None]] = []
    for chunk in forward_chunks([len(s) for s in sequences], vocab, logits_budget):
        rows = [list(map(int, sequences[i])) for i in chunk]
        logits = _forward(model, rows, pad_token_id, device)
        for i, ids in enumerate(rows):
            scored.append(_row_entries(logits[i, : len(ids) - 1], ids, top_logprobs, token_bytes))
        del logits
    return scored


def forward_chunks(lengths: Sequence[int], vocab: int, budget: int) -> list[range]:
    """Consecutive index ranges of `lengths` whose padded logits (rows x longest x vocab) stay within `budget`
    elements; a single sequence over budget still gets a range of its own."""
    chunks, start, width = [], 0, 0
    for i, length in enumerate(lengths):
        wider = max(width, length)
        if i > start and (i - start + 1) * wider * vocab > budget:
            chunks.append(range(start, i))
            start, wider = i, length
        width = wider
    if lengths:
        chunks.append(range(start, len(lengths)))
    return chunks


def _forward(model, rows: list[list[int]], pad_token_id: int, device: torch.device) -> torch.Tensor:
    """Logits (rows x longest x vocab) of right-padded `rows`; pad positions are masked and their logits unused."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    positions = torch.arange(width, dtype=torch.long).repeat(len(rows), 1)
    out = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                use_cache=False)  # fmt: skip
    return out.logits


def _row_entries(logits: torch.Tensor, ids: list[int], k: int, token_bytes) -> list[TokenLogprob | None]:
    """Entries for one sequence from its logits at positions 0 .. L-2 ((L-1) x vocab), which predict tokens 1 .. L-1."""
    if len(ids) < 2:
        return [None] * len(ids)
    logp = torch.log_softmax(logits.float(), dim=-1)
    targets = torch.tensor(ids[1:], device=logp.device).unsqueeze(-1)
    picked = logp.gather(-1, targets)
    # vLLM's rank: how many tokens are at least as likely as the given one (itself included).
    ranks = (logp >= picked).sum(dim=-1).tolist()
    top_values, top_ids = logp.topk(k, dim=-1) if k else (logp[:, :0], logp[:, :0].long())
    top_values, top_ids, picked = top_values.tolist(), top_ids.tolist(), picked.squeeze(-1).tolist()
    name, raw = token_bytes.name, token_bytes.raw
    entries: list[TokenLogprob | None] = [None]
    for t, token in enumerate(ids[1:]):
        top = [TokenAlternative(name(a), v, raw(a), a) for a, v in zip(top_ids[t], top_values[t])]
        entries.append(TokenLogprob(name(token), picked[t], top, raw(token), token_id=token, rank=int(ranks[t])))
    return entries
