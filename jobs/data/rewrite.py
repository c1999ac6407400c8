"""Job `rewrite`: DistilQwen's rewriter + verifier for slow-thinking CoTs.

Reads judged CoT rows (they need a `difficulty` column: run `judge` with that criterion first). CoTs
at `processing.rewrite.levels` (default easy and hard) are rewritten once by the teacher; every CoT
is then verified against its reference and a wrong one is rejected with both answers in the reason.
Output: `<stage>/rewritten/` (resumable parts keyed by `sample_id`) with `rewritten` and
`original_response` columns. A `select` stage with `split_by: difficulty` makes the curriculum split.
"""

from __future__ import annotations

from actors.rewrite import CoTRewriter
from distill_ray.config import JobConfig
from distill_ray.data import schemas
from distill_ray.prompts import data_prompt
from distill_ray.summary import StageResult
from jobs.data.grouped import require_columns
from jobs.data.resumable import run_teacher_stage
from jobs.data.sources import cot_rows_dataset
from jobs.stage import StageEnv


def run(job: JobConfig, stage: StageEnv) -> StageResult:
    cfg = job.processing.rewrite
    ds, schema = cot_rows_dataset(job.dataset.labeled_path, max_line_bytes=job.dataset.max_line_bytes)
    require_columns(schema, {"difficulty": "run a judge stage with criterion difficulty first",
                             "reference": "the verifier needs reference answers"}, "dataset.labeled_path")  # fmt: skip
    out_schema = schemas.rewritten(schema)
    prompts = {name: data_prompt(name, job.processing.prompts) for name in ("rewrite_easy", "rewrite_hard")}
    kwargs = dict(levels=cfg.levels, prompts=prompts, output_schema=out_schema, temperature=cfg.temperature,
                  max_new_tokens=cfg.max_new_tokens, seed=cfg.seed,
                  verify_timeout_s=job.distillation.verify_timeout_s)  # fmt: skip
    result, _ = run_teacher_stage(
        job, stage, job_type="rewrite", out_name="rewritten", ds=ds, key_column="sample_id",
        processor_cls=CoTRewriter, processor_kwargs=kwargs, output_schema=out_schema,
        settings={"rewrite": cfg.model_dump(), "prompts": prompts},
    )  # fmt: skip
    return result
