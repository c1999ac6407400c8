"""The driver every trainer job runs before Ray Train: from the rows file to `jobs.train.loop.fit`.

Where it sits: between the data stages' rows files and the shared train loop. Each trainer job
(`jobs/train/sft.py`, `kd.py`, `advdistill.py`, `dpo.py`, `rm.py`, `grpo.py`; `logits.py` reads rows the
same way) is the same short recipe with its own pieces in the middle; dpo's, whole:

    path = labeled_path(job, "the dpo job reads its preference pairs from this file")  # ConfigError if unset
    tokenizer = student_tokenizer(job, "dpo")
    result = StageResult(name=stage.name, job_type="dpo")
    pairs = checked_rows(stage, result, pairs_input(job, path, tokenizer))  # a RowsInput: columns, row check
    objective = DPOObjective(job.models.student, inf.system_prompt, inf.user_template, t)
    return train_on_rows(job, stage, result, objective, pairs, PAIR_COLUMNS, schema=PAIR_TRAIN_SCHEMA,
                         metrics={"loss_type": t.dpo.loss})

`checked_rows` reads the file (`distill_ray/training/rows.py`), keeps the rows that pass the job's check,
appends the others with their reasons to `rejected/<stage>.jsonl` and stops with an InputFileError naming
the file when none is left. `train_on_rows` writes the rows to `<stage>/train_rows.parquet` as one phase;
`train` runs `fit` over any list of phases (sft's curriculum stages, kd's rows joined to the teacher's
logits) and fills the stage's result: rows_out (= rows_in - rows_rejected, the summary's rule), the
loop's metrics plus the job's own, and the model and checkpoint folders.

What stays in the jobs is what is genuinely theirs: sft's curriculum phases, kd's join to the logits
shards and its tokenizer checks, advdistill's sft_best baseline, rm's pointwise / pairwise inputs, grpo's
prompts (read like the data stages read problems), reward service and openrlhf engine, logits' one row
per sample key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill_ray.config import JobConfig
from distill_ray.errors import ConfigError, InputFileError
from distill_ray.rejects import append_rejects
from distill_ray.summary import StageResult
from distill_ray.training.lora import ADAPTER
from distill_ray.training.rows import prompt_problem, read_rows, split_rows
from distill_ray.training.schedule import Phase, total_steps
from jobs.stage import StageEnv
from jobs.train.loop import fit
from jobs.train.objective import Objective

TRAIN_ROWS = "train_rows.parquet"
RowCheck = Callable[[dict], str | None]  # why a row cannot be trained on, else None


@dataclass(frozen=True)
class RowsInput:
    """One rows file a trainer reads: its columns and the check every row must pass."""

    path: str
    required: list[str]  # a Parquet input without one of these is an InputFileError
    check: RowCheck
    optional: list[str] = field(default_factory=list)  # read when present
    noun: str = "rows"  # what the usable rows are called when there are none: "no usable pairs"


def labeled_path(job: JobConfig, why: str) -> str:
    """dataset.labeled_path, which the job reads its rows from (`why` says what they are)."""
    if not job.dataset.labeled_path:
        raise ConfigError("dataset.labeled_path", why)
    return job.dataset.labeled_path


def student_tokenizer(job: JobConfig, job_type: str):
    """The tokenizer of models.student (which the job requires), loaded from its resolved folder."""
    from distill_ray.models.loading import load_tokenizer, resolve_model

    if not job.models.student:
        raise ConfigError("models.student", f"the {job_type} job needs a student model to start from")
    return load_tokenizer(resolve_model(job.models.student, "models.student"))


def prompt_check(job: JobConfig, tokenizer, max_length: int | None = None) -> RowCheck:
    """The check that a row's chat prompt leaves room for a response within max_length (training.max_length)."""
    inf, limit = job.inference, job.training.max_length if max_length is None else max_length
    return lambda row: prompt_problem(row, tokenizer, inf.system_prompt, inf.user_template, limit)


def checked_rows(stage: StageEnv, result: StageResult, source: RowsInput) -> list[dict]:
    """The rows of `source` that pass its check; the rest (and unparseable JSON lines) recorded as rejects."""
    rows, unreadable = read_rows(source.path, source.required, source.optional)
    result.rows_in += len(rows) + len(unreadable)
    clean, bad = split_rows(rows, source.check)
    return usable_rows(stage, result, source.path, source.noun, clean, unreadable + bad)


def usable_rows(stage: StageEnv, result: StageResult, path: str, noun: str, clean: list[dict],
                rejects: list[dict]) -> list[dict]:  # fmt: skip
    """Record `rejects` and return `clean`; an InputFileError naming `path` when nothing is left to train on."""
    record_rejects(result, stage, rejects)
    if not clean:
        raise InputFileError(path, f"no usable {noun} ({len(rejects)} rejected: {result.rejected_reasons})")
    return clean


def record_rejects(result: StageResult, stage: StageEnv, rejects: list[dict]) -> None:
    """Append rejects {reason, row} to the stage's rejected file and count them in the result."""
    append_rejects(stage.rejected_file, stage.name, rejects)
    result.count_rejects([r["reason"] for r in rejects])


def write_rows(rows: list[dict], path: Path, columns: list[str] | None = None, schema=None) -> Path:
    """Write `rows` (only `columns`, if given) as one Parquet file, replacing an older one."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if columns is not None:
        rows = [{c: r.get(c) for c in columns} for r in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def single_phase(job: JobConfig, name: str, rows_path: Path, rows: int, micro_batch: int | None = None) -> list[Phase]:
    """The one phase of a job without a curriculum: epochs (or max_steps) over its rows."""
    t = job.training
    return [Phase(name, str(rows_path), rows, total_steps(t, rows, t.num_workers, micro_batch))]


def train_on_rows(job: JobConfig, stage: StageEnv, result: StageResult, objective: Objective, rows: list[dict],
                  columns: list[str], *, schema=None, phase: str | None = None, micro_batch: int | None = None,
                  metrics: dict[str, Any] | None = None) -> StageResult:  # fmt: skip
    """Write `rows` to `<stage>/train_rows.parquet` and train on them as one phase (named after the job)."""
    path = write_rows(rows, stage.output_dir / TRAIN_ROWS, columns, schema)
    phases = single_phase(job, phase or result.job_type, path, len(rows), micro_batch)
    return train(job, stage, result, objective, phases, metrics)


def train(job: JobConfig, stage: StageEnv, result: StageResult, objective: Objective, phases: list[Phase],
          metrics: dict[str, Any] | None = None) -> StageResult:  # fmt: skip
    """Run the Ray Train loop over `phases` and fill the stage's result with what it trained and wrote."""
    result.rows_out = result.rows_in - result.rows_rejected
    result.metrics = {**fit(job, stage, objective, phases), **(metrics or {})}
    result.outputs = {"model": str(stage.output_dir / "model"), "checkpoints": str(stage.output_dir / "checkpoints")}
    if job.training.lora is not None:  # the merged model is in model/; the adapter alone beside it
        result.outputs["adapter"] = str(stage.output_dir / ADAPTER)
    return result
