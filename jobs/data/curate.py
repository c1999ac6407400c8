"""Job `curate`: AdvDistill's stage 1 — each problem's G scored responses become one training group.

Reads the samples of a `generate` stage run with G = `num_samples` responses per problem (they carry
correctness, the composite reward and the group-relative advantage), keeps groups with at least
`processing.curate.min_correct` correct responses and writes one row per problem to
`<stage>/groups/` with list columns (`responses`, `advantages`, `rewards`, `correct`, ...), the input
of the AdvDistill trainer. Every response of a dropped group is rejected with the group's reason.
"""

from __future__ import annotations

import pyarrow.parquet as pq

from distill_ray.config import CurateConfig, JobConfig
from distill_ray.data import schemas
from distill_ray.data.curation import curate_group
from distill_ray.summary import StageResult
from jobs.data.grouped import require_columns, run_group_stage
from jobs.data.sources import cot_rows_dataset
from jobs.stage import StageEnv


def run(job: JobConfig, stage: StageEnv) -> StageResult:
    cfg = job.processing.curate
    ds, schema = cot_rows_dataset(job.dataset.labeled_path, max_line_bytes=job.dataset.max_line_bytes)
    require_columns(schema, {c: "written by generate" for c in ("id", "problem", "response", "correct", "reward",
                                                                 "advantage")}, "dataset.labeled_path")  # fmt: skip
    result = run_group_stage(stage, ds, job_type="curate", out_name="groups", group_fn=_curate,
                             fn_kwargs={"cfg": cfg}, out_schema=schemas.GROUP)  # fmt: skip
    sizes = pq.read_table(stage.output_dir / "groups", columns=["num_correct", "responses"])
    groups = sizes.num_rows
    result.metrics["groups"] = groups
    if groups:
        result.metrics["mean_group_size"] = round(sum(len(r) for r in sizes["responses"].to_pylist()) / groups, 2)
        result.metrics["mean_correct_per_group"] = round(sum(sizes["num_correct"].to_pylist()) / groups, 2)
    return result


def _curate(rows: list[dict], cfg: CurateConfig):
    group, reason = curate_group(rows, cfg)
    if group is None:
        return [], [(row, reason) for row in rows]
    return [group], []
