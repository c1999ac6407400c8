"""Ray Data callable class: problems in, scored teacher samples out.

Each input row is one problem. For every temperature it sends one chat request with `n=num_samples`,
all of a batch's requests in flight at once, then scores the problem's whole group together
(`distill_ray.scoring`), so a problem's samples always leave this stage in the same batch.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pandas as pd
import pyarrow as pa

from actors.teacher_client import TeacherError, TeacherTarget, chat_with_retries
from distill_ray.config import DistillationConfig, InferenceConfig
from distill_ray.prompts import chat_messages
from distill_ray.scoring import score_problem_samples

# One explicit schema for every batch: a batch whose column is all None must not become Arrow's
# `null` type, or Parquet files of one stage would disagree and fail to read back together.
SAMPLE_SCHEMA = pa.schema(
    [("id", pa.string()), ("sample_id", pa.string()), ("problem", pa.string()), ("reference", pa.string()),
     ("teacher", pa.string()), ("temperature", pa.float64()), ("sample_index", pa.int64()),
     ("response", pa.string()), ("think", pa.string()), ("final_answer", pa.string()),
     ("finish_reason", pa.string()), ("prompt_tokens", pa.int64()), ("completion_tokens", pa.int64()),
     ("correct", pa.bool_()), ("format_reward", pa.float64()), ("cosine_reward", pa.float64()),
     ("reward", pa.float64()), ("advantage", pa.float64()), ("kept", pa.bool_()), ("error", pa.string())]
)  # fmt: skip


class CoTGenerator:
    """Calls the teacher for each (problem, temperature) and emits one row per sample."""

    def __init__(self, target: TeacherTarget, inference: dict, distillation: dict, teacher_name: str):
        self.target = target
        self.inference = InferenceConfig.model_validate(inference)
        self.distillation = DistillationConfig.model_validate(distillation)
        self.teacher_name = teacher_name
        self.client = target.client()
        self.pool = ThreadPoolExecutor(max_workers=16)

    def __call__(self, batch: pd.DataFrame) -> pa.Table:
        problems = batch.to_dict("records")
        jobs = [(p, t) for p in problems for t in self.inference.temperatures]
        responses = list(self.pool.map(lambda job: self._ask(*job), jobs))
        rows: list[dict[str, Any]] = []
        for p in problems:
            group = [row for (prob, _), resp in zip(jobs, responses) if prob is p for row in resp]
            rows.extend(score_problem_samples(group, self.distillation))
        return pa.Table.from_pylist([{c: r.get(c) for c in SAMPLE_SCHEMA.names} for r in rows], schema=SAMPLE_SCHEMA)

    def _request_body(self, problem: dict[str, Any], temperature: float) -> dict[str, Any]:
        inf = self.inference
        body = {
            "messages": chat_messages(problem["problem"], inf.system_prompt, inf.user_template),
            "n": inf.num_samples,
            "temperature": temperature,
            "top_p": inf.top_p,
            "max_tokens": inf.max_new_tokens,
        }
        if self.target.model:
            body["model"] = self.target.model
        if inf.seed is not None:
            # Distinct but reproducible per (problem, temperature): resumed runs regenerate the same text.
            body["seed"] = request_seed(inf.seed, problem["id"], temperature)
        return body

    def _ask(self, problem: dict[str, Any], temperature: float) -> list[dict[str, Any]]:
        base = {
            "id": problem["id"],
            "problem": problem["problem"],
            "reference": problem.get("reference"),
            "teacher": self.teacher_name,
            "temperature": float(temperature),
        }
        try:
            resp = chat_with_retries(self.client, self._request_body(problem, temperature), self.inference.max_retries)
        except TeacherError as exc:
            return [{**base, "sample_id": f"{problem['id']}:t{temperature}:error", "error": str(exc)}]
        usage = resp.get("usage") or {}
        rows = []
        for choice in resp["choices"]:
            k = choice["index"]
            rows.append(
                {
                    **base,
                    "sample_id": f"{problem['id']}:t{temperature}:s{k}",
                    "sample_index": k,
                    "response": choice["message"]["content"] or "",
                    "finish_reason": choice.get("finish_reason"),
                    "prompt_tokens": usage.get("prompt_tokens"),
                    "completion_tokens": _choice_tokens(choice, usage, len(resp["choices"])),
                }
            )
        return rows


def request_seed(base: int, problem_id: str, temperature: float) -> int:
    """A seed per (problem, temperature) that is stable across processes (unlike salted `hash()`)."""
    digest = hashlib.sha256(f"{base}|{problem_id}|{temperature}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def _choice_tokens(choice: dict[str, Any], usage: dict[str, Any], n: int) -> int:
    """Per-choice completion length: our server reports it per choice; others only in total."""
    per_choice = choice.get("completion_tokens")
    if per_choice is not None:
        return int(per_choice)
    return int((usage.get("completion_tokens") or 0) / max(n, 1))
