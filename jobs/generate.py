"""Job `generate`: problems -> N samples x temperatures from the teacher -> parse, verify, score -> Parquet.

Streaming on Ray Data: the source is read lazily, a pool of `CoTGenerator` actors keeps
`inference.concurrency` callers busy against the teacher (a Serve deployment in-cluster, or an external
OpenAI-compatible API), and every scored sample is written to `<stage>/generations/`. Kept samples (per
`distillation.keep`) go to `dataset.labeled_path` or `<stage>/kept/`, ready for SFT.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray
from ray.data.expressions import col

from actors.generator import SAMPLE_SCHEMA, CoTGenerator
from actors.teacher_client import TeacherTarget
from distill_ray.config import DistillationConfig, InferenceConfig, JobConfig
from distill_ray.datasets import resolve_source
from distill_ray.summary import StageResult
from jobs.common import StageEnv, append_rejected
from jobs.sources import problems_dataset
from jobs.teachers import teacher_target

STAT_COLUMNS = ["id", "error", "correct", "kept", "format_reward", "completion_tokens"]
CALLER_CPUS = 0.25  # callers mostly wait on the teacher; leave the cores to replicas and workers


@dataclass
class GenerationRun:
    """What one generation pass produced (paths and counts)."""

    samples_dir: Path
    kept_dir: Path | None
    records_in: int
    stats: dict


def run(job: JobConfig, stage: StageEnv) -> StageResult:
    kept_dir = Path(job.dataset.labeled_path) if job.dataset.labeled_path else stage.output_dir / "kept"
    stage.rejected_file.unlink(missing_ok=True)
    with teacher_target(job.models.teacher, job.inference, app_name=f"teacher-{stage.name}") as target:
        out = generate_samples(job, stage, target, job.inference, job.distillation, "generations", kept_dir)
    result = StageResult(name=stage.name, job_type="generate", rows_in=out.records_in, rows_out=out.stats["kept"])
    result.count_rejects(out.stats.pop("reject_reasons"))
    result.metrics = out.stats
    result.outputs = {"generations": str(out.samples_dir), "kept": str(out.kept_dir)}
    return result


def generate_samples(
    job: JobConfig,
    stage: StageEnv,
    target: TeacherTarget,
    inference: InferenceConfig,
    distillation: DistillationConfig,
    samples_name: str,
    kept_dir: Path | None,
) -> GenerationRun:
    """Run the streaming pipeline once, writing every sample to `<stage>/<samples_name>/` and the kept
    ones to `kept_dir` (if given), replacing earlier outputs there; rejects are appended to the stage's file."""
    source = resolve_source(job.dataset.instruction_path)
    samples_dir = stage.output_dir / samples_name
    for folder in (samples_dir, kept_dir):
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)

    problems = problems_dataset(source, job.dataset)
    malformed = _quarantine_malformed(problems, stage)
    samples = problems.filter(expr=col("error").is_null()).drop_columns(["error", "raw"]).map_batches(
        CoTGenerator,
        fn_constructor_kwargs=dict(
            target=target,
            inference=inference.model_dump(),
            distillation=distillation.model_dump(),
            teacher_name=target.model or job.models.teacher,
        ),
        batch_size=inference.batch_size,
        batch_format="pandas",
        concurrency=inference.concurrency,
        num_cpus=CALLER_CPUS,
    )
    samples.write_parquet(str(samples_dir))
    _ensure_parquet(samples_dir)
    # Everything below streams from the written samples (the teacher is never asked twice); only the
    # small columns that the statistics need are read into this process.
    written = ray.data.read_parquet(str(samples_dir))
    if kept_dir is not None:
        written.filter(expr=col("kept") == True).write_parquet(str(kept_dir))  # noqa: E712 - an expression
        kept_dir.mkdir(parents=True, exist_ok=True)  # exists even when nothing was kept
    failed = written.filter(expr=col("error").is_not_null())
    errors = [{"reason": "teacher error", "row": r} for r in failed.iter_rows()]
    append_rejected(stage.rejected_file, stage.name, errors)
    stats = sample_stats(pq.read_table(samples_dir, columns=STAT_COLUMNS))
    stats["reject_reasons"] = [m["reason"] for m in malformed] + ["teacher error"] * len(errors)
    return GenerationRun(samples_dir, kept_dir, problems.count(), stats)


def _ensure_parquet(folder: Path) -> None:
    """Ray Data writes no file for an empty dataset; leave a schema-only file so readers still work."""
    if not any(folder.glob("*.parquet")):
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(SAMPLE_SCHEMA.empty_table(), folder / "empty.parquet")


def _quarantine_malformed(problems: ray.data.Dataset, stage: StageEnv) -> list[dict]:
    """Stream the rejected records (a cheap second read of the source) into rejected/."""
    bad = [
        {"reason": r["error"], "row": r["raw"]}
        for r in problems.filter(expr=col("error").is_not_null()).iter_rows()
    ]
    append_rejected(stage.rejected_file, stage.name, bad)
    return bad


def _problem_count(table) -> int:
    return len(pc.unique(table["id"])) if table.num_rows else 0


def sample_stats(table) -> dict:
    """Counts and rates over all generated samples (teacher errors excluded from the rates)."""
    ok = table.filter(pc.is_null(table["error"]))
    n = ok.num_rows
    correct = ok.filter(pc.equal(ok["correct"], True)).num_rows if n else 0
    kept = table.filter(pc.field("kept")).num_rows if table.num_rows else 0
    fmt = pc.sum(pc.greater(ok["format_reward"], 0)).as_py() if n else 0
    tokens = pc.mean(ok["completion_tokens"]).as_py() if n else None
    return {
        "problems": _problem_count(table),
        "samples": n,
        "teacher_errors": table.num_rows - n,
        "correct": correct,
        "kept": kept,
        "accuracy": round(correct / n, 4) if n else None,
        "format_rate": round((fmt or 0) / n, 4) if n else None,
        "mean_completion_tokens": round(tokens, 1) if tokens is not None else None,
    }
