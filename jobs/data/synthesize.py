"""Job `synthesize`: EasyDistill's data synthesis operators, one per stage (`processing.synthesize`).

- `expand_instruction`, `refine_instruction`: read instructions from `dataset.instruction_path`
  (any problem source; `dataset.prompt_field` names the instruction) and write new instruction rows;
- `extract_pairs`: reads raw text the same way (`dataset.prompt_field` names the text field, no answer
  field needed) and writes instruction/response pairs;
- `cot_long_to_short`, `cot_short_to_long`: read CoT rows from `dataset.labeled_path` and write them
  shortened / extended, verified again when they carry a reference.
Output: `<stage>/synthesized/` (resumable parts). Unparseable replies are retried, then rejected.
"""

from __future__ import annotations

from actors.rewrite import CoTLengthRewriter
from actors.synthesize import InstructionSynthesizer
from distill_ray.config import JobConfig
from distill_ray.data import schemas
from distill_ray.data.sources import resolve_source
from distill_ray.prompts import data_prompt
from distill_ray.summary import StageResult
from jobs.data.resumable import run_teacher_stage
from jobs.data.sources import cot_rows_dataset, problems_dataset
from jobs.stage import StageEnv

COT_OPERATORS = ("cot_long_to_short", "cot_short_to_long")


def run(job: JobConfig, stage: StageEnv) -> StageResult:
    cfg = job.processing.synthesize
    prompt = data_prompt(cfg.operator, job.processing.prompts)
    settings = {"synthesize": cfg.model_dump(), "prompt": prompt}
    common = dict(job_type="synthesize", out_name="synthesized", settings=settings)
    if cfg.operator in COT_OPERATORS:
        ds, schema = cot_rows_dataset(job.dataset.labeled_path, max_line_bytes=job.dataset.max_line_bytes)
        out_schema = schemas.rewritten(schema)
        kwargs = dict(operator=cfg.operator, prompts={cfg.operator: prompt}, output_schema=out_schema,
                      temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed,
                      verify_timeout_s=job.distillation.verify_timeout_s)  # fmt: skip
        result, _ = run_teacher_stage(job, stage, ds=ds, key_column="sample_id", processor_cls=CoTLengthRewriter,
                                      processor_kwargs=kwargs, output_schema=out_schema, **common)  # fmt: skip
        return result
    dataset = job.dataset.model_copy(update={"answer_field": None})  # instructions and texts need no reference
    ds = problems_dataset(resolve_source(dataset.instruction_path), dataset)
    kwargs = dict(synthesize=cfg, prompts={cfg.operator: prompt})
    result, _ = run_teacher_stage(job, stage, ds=ds, key_column="id", processor_cls=InstructionSynthesizer,
                                  processor_kwargs=kwargs, output_schema=schemas.SYNTHESIZED, **common)  # fmt: skip
    return result
