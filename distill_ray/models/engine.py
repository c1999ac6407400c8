"""Static-batch transformers generation engine (pure torch + transformers, no Ray).

Where it sits: the Ray Serve teacher deployment wraps one `GenerationEngine` per replica behind its
OpenAI-compatible API, and in-process benchmarks call it directly. Model folders come from
`distill_ray.models.loading.resolve_model`; this module only loads and runs them.

One `generate` call is one static batch: prompts are left-padded, prefilled once, then decoded a
token at a step with the KV cache. Every row carries its own sampling parameters and its own
`torch.Generator`, so a seeded row produces the same tokens whatever else shares its batch.
One `score` call scores given sequences (the teacher's log-probability of each of their tokens) in one forward
pass, with no sampling; the math is in `distill_ray.models.scoring`.

Behaviour choices (the serving layer relies on these):
- Logprobs (`GenResult.logprobs`) are taken from the raw model distribution, log_softmax of the
  unscaled logits, before temperature and top-p. They describe the teacher's distribution (what
  distillation wants), not the filtered one a token was sampled from.
- `token_ids` holds every generated token, including the eos token when one ended the row and the
  tokens that completed a stop string. `completion_tokens == len(token_ids)`, and `logprobs` has
  one entry per element of `token_ids`.
- `text` is built from the tokens' exact bytes (`distill_ray.models.token_bytes.TokenBytes`; special tokens
  add none, as with `skip_special_tokens=True`): the reply's bytes are those of every token but an ending
  eos, cut before the first stop string (searched in those bytes), less an unfinished character at the end
  (a reply cut inside a character by its length), and `text` is them decoded as UTF-8 (U+FFFD for an
  invalid sequence, as `tokenizer.decode` does). For byte-level BPE that is `tokenizer.decode` of the reply's
  tokens but for the unfinished last character; for SentencePiece the first token's leading space is kept
  (see `token_bytes`).
- Each logprob entry's `bytes` is what its token put into the reply's bytes: the token's exact bytes, cut
  where the reply ends, so empty for an ending eos, for special tokens, for tokens from a stop string's start
  on and for an unfinished last character. Concatenated, the entries' `bytes` are the reply's bytes, so
  exactly `text.encode()` whenever those are valid UTF-8 (always, unless the model wrote an invalid byte
  sequence). A top alternative's `bytes` is its token's exact bytes; `token` always names the whole token
  (`TokenBytes.name`).
- A row's new tokens are capped so prompt + completion fit the model's `max_position_embeddings`;
  hitting that cap ends the row with finish_reason "length", as `max_new_tokens` does.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from distill_ray.models.loading import load_causal_lm, load_tokenizer
from distill_ray.models.sampling import draw_tokens
from distill_ray.models.scoring import score_sequences
from distill_ray.models.stop_tokens import stop_token_ids
from distill_ray.models.token_bytes import TokenBytes, clip_pieces, complete_characters, decode_reply
from distill_ray.models.token_logprobs import TokenAlternative, TokenLogprob

MAX_TOP_LOGPROBS = 20


@dataclass
class GenRequest:
    prompt_ids: list[int]
    max_new_tokens: int = 256
    temperature: float = 1.0  # 0 -> greedy
    top_p: float = 1.0
    seed: int | None = None  # None -> a fresh random seed per call
    stop: list[str] = field(default_factory=list)
    logprobs: bool = False
    top_logprobs: int = 0  # 0..20, needs logprobs=True when > 0
    # Called on the engine's thread with (token id, its TokenLogprob or None) as each token is chosen: the hook a
    # streaming answer reads (serve/teacher.py). It must be quick and thread-safe; it never changes the result.
    on_token: Callable[[int, TokenLogprob | None], None] | None = field(default=None, repr=False, compare=False)


@dataclass
class GenResult:
    text: str
    token_ids: list[int]
    finish_reason: str  # "stop" (eos or stop string) | "length"
    prompt_tokens: int
    completion_tokens: int
    logprobs: list[TokenLogprob] | None


@dataclass
class _Row:
    """Mutable per-row decoding state inside one `generate` call."""

    req: GenRequest
    budget: int  # max new tokens after the context-length cap
    generator: torch.Generator | None
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None
    reply_bytes: bytes | None = None  # set once finished by eos or a stop string

    @property
    def done(self) -> bool:
        return self.finish_reason is not None


def pick_device(device: str = "auto", dtype: str = "auto") -> tuple[str, str]:
    """Resolve `auto` settings: cuda when this process sees a GPU, and bfloat16 there, float32 on CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    return device, dtype


