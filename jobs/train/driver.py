"""Driver-side helpers the trainer jobs share: the student's tokenizer, rejected rows, Parquet rows files.

Where it sits: each trainer job (`jobs/train/sft.py`, `kd.py`, `advdistill.py`, `dpo.py`, `rm.py`) checks its
rows on the driver with these before handing the clean ones to `jobs/train_loop.fit`.
"""

from __future__ import annotations

from pathlib import Path

from distill_ray.config import JobConfig
from distill_ray.errors import ConfigError
from distill_ray.summary import StageResult
from jobs.stage import StageEnv, append_rejected


def student_tokenizer(job: JobConfig, job_type: str):
    """The tokenizer of models.student (which the job requires), loaded from its resolved folder."""
    from distill_ray.models.loading import load_tokenizer, resolve_model

    if not job.models.student:
        raise ConfigError("models.student", f"the {job_type} job needs a student model to start from")
    return load_tokenizer(resolve_model(job.models.student, "models.student"))


def record_rejects(result: StageResult, stage: StageEnv, rejects: list[dict]) -> None:
    """Append rejects {reason, row} to the stage's rejected file and count them in the result."""
    append_rejected(stage.rejected_file, stage.name, rejects)
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
