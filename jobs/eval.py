"""Job `eval`: models side by side on benchmarks, through the same service machinery as the teacher.

Each model (`evaluation.models`, else `evaluation.model`, else `models.student`) is deployed as its own
Serve app and answers every benchmark (`evaluation.benchmarks`, else `dataset`)
`evaluation.num_samples` times; every answer is verified. Per-row results go to
`<stage>/results/<model>/<benchmark>/` (Parquet, so anyone can re-score) and the report
(`report.md`, `report.json`, PNG plots) to `<stage>/`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from distill_ray.config import JobConfig
from distill_ray.data.part_store import export_rejected
from distill_ray.errors import ConfigError
from distill_ray.eval.eval_sets import Benchmark, group_lookup, resolve_benchmarks
from distill_ray.eval.report import write_report
from distill_ray.models.teachers import model_teacher
from distill_ray.summary import StageResult
from jobs.data.generate import generate_samples
from jobs.stage import StageEnv
from jobs.teachers import reach_teachers

ROW_COLUMNS = ["id", "sample_index", "correct", "completion_tokens", "format_reward", "finish_reason"]


def models_to_evaluate(job: JobConfig) -> dict[str, str]:
    ev = job.evaluation
    if ev.models:
        return dict(ev.models)
    spec = ev.model or job.models.student
    if not spec:
        raise ConfigError("evaluation.model", "set evaluation.models, evaluation.model or models.student")
    return {"model": spec}


def run(job: JobConfig, stage: StageEnv) -> StageResult:
    ev = job.evaluation
    inference = job.inference.model_copy(update={
        "temperature": ev.temperature,
        "num_samples": ev.num_samples,
        "max_new_tokens": ev.max_new_tokens or job.inference.max_new_tokens,
        "seed": job.inference.seed if job.inference.seed is not None else 0,
    })  # fmt: skip
    distillation = job.distillation.model_copy(update={"keep": "all"})
    benchmarks = resolve_benchmarks(ev.benchmarks, job.dataset, job.inference.user_template)
    models = models_to_evaluate(job)
    result = StageResult(name=stage.name, job_type="eval")
    rows: list[dict] = []
    stores = []
    for index, (label, spec) in enumerate(models.items()):
        app_name = f"eval-{stage.name}-{index}"
        with reach_teachers([model_teacher(spec, inference)], app_name, inference.serve) as (model,):
            for bench in benchmarks:
                bench_job = job.model_copy(update={"dataset": bench.dataset})
                bench_inf = inference.model_copy(update={"user_template": bench.user_template})
                out = generate_samples(bench_job, stage, [model.with_inference(bench_inf)], distillation,
                                       f"results/{label}/{bench.name}", kept_dir=None)  # fmt: skip
                result.rows_in += out.records_in
                result.rows_out += out.totals.counts.rows_out
                result.count_rejects(list(out.totals.counts.reasons.elements()))
                stores.append(out.store)
                rows += _report_rows(out.samples_dir, label, bench)
    export_rejected(stores, stage.rejected_file, stage.name)
    group_fields = sorted({f for b in benchmarks for f in b.group_fields})
    files = write_report(rows, stage.output_dir, ev.ks, group_fields)
    result.metrics = _headline(files["json"], models, benchmarks)
    result.outputs = {"results": str(stage.output_dir / "results"), **files}
    return result


def _report_rows(samples_dir, label: str, bench: Benchmark) -> list[dict]:
    groups = group_lookup(bench)
    rows = pq.read_table(samples_dir, columns=ROW_COLUMNS).to_pylist()
    for row in rows:
        row.update(model=label, benchmark=bench.name, **groups.get(row["id"], dict.fromkeys(bench.group_fields)))
    return rows


def _headline(report_json: str, models: dict[str, str], benchmarks: list[Benchmark]) -> dict:
    """pass@k and accuracy per model and benchmark, for summary.json."""
    summary = json.loads(Path(report_json).read_text())["results"]
    return {
        "models": models,
        "benchmarks": [b.name for b in benchmarks],
        "results": {
            m: {b: {k: v for k, v in summary[m][b].items() if k.startswith("pass@") or k == "accuracy"}
                for b in summary[m]}
            for m in summary
        },
    }  # fmt: skip