class GenerationEngine:
    """Loads one causal LM + tokenizer and serves static batches of `GenRequest`s."""

    def __init__(self, model_dir, device: str = "cpu", dtype: str = "float32", torch_threads: int | None = None):
        if torch_threads is not None:
            # Process-wide setting: a Serve replica or benchmark owns its process, so this is its CPU share.
            torch.set_num_threads(int(torch_threads))
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise ValueError(f"unknown dtype '{dtype}' (use float32, bfloat16 or float16)")
        model_dir = Path(model_dir)
        self.model_name = model_dir.name
        self.device = torch.device(device)
        self.tokenizer = load_tokenizer(model_dir)
        self.model = load_causal_lm(model_dir, dtype=dtype, device=device).eval()
        config = self.model.config
        self.vocab_size = int(config.vocab_size)
        self.max_context: int | None = getattr(config, "max_position_embeddings", None)
        self.pad_token_id = int(self.tokenizer.pad_token_id)
        self.eos_token_ids = stop_token_ids(self.tokenizer, self.model.generation_config)
        self.token_bytes = TokenBytes(self.tokenizer)  # id -> exact bytes and name, for text and logprobs

    def chat_prompt_ids(self, messages: list[dict]) -> list[int]:
        """Prompt ids for a chat, ending with the assistant-turn header (add_generation_prompt)."""
        encoded = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True
        )
        return list(encoded["input_ids"])

    def text_prompt_ids(self, prompt: str) -> list[int]:
        """Prompt ids for a raw completion prompt (the tokenizer's own special tokens, if any)."""
        return list(self.tokenizer(prompt)["input_ids"])

    def score(self, sequences: list[list[int] | str], top_logprobs: int = 0) -> list[list[TokenLogprob | None]]:
        """The teacher's log-probability of every token of each sequence, from one batched forward pass.

        `sequences`: B token-id lists (scored exactly as given: no re-tokenisation) or texts (tokenised with
        `text_prompt_ids`), each 1 to `max_context` tokens. `top_logprobs`: k in 0..MAX_TOP_LOGPROBS alternatives.
        Returns B lists, one entry per token: None for token 0 (it has no context), then for t >= 1 a
        `TokenLogprob` of token t given tokens 0..t-1 under the raw distribution (temperature 1, no top-p) with its
        `token_id`, `rank`, exact `bytes` and the k most likely alternatives (descending). Raises ValueError naming
        the sequence for an empty one, an id outside [0, vocab_size) or one longer than the model's context.
        """
        ids = [self.text_prompt_ids(s) if isinstance(s, str) else list(s) for s in sequences]
        if not 0 <= top_logprobs <= MAX_TOP_LOGPROBS:
            raise ValueError(f"top_logprobs must be in 0..{MAX_TOP_LOGPROBS}, got {top_logprobs}")
        for index, seq in enumerate(ids):
            self._validate_sequence(seq, index)
        if not ids:
            return []
        with torch.inference_mode():
            return score_sequences(self.model, ids, top_logprobs, pad_token_id=self.pad_token_id,
                                   token_bytes=self.token_bytes)  # fmt: skip

    def _validate_sequence(self, seq: list[int], index: int) -> None:
        where = f"sequence {index}"
        if not seq:
            raise ValueError(f"{where}: it is empty")
        if any(not 0 <= int(t) < self.vocab_size for t in seq):
            raise ValueError(f"{where}: it has token ids outside the vocabulary [0, {self.vocab_size})")
        if self.max_context is not None and len(seq) > self.max_context:
            raise ValueError(f"{where}: it has {len(seq)} tokens; the model's context is {self.max_context} tokens")

    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        """Run `requests` as one static batch; results come back in request order."""
        if not requests:
            return []
        for index, req in enumerate(requests):
            self._validate(req, index)
        rows = [self._start_row(req) for req in requests]
        with torch.inference_mode():
            self._decode(rows)
        return [self._result(row) for row in rows]

    def _validate(self, req: GenRequest, index: int) -> None:
        where = f"request {index}"
        if not req.prompt_ids:
            raise ValueError(f"{where}: prompt is empty")
        if any(not 0 <= int(t) < self.vocab_size for t in req.prompt_ids):
            raise ValueError(f"{where}: prompt has token ids outside the vocabulary [0, {self.vocab_size})")
        if self.max_context is not None and len(req.prompt_ids) >= self.max_context:
            raise ValueError(
                f"{where}: prompt has {len(req.prompt_ids)} tokens; the model's context is "
                f"{self.max_context} tokens, leaving no room to generate"
            )
        if req.max_new_tokens < 1:
            raise ValueError(f"{where}: max_new_tokens must be >= 1, got {req.max_new_tokens}")
        if req.temperature < 0:
            raise ValueError(f"{where}: temperature must be >= 0, got {req.temperature}")
        if not 0 < req.top_p <= 1:
            raise ValueError(f"{where}: top_p must be in (0, 1], got {req.top_p}")
        if not 0 <= req.top_logprobs <= MAX_TOP_LOGPROBS:
            raise ValueError(f"{where}: top_logprobs must be in 0..{MAX_TOP_LOGPROBS}, got {req.top_logprobs}")
        if req.top_logprobs > 0 and not req.logprobs:
            raise ValueError(f"{where}: top_logprobs needs logprobs=True")
        if any(not isinstance(s, str) or not s for s in req.stop):
            raise ValueError(f"{where}: stop strings must be non-empty strings")

    def _start_row(self, req: GenRequest) -> _Row:
        budget = req.max_new_tokens
        if self.max_context is not None:
            budget = min(budget, self.max_context - len(req.prompt_ids))
        generator = None
        if req.temperature > 0:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(req.seed if req.seed is not None else secrets.randbits(63))
        return _Row(req=req, budget=budget, generator=generator)

    def _left_pad(self, prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, prompt in enumerate(prompts):
            ids[i, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            mask[i, width - len(prompt) :] = 1
        # Explicit positions so every row's first real token sits at position 0 despite the padding;
        # pad slots get 0 (they are masked out anyway).
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        return ids.to(self.device), mask.to(self.device), positions.to(self.device)

    def _decode(self, rows: list[_Row]) -> None:
        """Prefill once, then one model step per generated token until every row is done."""
        ids, mask, positions = self._left_pad([row.req.prompt_ids for row in rows])
        # logits_to_keep=1: only the last position's logits are needed, which avoids a
        # (batch x prompt x vocab) tensor at prefill.
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
        positions = positions[:, -1:]
        while True:
            next_ids = self._advance(rows, out.logits[:, -1, :].float())
            if all(row.done for row in rows):
                return
            mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
            positions = positions + 1
            out = self.model(
                input_ids=next_ids.view(-1, 1),
                attention_mask=mask,
                position_ids=positions,
                past_key_values=out.past_key_values,
                use_cache=True,
            )

    def _advance(self, rows: list[_Row], logits: torch.Tensor) -> torch.Tensor:
        """Pick each live row's next token, record it, and return the next step's input ids."""
        live = [i for i, row in enumerate(rows) if not row.done]
        chosen = self._choose(rows, live, logits)
        entries = self._logprob_entries(rows, live, logits, chosen)
        next_ids = [self.pad_token_id] * len(rows)  # finished rows are fed pad and ignored
        for i in live:
            rows[i].token_ids.append(chosen[i])
            if i in entries:
                rows[i].logprobs.append(entries[i])
            if rows[i].req.on_token is not None:
                rows[i].req.on_token(chosen[i], entries.get(i))
            self._check_finished(rows[i])
            next_ids[i] = chosen[i]
        return torch.tensor(next_ids, dtype=torch.long, device=self.device)

    def _choose(self, rows: list[_Row], live: list[int], logits: torch.Tensor) -> dict[int, int]:
        greedy = [i for i in live if rows[i].req.temperature == 0]
        sampled = [i for i in live if rows[i].req.temperature > 0]
        chosen: dict[int, int] = {}
        if greedy:
            picks = logits[greedy].argmax(dim=-1).tolist()
            chosen.update(zip(greedy, picks))
        if sampled:
            probs = self._sampling_probs(rows, sampled, logits)
            # Each row draws from its own generator, so its stream does not depend on batch mates.
            chosen.update(zip(sampled, draw_tokens(probs, [rows[i].generator for i in sampled])))
        return chosen

    def _sampling_probs(self, rows: list[_Row], sampled: list[int], logits: torch.Tensor) -> torch.Tensor:
        """Temperature-scaled, top-p-filtered probabilities for the sampled rows (one row each)."""
        temps = torch.tensor([rows[i].req.temperature for i in sampled], device=logits.device)
        probs = torch.softmax(logits[sampled] / temps[:, None], dim=-1)
        top_p = torch.tensor([rows[i].req.top_p for i in sampled], device=logits.device)
        if bool((top_p < 1).any()):
            sorted_probs, order = probs.sort(dim=-1, descending=True)
            # Keep the smallest prefix whose mass reaches top_p: a token is dropped when the mass
            # strictly before it already reaches top_p (the most likely token is always kept).
            drop = (sorted_probs.cumsum(dim=-1) - sorted_probs) >= top_p[:, None]
            sorted_probs = sorted_probs.masked_fill(drop, 0.0)
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
            probs = probs / probs.sum(dim=-1, keepdim=True)
        return probs

    def _logprob_entries(
        self, rows: list[_Row], live: list[int], logits: torch.Tensor, chosen: dict[int, int]
    ) -> dict[int, TokenLogprob]:
        wanted = [i for i in live if rows[i].req.logprobs]
        if not wanted:
            return {}
        # Raw model distribution: no temperature, no top-p (see the module docstring).
        logp = torch.log_softmax(logits[wanted], dim=-1)
        picked = logp.gather(-1, torch.tensor([[chosen[i]] for i in wanted], device=logp.device))
        picked_values = picked.squeeze(-1).tolist()
        k = max(rows[i].req.top_logprobs for i in wanted)
        top_values, top_ids = logp.topk(k, dim=-1) if k else (logp[:, :0], logp[:, :0].long())
        top_values, top_ids = top_values.tolist(), top_ids.tolist()
        names = self.token_bytes
        entries = {}
        for j, i in enumerate(wanted):
            n = rows[i].req.top_logprobs
            pairs = zip(top_ids[j][:n], top_values[j][:n])
            top = [TokenAlternative(names.name(t), v, names.raw(t), t) for t, v in pairs]
            token = chosen[i]
            entries[i] = TokenLogprob(names.name(token), picked_values[j], top, names.raw(token), token_id=token)
        return entries

    def _check_finished(self, row: _Row) -> None:
        """Set finish_reason (and the reply's bytes) after `row` got a new token: eos, stop string, length."""
        if row.token_ids[-1] in self.eos_token_ids:
            row.finish_reason = "stop"
            row.reply_bytes = self.token_bytes.join(row.token_ids[:-1])
            return
        if row.req.stop:
            # Rejoining the whole continuation is quadratic but cheap at these lengths, and it finds stop
            # strings that span token boundaries. Searching the UTF-8 bytes finds what searching the text
            # would: a stop string starts with a character's first byte, which no invalid sequence swallows.
            raw = self.token_bytes.join(row.token_ids)
            found = [pos for pos in (raw.find(s.encode("utf-8")) for s in row.req.stop) if pos >= 0]
            if found:
                row.finish_reason = "stop"
                row.reply_bytes = raw[: min(found)]
                return
        if len(row.token_ids) >= row.budget:
            row.finish_reason = "length"

    def _result(self, row: _Row) -> GenResult:
        raw = row.reply_bytes if row.reply_bytes is not None else self.token_bytes.join(row.token_ids)
        raw = complete_characters(raw)
        return GenResult(
            text=decode_reply(raw),
            token_ids=list(row.token_ids),
            finish_reason=row.finish_reason or "length",
            prompt_tokens=len(row.req.prompt_ids),
            completion_tokens=len(row.token_ids),
            logprobs=_fit_to_reply(row.logprobs, len(raw)) if row.req.logprobs else None,
        )


def _fit_to_reply(entries: list[TokenLogprob], reply_len: int) -> list[TokenLogprob]:
    """`entries` with their bytes cut to the reply's first `reply_len` bytes (the eos token, what follows a stop
    string's start and an unfinished last character are not in the reply); entries that fit are kept as they are."""
    clipped = clip_pieces([e.bytes for e in entries], reply_len)
    return [e if len(raw) == len(e.bytes) else replace(e, bytes=raw) for e, raw in zip(entries, clipped)]
