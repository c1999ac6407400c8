"""Job `eval`: pass@1 of one model on a benchmark, through the same service machinery as the teacher.

The model (`evaluation.model`, else `models.student`) is deployed as its own Serve app, every problem of
`dataset.instruction_path` is answered `evaluation.num_samples` times at `evaluation.temperature`, and
each answer is verified. Per-row results go to `<stage>/results/` (Parquet) so anyone can re-score;
`<stage>/metrics.json` and summary.json carry pass@1.
"""

from __future__ import annotations

import json

from distill_ray.config import JobConfig
from distill_ray.errors import ConfigError
from distill_ray.summary import StageResult
from jobs.common import StageEnv
from jobs.generate import generate_samples
from jobs.teachers import teacher_target


def run(job: JobConfig, stage: StageEnv) -> StageResult:
    ev = job.evaluation
    model = ev.model or job.models.student
    if not model:
        raise ConfigError("evaluation.model", "set evaluation.model or models.student to the model to evaluate")
    inference = job.inference.model_copy(
        update={
            "temperature": ev.temperature,
            "num_samples": ev.num_samples,
            "max_new_tokens": ev.max_new_tokens or job.inference.max_new_tokens,
            "seed": job.inference.seed if job.inference.seed is not None else 0,
        }
    )
    distillation = job.distillation.model_copy(update={"keep": "all"})
    with teacher_target(model, inference, app_name=f"eval-{stage.name}") as target:
        out = generate_samples(job, stage, target, inference, distillation, "results", kept_dir=None)
    stats = out.stats
    stats.pop("kept", None)
    reasons = stats.pop("reject_reasons")
    metrics = {"model": model, "pass@1": stats.pop("accuracy"), **stats}
    (stage.output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    result = StageResult(name=stage.name, job_type="eval", rows_in=out.records_in, rows_out=stats["samples"])
    result.count_rejects(reasons)
    result.metrics = metrics
    result.outputs = {"results": str(out.samples_dir), "metrics": str(stage.output_dir / "metrics.json")}
    return result
