"""SFT examples: labelled rows -> chat prompt + response token ids with loss masks, and batching.

Where it sits: the generation job writes labelled rows (`problem`, `response`) to parquet/JSONL;
the sft job (`jobs/train/sft.py`) reads and checks them on the driver (`distill_ray/training/rows.py`:
bad rows come back with a reason, never an exception; `prompt_token_ids` rejects a prompt too long to
train on), then each Ray Train worker wraps them in `SFTDataset` (tokenized lazily by
`tokenize_sft_example`) and iterates `epoch_batches` (seeded DistributedSampler, resumable mid-epoch,
padded by `collate`); the other trainers build their examples on the same pieces. Pure Python/torch,
no Ray, so masking and resume positions are unit-testable.

The prompt is the student's chat template with the generation prompt appended (exactly what the
model sees at inference), so training teaches it to continue that prompt with the response and
then close its turn. Loss is on response tokens only (labels = -100 on the prompt).
"""

from __future__ import annotations

from typing import Any

from distill_ray import prompts
from distill_ray.errors import RowRejected

IGNORE_INDEX = -100  # torch's CrossEntropyLoss default ignore_index
_SENTINEL = "\u2063SFT-RESPONSE\u2063"  # text that no real response contains


def build_chat_messages(problem: str, system_prompt: str | None, user_template: str = "{problem}") -> list[dict[str, str]]:
    """Messages for one problem, built like the generation job's prompts.

    `system_prompt` None means the default reasoning-format prompt; "" means no system message
    (the same convention as `inference.system_prompt`, so SFT prompts match generation prompts).
    """
    return prompts.chat_messages(problem, system_prompt, user_template)


def end_of_turn(tokenizer) -> str:
    """The text the chat template puts after an assistant message (e.g. `<|im_end|>` for SmolLM2/Qwen).

    Found by rendering a sentinel assistant turn, so any template works; trailing whitespace
    (the newline between turns) is dropped because generation stops at the end-of-turn token.
    """
    cached = getattr(tokenizer, "_distill_ray_eot", None)
    if cached is not None:
        return cached
    messages = [{"role": "user", "content": "x"}, {"role": "assistant", "content": _SENTINEL}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    _, found, after = rendered.partition(_SENTINEL)
    eot = after.rstrip() if found else ""
    eot = eot or (tokenizer.eos_token or "")
    tokenizer._distill_ray_eot = eot  # rendering a template per row would dominate tokenizing
    return eot


def prompt_token_ids(tokenizer, messages_prompt: list[dict[str, str]], max_length: int | None = None) -> list[int]:
    """Token ids of the chat prompt, ending with the assistant generation prompt.

    With `max_length`, raises RowRejected when the prompt leaves no room for a response token: the
    sft driver calls this alone to reject rows cheaply, before workers tokenize whole examples.
    """
    text = tokenizer.apply_chat_template(messages_prompt, tokenize=False, add_generation_prompt=True)
    # The template already wrote any BOS/special tokens it wants; adding more would shift the prompt.
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if max_length is not None and len(ids) >= max_length:
        raise RowRejected(f"prompt longer than max_length ({len(ids)} >= {max_length} tokens)")
    return ids


def tokenize_sft_example(tokenizer, messages_prompt: list[dict[str, str]], response: str, max_length: int) -> dict:
    """input_ids = prompt + response + end-of-turn; labels copy them with the prompt masked to -100.

    Truncation keeps the whole prompt and cuts the response's tail (the end-of-turn goes first), so
    the model is never trained on a prompt it would not see. A prompt that leaves no room for even
    one response token raises RowRejected.
    """
    prompt_ids = prompt_token_ids(tokenizer, messages_prompt, max_length)
    response_ids = tokenizer(response + end_of_turn(tokenizer), add_special_tokens=False)["input_ids"]
    if not response_ids:
        raise RowRejected("response has no tokens")
    response_ids = response_ids[: max_length - len(prompt_ids)]
    input_ids = list(prompt_ids) + list(response_ids)
    labels = [IGNORE_INDEX] * len(prompt_ids) + list(response_ids)
    return {"input_ids": input_ids, "labels": labels, "attention_mask": [1] * len(input_ids)}


def collate(batch: list[dict[str, Any]], pad_id: int) -> dict:
    """Right-pad a list of tokenized examples into LongTensors (labels padded with -100, mask 0)."""
    import torch

    width = max(len(ex["input_ids"]) for ex in batch)
    out = {"input_ids": [], "labels": [], "attention_mask": []}
    for ex in batch:
        pad = width - len(ex["input_ids"])
        out["input_ids"].append(list(ex["input_ids"]) + [pad_id] * pad)
        out["labels"].append(list(ex["labels"]) + [IGNORE_INDEX] * pad)
        out["attention_mask"].append(list(ex["attention_mask"]) + [0] * pad)
    return {k: torch.tensor(v, dtype=torch.long) for k, v in out.items()}


class PromptedDataset:
    """Rows as a map-style torch dataset that tokenizes on access, so a Train worker only tokenizes
    the rows its sampler hands it (and skipped rows on resume cost nothing). Subclasses say what one
    item is; `messages(row)` is the chat prompt every trainer shares with the teacher."""

    def __init__(self, rows: list[dict], tokenizer, system_prompt: str | None, user_template: str, max_length: int):
        self.rows, self.tokenizer, self.max_length = rows, tokenizer, max_length
        self.system_prompt, self.user_template = system_prompt, user_template

    def __len__(self) -> int:
        return len(self.rows)

    def messages(self, row: dict) -> list[dict[str, str]]:
        return build_chat_messages(row["problem"], self.system_prompt, self.user_template)


class SFTDataset(PromptedDataset):
    """One item per row: prompt + response, labels on the response only."""

    def __getitem__(self, i: int) -> dict:
        row = self.rows[i]
        return tokenize_sft_example(self.tokenizer, self.messages(row), row["response"], self.max_length)


def epoch_batches(data, epoch: int, skip_samples: int, batch_size: int, seed: int, rank: int, world: int,
                  collate_fn=None):  # fmt: skip
    """This rank's micro-batches for `epoch`, after skipping the samples the run already consumed.

    DistributedSampler gives rank r the slice perm[r::world] of one seeded permutation, so the first
    k micro-batches of all ranks together are the first k*batch_size*world samples of it: counting
    consumed samples (not batches) keeps a resume right even if the worker count changed.
    `collate_fn` defaults to padding SFT examples with the tokenizer's pad id.
    """
    from functools import partial

    from torch.utils.data import DataLoader, DistributedSampler, Subset

    sampler = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=True, seed=seed)
    sampler.set_epoch(epoch)  # a new, reproducible order every epoch
    skip = (skip_samples // (batch_size * world)) * batch_size
    indices = list(sampler)[skip:]
    collate_fn = collate_fn or partial(collate, pad_id=data.tokenizer.pad_token_id)
    return DataLoader(Subset(data, indices), batch_size=batch_size, shuffle=False, collate_fn=collate_fn)
