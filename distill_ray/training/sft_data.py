"""SFT examples: labelled rows -> chat prompt + response token ids with loss masks, and batching.

Where it sits: the generation job writes labelled rows (`problem`, `response`) to parquet/JSONL;
the sft job (`jobs/train/sft.py`) reads and validates them on the driver (`read_labeled_rows`,
`select_training_rows`: bad rows come back with a reason, never an exception), then each Ray Train
worker wraps them in `SFTDataset` (tokenized lazily by `tokenize_sft_example`) and iterates
`epoch_batches` (seeded DistributedSampler, resumable mid-epoch, padded by `collate`). Pure
Python/torch, no Ray, so masking and resume positions are unit-testable.

The prompt is the student's chat template with the generation prompt appended (exactly what the
model sees at inference), so training teaches it to continue that prompt with the response and
then close its turn. Loss is on response tokens only (labels = -100 on the prompt).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from distill_ray import prompts
from distill_ray.errors import InputFileError

IGNORE_INDEX = -100  # torch's CrossEntropyLoss default ignore_index
_SENTINEL = "\u2063SFT-RESPONSE\u2063"  # text that no real response contains


class RowRejected(ValueError):
    """A row that cannot become a training example; `reason` is the short, countable cause."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


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


def missing(value: Any) -> bool:
    """None or NaN (how Parquet nulls and pandas gaps arrive)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def text_problem(row: dict, fields: tuple[str, ...]) -> str | None:
    """Why one of `fields` is not a non-empty string, else None."""
    for field in fields:
        value = row.get(field)
        if missing(value):
            return f"missing {field}"
        if not isinstance(value, str):
            return f"{field} is not a string"
        if not value.strip():
            return f"empty {field}"
    return None


def check_row(row: dict[str, Any]) -> str | None:
    """Why a labelled row cannot be used (missing/empty/non-string problem or response), else None."""
    return text_problem(row, ("problem", "response"))


def read_labeled_rows(path: str) -> tuple[list[dict], list[dict]]:
    """Rows of a .parquet file or folder (as the generation job writes) or a .jsonl/.json file, plus
    rejects for JSON lines that do not parse."""
    p = Path(path)
    if not p.exists():
        raise InputFileError(path, "labelled rows file or folder not found")
    if p.is_dir() or p.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(p)
        except Exception as exc:  # pyarrow raises several types for corrupt files
            raise InputFileError(path, f"not a readable parquet file ({exc})") from None
        missing = [c for c in ("problem", "response") if c not in table.column_names]
        if missing:
            raise InputFileError(path, f"missing column(s) {missing}; expected 'problem' and 'response'")
        return table.select(["problem", "response"]).to_pylist(), []
    if p.suffix in (".jsonl", ".json"):
        return read_json_rows(p)
    raise InputFileError(path, "expected a .parquet, .jsonl or .json file")


def read_json_rows(p: Path) -> tuple[list[dict], list[dict]]:
    """Records of a .json array or JSON-lines file, plus rejects {reason, row} for lines that do not parse."""
    text = p.read_text()
    if text.lstrip().startswith("["):  # a .json array rather than JSON lines
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputFileError(str(p), f"invalid JSON ({exc.msg})", line=exc.lineno) from None
        return [r if isinstance(r, dict) else {"value": r} for r in data], []
    rows, rejects = [], []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            rejects.append({"reason": "invalid JSON line", "row": {"line": lineno, "text": line[:500]}})
            continue
        rows.append(row if isinstance(row, dict) else {"value": row})
    return rows, rejects


def select_training_rows(
    rows: list[dict], tokenizer, system_prompt: str | None, user_template: str, max_length: int
) -> tuple[list[dict], list[dict]]:
    """Split rows into clean {problem, response} dicts and rejects {reason, row}.

    Only the prompt is tokenized here (it must leave room for a response token); workers tokenize
    whole examples lazily, so the driver never holds a tokenized copy of the data set.
    """
    clean, rejects = [], []
    for row in rows:
        reason = check_row(row)
        if reason is None:
            try:
                messages = build_chat_messages(row["problem"], system_prompt, user_template)
                prompt_token_ids(tokenizer, messages, max_length)
            except RowRejected as exc:
                reason = exc.reason
        if reason is None:
            clean.append({"problem": row["problem"], "response": row["response"]})
        else:
            rejects.append({"reason": reason, "row": row})
    return clean, rejects


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
