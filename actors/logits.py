"""Ray Data callable class: labelled rows in, the teacher's top-k log-probs per response token out.

Where it sits: the `logits` job (`jobs/train/logits.py`) maps a pool of these over its checked rows and
writes what they return as Parquet shards (format: `distill_ray/training/kd_data.py`). Each actor holds one
copy of the teacher. A batch is one teacher-forced forward pass over prompt + response; the LM head
runs only on the positions that predict response tokens (`logits_to_keep` with a position mask), so
a batch never holds [B, T, V] logits for its prompts.
"""

from __future__ import annotations

import pyarrow as pa

from distill_ray.data import schemas
from distill_ray.training.kd_data import response_positions, teacher_forced_ids, topk_of_positions


class TeacherLogitsExtractor:
    """Teacher-forced forward of `model_spec` over each row; emits one shard row per input row."""

    def __init__(self, model_spec: str, system_prompt: str | None, user_template: str, max_length: int,
                 top_k: int, logprob_dtype: str, threads: int = 1, use_gpu: bool = False):  # fmt: skip
        import torch

        from distill_ray.models.loading import load_causal_lm, load_tokenizer, resolve_model

        torch.set_num_threads(threads)
        path = resolve_model(model_spec, "models.teacher")
        self.device = "cuda" if use_gpu else "cpu"
        self.tokenizer = load_tokenizer(path)
        self.model = load_causal_lm(path, dtype="bfloat16" if use_gpu else "float32", device=self.device).eval()
        self.prompt = (system_prompt, user_template, max_length)
        self.top_k = min(top_k, self.model.config.vocab_size)
        self.schema = schemas.logits(logprob_dtype)
        self.store_dtype = logprob_dtype  # numpy float16 becomes Arrow halffloat without a cast

    def __call__(self, batch: pa.Table) -> pa.Table:
        import torch

        rows = batch.to_pylist()
        seqs = [teacher_forced_ids(self.tokenizer, r["problem"], r["response"], *self.prompt) for r in rows]
        width = max(len(p) + len(r) for p, r in seqs)
        input_ids = torch.full((len(seqs), width), self.tokenizer.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(seqs), width), dtype=torch.long)
        for b, (p, r) in enumerate(seqs):
            input_ids[b, : len(p) + len(r)] = torch.tensor(p + r)
            attention[b, : len(p) + len(r)] = 1
        keep = response_positions([len(p) for p, _ in seqs], [len(r) for _, r in seqs], width)
        with torch.no_grad():
            logits = self.model(input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device),
                                logits_to_keep=keep.to(self.device)).logits  # fmt: skip
            ids, logprobs = topk_of_positions(logits.reshape(-1, logits.shape[-1]), self.top_k)
        ids, logprobs = ids.cpu().numpy(), logprobs.cpu().numpy().astype(self.store_dtype)
        out, start = {name: [] for name in self.schema.names}, 0
        for row, (p, r) in zip(rows, seqs):
            out["sample_id"].append(row["sample_id"])
            out["prompt_ids"].append(p)
            out["response_ids"].append(r)
            out["topk_ids"].append(ids[start : start + len(r)].reshape(-1))
            out["topk_logprobs"].append(logprobs[start : start + len(r)].reshape(-1))
            start += len(r)
        return pa.Table.from_pydict(out, schema=self.schema)
