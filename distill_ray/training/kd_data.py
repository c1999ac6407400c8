"""White-box KD data: teacher-forced sequences, top-k extraction, the logits shard format, the join, batches.

Where it sits: the `logits` job (`jobs/train/logits.py` + `actors/logits.py`) tokenizes each
labelled row with `teacher_forced_ids`, runs the teacher once and keeps `topk_of_positions` per
response token, writing shards in the format below. The `kd` job (`jobs/train/kd.py`) joins its rows to
those shards BY SAMPLE KEY (`join_logits`; never by step or position, which breaks under shuffling
and gradient accumulation), proves the student tokenizes like the teacher (`tokenizer_fingerprint`,
`token_mismatch`), and its workers batch the joined rows with `KDDataset` + `collate_kd`.
Pure Python/torch/pyarrow, no Ray.

Logits shard format (Parquet, one row per sample, `<logits stage>/logits/*.parquet`):
  sample_id      string         the row's `sample_id`, else sha1(problem \\x1f response)[:16]
  prompt_ids     list<int32>    the chat prompt exactly as sft builds it (generation prompt included)
  response_ids   list<int32>    response + end-of-turn, cut so prompt + response <= max_length
  topk_ids       list<int32>    R*K entries, row-major: [j*K + r] is the teacher's r-th most likely
                                token at response position j (the distribution of response token j)
  topk_logprobs  list<float16>  R*K teacher log-probs of those ids under its FULL softmax at T = 1
                 (or float32, per training.kd.logprob_dtype)
plus `_manifest.json` (teacher, top_k, dtype, max_length, prompt settings, tokenizer fingerprint).
Raw size per response token: K * (4 + 2) + 4 bytes with float16 (124 B at K = 20) before compression.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

from distill_ray.errors import RowRejected
from distill_ray.training.sft_data import IGNORE_INDEX, build_chat_messages, tokenize_sft_example

MANIFEST = "_manifest.json"  # '_' prefix: Parquet readers skip it when reading the folder
LOGITS_COLUMNS = ("sample_id", "prompt_ids", "response_ids", "topk_ids", "topk_logprobs")


def sample_key(row: dict) -> str:
    """The join key of a row: its `sample_id` if it has one, else a hash of problem and response."""
    sid = row.get("sample_id")
    if isinstance(sid, str) and sid:
        return sid
    text = f"{row['problem']}\x1f{row['response']}"
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def teacher_forced_ids(tokenizer, problem: str, response: str, system_prompt: str | None, user_template: str,
                       max_length: int) -> tuple[list[int], list[int]]:  # fmt: skip
    """(prompt ids, response ids) exactly as sft tokenizes the row (response tail cut at max_length).

    Raises RowRejected (distill_ray.errors) when the prompt leaves no room for a response token.
    """
    messages = build_chat_messages(problem, system_prompt, user_template)
    ex = tokenize_sft_example(tokenizer, messages, response, max_length)
    n_prompt = next(i for i, label in enumerate(ex["labels"]) if label != IGNORE_INDEX)
    return ex["input_ids"][:n_prompt], ex["input_ids"][n_prompt:]


def response_positions(prompt_lens: list[int], response_lens: list[int], width: int):
    """Bool [B, width]: the positions whose next-token distribution is a response token's.

    Position t predicts token t + 1, so response token j of a row (at P + j) is predicted at P - 1 + j.
    """
    import torch

    keep = torch.zeros(len(prompt_lens), width, dtype=torch.bool)
    for b, (p, r) in enumerate(zip(prompt_lens, response_lens)):
        keep[b, p - 1 : p - 1 + r] = True
    return keep


def topk_of_positions(logits, k: int):
    """(ids int32 [N, k], log-probs float32 [N, k]) of the k most likely tokens at each of N positions.

    Log-probs are under the full softmax (float32, temperature 1), so the k stored values sum to
    less than 1 in probability; the KD loss treats the remainder as the teacher's tail.
    """
    import torch

    logprobs = torch.log_softmax(logits.float(), dim=-1)
    values, ids = logprobs.topk(k, dim=-1)
    return ids.to(torch.int32), values


def tokenizer_fingerprint(tokenizer) -> str:
    """A short hash of the token -> id map: equal fingerprints mean the same ids for the same pieces."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha1(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()[:16]


def write_manifest(folder: Path, manifest: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2))
    tmp.replace(folder / MANIFEST)


def read_manifest(folder: Path) -> dict | None:
    path = Path(folder) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def shard_files(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).glob("*.parquet") if not p.name.startswith((".", "_")))


