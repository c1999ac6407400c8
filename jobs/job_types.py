"""Every job type, by the name a config's `job_type` gives: the one table `distill-ray run` dispatches through.

A job is a callable `run(job: JobConfig, stage: StageEnv) -> StageResult` (contract in `jobs/stage.py`).
Importing this module imports every job (Ray, torch, transformers: seconds), so the runner imports it only
once a run starts; `validate` never pays for it.
"""

from __future__ import annotations

from collections.abc import Callable

from distill_ray.config import JobConfig
from distill_ray.summary import StageResult
from jobs import eval as eval_job
from jobs.data import collect, curate, generate, judge, pairs, rewrite, select, synthesize
from jobs.stage import StageEnv
from jobs.train import advdistill, dpo, grpo, kd, logits, opd, rm, sft

JobFn = Callable[[JobConfig, StageEnv], StageResult]

JOB_TYPES: dict[str, JobFn] = {
    # data stages (Ray Data; the teacher through Ray Serve)
    "collect": collect.run,
    "generate": generate.run,
    "judge": judge.run,
    "rewrite": rewrite.run,
    "select": select.run,
    "curate": curate.run,
    "pairs": pairs.run,
    "synthesize": synthesize.run,
    # trainers (Ray Train) and the white-box KD's logits extraction
    "logits": logits.run,
    "sft": sft.run,
    "kd": kd.run,
    "advdistill": advdistill.run,
    "dpo": dpo.run,
    "rm": rm.run,
    "grpo": grpo.run,
    "opd": opd.run,
    # evaluation
    "eval": eval_job.run,
}
