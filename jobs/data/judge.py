"""Job `judge`: the teacher grades every CoT — difficulty (easy/medium/hard), RV and CD (0-9).

Reads CoT rows (`dataset.labeled_path`, e.g. `<run>/generate/generations`), writes them with one new
column per criterion in `processing.judge.criteria` to `<stage>/judged/` (resumable parts, keyed by
`sample_id`). Unparseable judgements are asked again and finally rejected with the judge's reply.
summary.json gets a histogram per criterion.
"""

from __future__ import annotations

from collections import Counter

import pyarrow.parquet as pq

from actors.judge import CoTJudge
from distill_ray.config import JobConfig
from distill_ray.data import schemas
from distill_ray.prompts import DATA_PROMPTS, data_prompt
from distill_ray.summary import StageResult
from jobs.data.resumable import run_teacher_stage
from jobs.data.sources import cot_rows_dataset
from jobs.stage import StageEnv


def run(job: JobConfig, stage: StageEnv) -> StageResult:
    cfg = job.processing.judge
    ds, schema = cot_rows_dataset(job.dataset.labeled_path, max_line_bytes=job.dataset.max_line_bytes)
    out_schema = schemas.judged(schema, cfg.criteria)
    prompts = {name: data_prompt(name, job.processing.prompts) for name in DATA_PROMPTS}
    result, store = run_teacher_stage(
        job, stage, job_type="judge", out_name="judged", ds=ds, key_column="sample_id",
        processor_cls=CoTJudge, processor_kwargs=dict(judge=cfg, prompts=prompts, output_schema=out_schema),
        output_schema=out_schema, settings={"judge": cfg.model_dump(), "prompts": [prompts[c] for c in cfg.criteria]},
    )  # fmt: skip
    result.metrics["histograms"] = histograms(store.root, cfg.criteria)
    return result


def histograms(folder, criteria: list[str]) -> dict[str, dict[str, int]]:
    """Counts per judged value, e.g. {"rv": {"3": 10, "4": 7}}, read from the small columns only."""
    table = pq.read_table(folder, columns=criteria)
    return {c: dict(sorted(Counter(str(v) for v in table[c].to_pylist() if v is not None).items()))
            for c in criteria}  # fmt: skip