def join_logits(keys: list[str], folder: Path, dest: Path) -> tuple[list[int], dict]:
    """Copy the logits rows of `keys` (one output row per key, duplicates included) from the shards in
    `folder` into the Arrow IPC file `dest`, one shard at a time; returns (indices of keys without
    logits, stats). The output is in shard order, not key order: trainers shuffle anyway, and every
    row carries its own key and ids, so nothing depends on position.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    wanted = Counter(keys)
    found: set[str] = set()
    writer, rows, tokens = None, 0, 0
    for shard in shard_files(folder):
        shard_keys = pq.read_table(shard, columns=["sample_id"]).column("sample_id").to_pylist()
        take = []
        for i, key in enumerate(shard_keys):
            if key in wanted and key not in found:  # a key stored twice is used once
                found.add(key)
                take += [i] * wanted[key]
        if not take:
            continue
        table = pq.read_table(shard, columns=list(LOGITS_COLUMNS)).take(take)
        if writer is None:
            dest.parent.mkdir(parents=True, exist_ok=True)
            writer = pa.ipc.new_file(str(dest), table.schema)
        writer.write_table(table)
        rows += table.num_rows
        tokens += sum(len(ids) for ids in table.column("response_ids").to_pylist())
    if writer is not None:
        writer.close()
    missing = [i for i, key in enumerate(keys) if key not in found]
    return missing, {"rows": rows, "response_tokens": tokens}


def read_joined(path: Path):
    """The joined rows as a memory-mapped Arrow table: workers share the page cache, no copy per worker."""
    import pyarrow as pa

    return pa.ipc.open_file(pa.memory_map(str(path))).read_all()


def token_mismatch(tokenizer, row: dict, stored: dict, system_prompt: str | None, user_template: str) -> str | None:
    """Where the student's tokenization of `row` departs from the stored teacher ids, else None."""
    try:
        prompt, response = teacher_forced_ids(tokenizer, row["problem"], row["response"], system_prompt,
                                              user_template, len(stored["prompt_ids"]) + len(stored["response_ids"]))
    except RowRejected:  # the student's prompt alone is longer than the teacher's whole sequence
        return "prompt token ids differ"
    if prompt != list(stored["prompt_ids"]):
        return "prompt token ids differ"
    if response != list(stored["response_ids"]):
        return "response token ids differ"
    return None


class KDDataset:
    """Joined logits rows as a map-style dataset; each item is one sequence with its top-k per response token.

    `max_length` cuts the response tail (and its top-k rows) when the kd job's limit is tighter than
    the one the logits were extracted with.
    """

    def __init__(self, table, max_length: int):
        self.table, self.max_length = table, max_length
        self.cols = {c: table.column(c) for c in LOGITS_COLUMNS if c != "sample_id"}

    def __len__(self) -> int:
        return self.table.num_rows

    def __getitem__(self, i: int) -> dict:
        prompt = self.cols["prompt_ids"][i].values.to_numpy()
        response = self.cols["response_ids"][i].values.to_numpy()
        ids = self.cols["topk_ids"][i].values.to_numpy().reshape(len(response), -1)
        logprobs = self.cols["topk_logprobs"][i].values.to_numpy().reshape(len(response), -1)
        keep = max(1, min(len(response), self.max_length - len(prompt)))
        return {"prompt": prompt, "response": response[:keep], "topk_ids": ids[:keep],
                "topk_logprobs": logprobs[:keep]}  # fmt: skip


def collate_kd(examples: list[dict], pad_id: int) -> dict:
    """Right-padded tensors with the teacher's top-k ALIGNED to the student's positions.

    input_ids / attention_mask [B, L]; labels [B, L]: the token position t predicts (input_ids[t + 1])
    on response positions, -100 elsewhere; kd_mask [B, L]; topk_ids [B, L, K] int32 and
    topk_logprobs [B, L, K] float32, filled where kd_mask is set (the response token at t + 1).
    """
    import numpy as np
    import torch

    width = max(len(ex["prompt"]) + len(ex["response"]) for ex in examples)
    k = examples[0]["topk_ids"].shape[1]
    b = len(examples)
    input_ids = np.full((b, width), pad_id, dtype=np.int64)
    labels = np.full((b, width), IGNORE_INDEX, dtype=np.int64)
    mask = np.zeros((b, width), dtype=bool)
    topk_ids = np.zeros((b, width, k), dtype=np.int32)
    topk_logprobs = np.zeros((b, width, k), dtype=np.float32)
    attention = np.zeros((b, width), dtype=np.int64)
    for i, ex in enumerate(examples):
        p, r = len(ex["prompt"]), len(ex["response"])
        input_ids[i, :p] = ex["prompt"]
        input_ids[i, p : p + r] = ex["response"]
        attention[i, : p + r] = 1
        labels[i, p - 1 : p - 1 + r] = ex["response"]
        mask[i, p - 1 : p - 1 + r] = True
        topk_ids[i, p - 1 : p - 1 + r] = ex["topk_ids"]
        topk_logprobs[i, p - 1 : p - 1 + r] = ex["topk_logprobs"]
    arrays = {"input_ids": input_ids, "attention_mask": attention, "labels": labels, "kd_mask": mask,
              "topk_ids": topk_ids, "topk_logprobs": topk_logprobs}  # fmt: skip
    return {name: torch.from_numpy(a) for name, a in arrays.items()}
