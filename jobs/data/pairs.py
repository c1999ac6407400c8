"""Job `pairs`: chosen/rejected preference pairs for DPO / CogPO and pairwise reward models.

`processing.pairs.mode`:
- `correctness`: within each problem of `dataset.labeled_path` (scored samples), a verified-correct
  response is chosen over an incorrect one;
- `teacher_student`: the teacher's correct response (`dataset.labeled_path`) is chosen over the
  student's answer to the same problem (`processing.pairs.student_path`, e.g. a generate stage run
  with the student as its model).
Writes `<stage>/pairs/` (`id`, `pair_id`, `problem`, `chosen`, `rejected`, `pair_type`, `beta`); pairing
logic in distill_ray/data/curation.py. Rows used in no pair are rejected with the reason.
"""

from __future__ import annotations

import pyarrow as pa

from distill_ray.config import JobConfig
from distill_ray.data import schemas
from distill_ray.data.curation import build_pairs
from distill_ray.errors import ConfigError
from distill_ray.rejects import tagged_schema
from distill_ray.summary import StageResult
from jobs.data.grouped import require_columns, run_group_stage
from jobs.data.sources import cot_rows_dataset
from jobs.stage import LIGHT, StageEnv

# The rows grouped per problem: correct/incorrect teacher samples, and in teacher_student mode the student's.
# The tag columns ride along: a row its reader could not use is quarantined by run_group_stage.
INPUT_SCHEMA = tagged_schema(pa.schema([("id", pa.string()), ("sample_id", pa.string()), ("problem", pa.string()),
                                        ("response", pa.string()), ("correct", pa.bool_()),
                                        ("role", pa.string())]))  # fmt: skip


def run(job: JobConfig, stage: StageEnv) -> StageResult:
    cfg = job.processing.pairs
    max_line_bytes = job.dataset.max_line_bytes
    teacher, schema = cot_rows_dataset(job.dataset.labeled_path, max_line_bytes=max_line_bytes)
    require_columns(schema, {"id": "problem id", "response": "CoT text", "correct": "written by generate"},
                    "dataset.labeled_path")  # fmt: skip
    rows = teacher.map_batches(_with_role, fn_kwargs={"role": "teacher"}, batch_format="pyarrow", **LIGHT)
    if cfg.mode == "teacher_student":
        if not cfg.student_path:
            raise ConfigError("processing.pairs.student_path", "mode 'teacher_student' needs the student's answers")
        student, s_schema = cot_rows_dataset(cfg.student_path, "processing.pairs.student_path", max_line_bytes)
        require_columns(s_schema, {"id": "problem id", "response": "answer text"}, "processing.pairs.student_path")
        student = student.map_batches(_with_role, fn_kwargs={"role": "student"}, batch_format="pyarrow", **LIGHT)
        rows = rows.union(student)
    result = run_group_stage(stage, rows, job_type="pairs", out_name="pairs", group_fn=build_pairs,
                             fn_kwargs={"cfg": cfg}, out_schema=schemas.PAIR)  # fmt: skip
    result.metrics["pairs"] = result.metrics["records_written"]
    return result


def _with_role(batch: pa.Table, role: str) -> pa.Table:
    rows = batch.to_pylist()
    return pa.Table.from_pylist([{**{c: r.get(c) for c in INPUT_SCHEMA.names}, "role": role} for r in rows],
                                schema=INPUT_SCHEMA)  # fmt: skip

