"""Shared inputs of the trainer job tests: tiny rows of every contract, job configs, and one logits extraction.

The logits extraction (the real `logits` job, SmolLM2-135M as teacher) runs once per test session and
is shared by test_logits.py and test_kd.py through a module-level cache.
"""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

STUDENT = "tiny:smollm2?seed=1"  # differs from the tiny teacher-shaped models other tests use
TEACHER = "builtin:smollm2-135m-instruct"  # a real teacher gives the KD test a distribution worth learning
TRAINING = dict(num_workers=2, cpus_per_worker=0.5, learning_rate=1e-2, per_device_train_batch_size=4,
                max_length=128, lr_scheduler_type="constant", logging_steps=1, save_steps=100)  # fmt: skip


def arithmetic(n: int, seed: int = 0) -> list[dict]:
    """(problem, response, sample_id, difficulty) rows the tiny student can overfit in a few steps."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        rows.append({"sample_id": f"s{seed}-{i}", "problem": f"What is {a}+{b}?",
                     "response": f"<think>{a} plus {b} is {a + b}.</think><answer>\\boxed{{{a + b}}}</answer>",
                     "difficulty": ["easy", "medium", "hard"][i % 3]})  # fmt: skip
    return rows


def write_parquet(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def job(job_type: str, rows_path, out: Path, models: dict | None = None, **training):
    from distill_ray.config import JobConfig

    # No system prompt: shorter sequences keep the 2-core runs quick (prompt building has unit tests).
    return JobConfig(job_type=job_type, output_dir=str(out), dataset={"labeled_path": str(rows_path)},
                     inference={"system_prompt": ""}, models=models or {"student": STUDENT},
                     training={**TRAINING, **training})  # fmt: skip


def stage(name: str, out: Path, ray_ctx):
    from jobs.stage import StageEnv

    return StageEnv(name=name, output_dir=out / name, rejected_dir=out / "rejected", ray=ray_ctx)


LOGITS_ROWS = 16
_LOGITS: dict = {}


def extracted_logits(tmp_path_factory, ray_ctx) -> dict:
    """Run the logits job once per session over 16 good rows + 2 bad ones; returns paths and the result."""
    if not _LOGITS:
        from jobs.train import logits

        root = tmp_path_factory.mktemp("logits")
        rows = arithmetic(LOGITS_ROWS)
        bad = [{"sample_id": "empty", "problem": " ", "response": "x", "difficulty": "easy"},
               dict(rows[0])]  # a duplicate key  # fmt: skip
        rows_path = write_parquet(rows + bad, root / "labeled.parquet")
        cfg = job("logits", rows_path, root, models={"teacher": TEACHER, "student": STUDENT}, kd={"top_k": 8})
        result = logits.run(cfg, stage("logits", root, ray_ctx))
        _LOGITS.update(root=root, rows=rows, rows_path=rows_path, folder=root / "logits" / "logits",
                       result=result, config=cfg)  # fmt: skip
    return _LOGITS
