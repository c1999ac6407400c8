"""Job `select`: the target-aware sampler (ThoughtX) and the medium/hard split (DistilQwen curriculum).

Reads judged (and usually rewritten) CoT rows, keeps per problem the CoTs that suit the student
(`processing.select`: correctness, difficulty levels, RV / CD intervals, a per-problem cap and a
declared fallback; logic in distill_ray/data/select.py) and writes them to `<stage>/selected/`. With
`split_by: difficulty` the selection is also written split into `<stage>/easy|medium|hard/`, the
inputs of a curriculum SFT (medium first, then medium + hard).
"""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import ray
from ray.data.expressions import col

from distill_ray.config import JobConfig
from distill_ray.data import schemas
from distill_ray.data.select import select_group
from distill_ray.grading.judge import DIFFICULTY_LEVELS
from distill_ray.summary import StageResult
from jobs.data.grouped import require_columns, run_group_stage
from jobs.data.sources import cot_rows_dataset
from jobs.stage import LIGHT, StageEnv


def run(job: JobConfig, stage: StageEnv) -> StageResult:
    cfg = job.processing.select
    ds, schema = cot_rows_dataset(job.dataset.labeled_path, max_line_bytes=job.dataset.max_line_bytes)
    needed = {"id": "problem id", "sample_id": "CoT id"}
    if cfg.require_correct:
        needed["correct"] = "written by generate/rewrite"
    for name in ("rv", "cd"):
        if getattr(cfg, name) is not None:
            needed[name] = f"run a judge stage with criterion {name} first"
    if cfg.difficulty is not None or cfg.split_by:
        needed["difficulty"] = "run a judge stage with criterion difficulty first"
    require_columns(schema, needed, "dataset.labeled_path")
    out_schema = schemas.selected(schema)
    result = run_group_stage(stage, ds, job_type="select", out_name="selected", group_fn=select_group,
                             fn_kwargs={"cfg": cfg}, out_schema=out_schema)  # fmt: skip
    selected = stage.output_dir / "selected"
    columns = ["id", "fallback"] + (["difficulty"] if "difficulty" in schema.names else [])
    table = pq.read_table(selected, columns=columns)
    result.metrics["problems_selected"] = len(set(table["id"].to_pylist()))
    result.metrics["fallback_rows"] = sum(1 for v in table["fallback"].to_pylist() if v)
    if cfg.split_by:
        counts = Counter(table["difficulty"].to_pylist())
        result.metrics["split"] = {level: counts.get(level, 0) for level in DIFFICULTY_LEVELS}
        for level in DIFFICULTY_LEVELS:
            _write_split(selected, stage.output_dir / level, level, out_schema)
            result.outputs[level] = str(stage.output_dir / level)
    return result



def _write_split(selected, dest, level: str, schema: pa.Schema) -> None:
    import shutil

    shutil.rmtree(dest, ignore_errors=True)
    rows = ray.data.read_parquet(str(selected), **LIGHT)
    rows.filter(expr=col("difficulty") == level, **LIGHT).write_parquet(str(dest), ray_remote_args=LIGHT)
    if not any(dest.glob("*.parquet")):
        dest.mkdir(parents=True, exist_ok=True)
        pq.write_table(schema.empty_table(), dest / "empty.parquet")
