"""Job `eval`: models side by side on benchmarks, through the same service machinery as the teacher.

Every model (`evaluation.models`, else `evaluation.model`, else `models.student`) that has answers left to give is
deployed once, in one Serve app (`eval-<stage>`, one deployment per model, routed by the OpenAI `model` field, which
is the model's label here; one app per wave, see below), and the models answer every benchmark
(`evaluation.benchmarks`, else `dataset`) `evaluation.num_samples` times, one model after another (measured against
side by side: docs/engines.md, "Keeping the engine full"), so they share one replica's CPU share (`eval_roster`) and
each caller sends enough problems at once to fill the engine's slots (`eval_batch_size`); every answer is verified.
Per-row results go to `<stage>/results/<model>/<benchmark>/` (Parquet, so anyone can re-score) and the report
(`report.md`, `report.json`, PNG plots) to `<stage>/`.

Answers are stored per model and weights, so a re-run (or a run that adds models) deploys only the models with
answers still to give; the others are read back. `evaluation.max_models_deployed` splits those into waves, one app
(and one set of loaded models) at a time, when they would not all fit in memory at once.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from functools import partial
from pathlib import Path

import pyarrow.parquet as pq

from distill_ray.config import DistillationConfig, InferenceConfig, JobConfig
from distill_ray.data.part_store import export_rejected
from distill_ray.errors import ConfigError
from distill_ray.eval.eval_sets import Benchmark, group_lookup, resolve_benchmarks
from distill_ray.eval.report import write_report
from distill_ray.models.in_flight import fill_plan
from distill_ray.models.teachers import Teacher, model_teacher
from distill_ray.summary import StageResult
from jobs.data.generate import GenerationRun, generate_samples, problem_keys, stored_samples, warn_if_underfilled
from jobs.stage import StageEnv
from jobs.teachers import reach_teachers

log = logging.getLogger(__name__)
ROW_COLUMNS = ["id", "sample_index", "correct", "completion_tokens", "format_reward", "finish_reason"]


def models_to_evaluate(job: JobConfig) -> dict[str, str]:
    ev = job.evaluation
    if ev.models:
        return dict(ev.models)
    spec = ev.model or job.models.student
    if not spec:
        raise ConfigError("evaluation.model", "set evaluation.models, evaluation.model or models.student")
    return {"model": spec}


def eval_batch_size(models: dict[str, str], inference: InferenceConfig, configured: int | None) -> int:
    """Problems per caller batch: `configured` (evaluation.batch_size) when set, else the fewest rows that fill every
    served model's engine slots with eval's sampling (`inference` already holds its temperature and num_samples;
    `distill_ray.models.in_flight.FillPlan.rows_needed`), never fewer than `inference.batch_size`. Generation's
    batch_size is often sized for several temperatures: eval asks one, so the same rows would fill half the slots
    (the quickstart's eval: 2 callers x 4 rows x 1 temperature = 8 sequences for 16 slots)."""
    if configured is not None:
        return configured
    needed = [plan.rows_needed() for plan in map(fill_plan, eval_roster(models, inference))]
    rows = max([inference.batch_size, *[n for n in needed if n is not None]])
    if rows > inference.batch_size:
        log.info("eval: %d problems per caller batch (inference.batch_size %d) to fill the engine's slots; "
                 "evaluation.batch_size sets it", rows, inference.batch_size)  # fmt: skip
    return rows


def eval_roster(models: dict[str, str], inference: InferenceConfig) -> list[Teacher]:
    """The models under evaluation as teachers (label order), to be deployed together in one app. On a served engine
    (transformers, vllm) each answers to its label, which is unique where specs may not be (one model twice, or
    specs that derive the same name), and its replicas reserve `1/len(models)` of `inference.serve`'s CPU share:
    the models take turns, so together they reserve what one model did when each had an app of its own (a 2-core
    box could not otherwise place the callers and Ray Data's light tasks beside three replicas). The GPU share is
    not divided: the models of one app are loaded at once, and on GPUs each needs its own memory (on CPU they must
    fit in host memory together; `evaluation.max_models_deployed` bounds how many share an app). An `openai`
    model keeps its own id at its endpoint."""
    served = sum(1 for spec in models.values() if model_teacher(spec, inference).engine != "openai")
    serve = inference.serve.model_copy(update={"num_cpus": inference.serve.num_cpus / max(served, 1)})
    roster = []
    for label, spec in models.items():
        teacher = model_teacher(spec, inference)
        if teacher.engine != "openai":
            teacher = replace(teacher, served_name=label, inference=inference.model_copy(update={"serve": serve}))
        roster.append(teacher)
    return roster


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
    calls = {"teacher_calls": 0, "teacher_calls_reused": 0}  # answers asked now / found stored (a resumed run)
    inference = inference.model_copy(update={"batch_size": eval_batch_size(models, inference, ev.batch_size)})
    asks = {label: {bench.name: _ask(job, inference, bench) for bench in benchmarks} for label in models}
    roster = eval_roster(models, inference)
    runs = _stored_runs(job, stage, dict(zip(models, roster)), distillation, benchmarks, asks)
    to_deploy = [label for label in models if label not in runs]
    if to_deploy:
        warn_if_underfilled(stage.name, eval_roster({label: models[label] for label in to_deploy}, inference))
    # external (`openai`) endpoints load nothing here: one wave for them whatever max_models_deployed says
    external = all(t.engine == "openai" for t in roster)
    per_app = len(to_deploy) if external or not ev.max_models_deployed else ev.max_models_deployed
    waves = [to_deploy[i:i + per_app] for i in range(0, len(to_deploy), per_app)]
    for wave in waves:  # one app at a time, holding at most `per_app` models in memory
        wave_roster = eval_roster({label: models[label] for label in wave}, inference)  # its CPU share per model
        with reach_teachers(wave_roster, f"eval-{stage.name}", inference.serve) as reached:
            for label, model in zip(wave, reached):
                runs[label] = {}
                for bench in benchmarks:
                    bench_job, bench_inf = asks[label][bench.name]
                    runs[label][bench.name] = generate_samples(
                        bench_job, stage, [model.with_inference(bench_inf)], distillation,
                        f"results/{label}/{bench.name}", kept_dir=None, check_fill=False)  # fmt: skip
    for label in models:  # in the configured order, whichever wave (or none) answered
        for bench in benchmarks:
            out = runs[label][bench.name]
            result.rows_in += out.records_in
            result.rows_out += out.totals.counts.rows_out
            result.count_rejects(list(out.totals.counts.reasons.elements()))
            stores.append(out.store)
            calls["teacher_calls"] += out.totals.counts.teacher_calls - out.totals.reused_teacher_calls
            calls["teacher_calls_reused"] += out.totals.reused_teacher_calls
            rows += _report_rows(out.samples_dir, label, bench)
    export_rejected(stores, stage.rejected_file, stage.name)
    group_fields = sorted({f for b in benchmarks for f in b.group_fields})
    files = write_report(rows, stage.output_dir, ev.ks, group_fields)
    result.metrics = {**_headline(files["json"], models, benchmarks), **calls,
                      "models_asked": len(to_deploy), "deploy_waves": len(waves)}  # fmt: skip
    result.outputs = {"results": str(stage.output_dir / "results"), **files}
    return result


def _ask(job: JobConfig, inference: InferenceConfig, bench: Benchmark) -> tuple[JobConfig, InferenceConfig]:
    """The job (its dataset: the benchmark's) and the inference settings (its prompt template) of one benchmark."""
    return (job.model_copy(update={"dataset": bench.dataset}),
            inference.model_copy(update={"user_template": bench.user_template}))  # fmt: skip


def _stored_runs(job: JobConfig, stage: StageEnv, teachers: dict[str, Teacher],
                 distillation: DistillationConfig, benchmarks: list[Benchmark],
                 asks: dict[str, dict[str, tuple[JobConfig, InferenceConfig]]]) -> dict[str, dict[str, GenerationRun]]:
    """Of `teachers` (label -> the model as `eval_roster` makes it), those whose every answer to every benchmark is
    already stored (a re-run, or a run that adds models), label -> benchmark -> their stored run: these are not
    deployed at all. A model retrained in place has new weights
    and so new answers to give (`jobs.data.generate.store_settings`)."""
    ids: dict[str, list[tuple[str, bool]]] = {}  # benchmark -> problem_keys, read once, when some answer is stored

    def problem_ids(bench: Benchmark) -> list[tuple[str, bool]]:
        if bench.name not in ids:
            ids[bench.name] = problem_keys(job.model_copy(update={"dataset": bench.dataset}))
        return ids[bench.name]

    stored = {}
    for label, teacher in teachers.items():
        runs = {}
        for bench in benchmarks:
            bench_job, bench_inf = asks[label][bench.name]
            run = stored_samples(bench_job, stage, [teacher.with_inference(bench_inf)], distillation,
                                 f"results/{label}/{bench.name}", partial(problem_ids, bench))  # fmt: skip
            if run is None:
                break
            runs[bench.name] = run
        else:
            stored[label] = runs
    if stored:
        log.info("%s: every answer of %s is stored; not deploying %s", stage.name, ", ".join(stored),
                 "it" if len(stored) == 1 else "them")  # fmt: skip
    return stored


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
