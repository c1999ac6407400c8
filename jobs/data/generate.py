"""Job `generate`: problems -> samples x temperatures x teachers -> parse, verify, score -> Parquet.

Streaming on Ray Data: the source is read lazily and every teacher (`models.teachers`, else
`models.teacher`) gets its own Serve deployment and its own pool of `CoTGenerator` callers
(`concurrency` each); the pools run side by side and commit scored samples as parts of
`<stage>/generations/` (see jobs/data/resumable.py: a killed run resumes without repeating a problem a
teacher already answered). Each caller sends a batch's requests at once; the stage warns once, with the numbers,
when the callers cannot keep a teacher engine's slots busy (distill_ray/models/in_flight.py, docs/engines.md).
Kept samples (per `distillation.keep`) are then streamed from the parts to `dataset.labeled_path` or
`<stage>/kept/`, ready for SFT or the next stage. A run whose every (problem, teacher) is already stored (a pipeline
resumed after a later stage failed) deploys no teacher: it rewrites the kept rows from the store (`stored_samples`).

Counts are per (problem, teacher): rows_in = rows_out + rows_rejected; `records_written` is samples.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray
from ray.data.expressions import col

from actors.generate import CoTGenerator
from distill_ray.config import DistillationConfig, InferenceConfig, JobConfig
from distill_ray.data import schemas
from distill_ray.data.part_store import PartStore, StoreTotals, export_rejected, fingerprint
from distill_ray.data.sources import resolve_source
from distill_ray.models.loading import model_identity
from distill_ray.models.in_flight import fill_plan, fill_warning
from distill_ray.models.teachers import Teacher, teacher_roster
from distill_ray.summary import StageResult
from jobs.data.resumable import drain, new_run_id, open_store, resumable_map, rows_to_do, stage_result
from jobs.data.sources import problems_dataset
from jobs.stage import LIGHT, StageEnv
from jobs.teachers import reach_teachers

log = logging.getLogger(__name__)

STAT_COLUMNS = ["id", "teacher", "correct", "kept", "format_reward", "completion_tokens"]


@dataclass
class GenerationRun:
    """What one generation pass produced (paths, counts over all committed parts, sample statistics)."""

    samples_dir: Path
    kept_dir: Path | None
    records_in: int
    stats: dict
    totals: StoreTotals
    store: PartStore


def run(job: JobConfig, stage: StageEnv) -> StageResult:
    kept_dir = Path(job.dataset.labeled_path) if job.dataset.labeled_path else stage.output_dir / "kept"
    roster = teacher_roster(job)
    out = stored_samples(job, stage, roster, job.distillation, "generations", partial(problem_keys, job), kept_dir)
    if out is None:
        with reach_teachers(roster, f"teacher-{stage.name}", job.inference.serve) as teachers:
            out = generate_samples(job, stage, teachers, job.distillation, "generations", kept_dir)
    else:
        log.info("%s: every problem is answered by every teacher in %s; not deploying the teachers", stage.name,
                 out.samples_dir)  # fmt: skip
    export_rejected([out.store], stage.rejected_file, stage.name)
    result = stage_result(stage, "generate", out.totals, {"generations": out.samples_dir, "kept": out.kept_dir})
    result.metrics.update(out.stats)
    return result


def generate_samples(
    job: JobConfig,
    stage: StageEnv,
    teachers: list[Teacher],
    distillation: DistillationConfig,
    samples_name: str,
    kept_dir: Path | None,
    check_fill: bool = True,
) -> GenerationRun:
    """Generate (or finish generating) every sample into `<stage>/<samples_name>/` from the reachable
    `teachers` (each asked with its own `inference`), then rewrite `kept_dir` (if given) from it. With `check_fill`,
    first log one warning if the callers cannot keep a teacher engine's slots busy (`warn_if_underfilled`)."""
    if check_fill:
        warn_if_underfilled(stage.name, teachers)
    store = open_store(stage, samples_name, store_settings(teachers, distillation, job.dataset))
    run_id = new_run_id()
    problems = problems_dataset(resolve_source(job.dataset.instruction_path), job.dataset)
    manifests, inputs = [], []
    # Malformed source rows are rejected once, by one teacher's callers: the same teacher in any order of the
    # roster, since the store (keyed by teacher name, not position) is reused when the teachers are reordered.
    rejecter, usable = rejecting_teacher(teachers), problems.filter(expr=col("error").is_null(), **LIGHT)
    for teacher in teachers:
        rows = problems if teacher.name == rejecter else usable
        inputs.append(rows)
        manifests.append(resumable_map(
            rows, store, run_id, CoTGenerator,
            dict(teacher=teacher, distillation=distillation, max_in_flight=fill_plan(teacher).requests_per_caller),
            key_column="id", key_prefix=f"{teacher.name}|",
            concurrency=teacher.inference.concurrency, batch_size=teacher.inference.batch_size,
        ))  # fmt: skip
    totals = drain(stage, store, run_id, manifests, schemas.SAMPLE, total=rows_to_do(store, *inputs))
    if kept_dir is not None:
        write_kept(store, kept_dir)
    return _finished(store, kept_dir, totals)


def rejecting_teacher(teachers: list[Teacher]) -> str:
    """The name of the teacher whose callers reject the malformed source rows: the first by name."""
    return min(t.name for t in teachers)


def write_kept(store: PartStore, kept_dir: Path) -> None:
    """Rewrite `kept_dir` with the stored samples whose `kept` is true (a folder, even when none is)."""
    shutil.rmtree(kept_dir, ignore_errors=True)
    written = ray.data.read_parquet(str(store.root), **LIGHT)
    kept = written.filter(expr=col("kept") == True, **LIGHT)  # noqa: E712 - an expression
    kept.write_parquet(str(kept_dir), ray_remote_args=LIGHT)
    kept_dir.mkdir(parents=True, exist_ok=True)  # exists even when nothing was kept


def problem_keys(job: JobConfig) -> list[tuple[str, bool]]:
    """(id, usable) of every problem row of `job.dataset`, a rejected source record included (usable False)."""
    problems = problems_dataset(resolve_source(job.dataset.instruction_path), job.dataset)
    return [(row["id"], row["error"] is None) for row in problems.select_columns(["id", "error"]).take_all()]


def stored_samples(job: JobConfig, stage: StageEnv, teachers: list[Teacher], distillation: DistillationConfig,
                   samples_name: str, problems: Callable[[], Iterable[tuple[str, bool]]],
                   kept_dir: Path | None = None) -> GenerationRun | None:  # fmt: skip
    """What `generate_samples` with these teachers would return, read from their store without deploying or asking
    them, when every problem of `job.dataset` is answered; None while some are still to ask. `problems()` gives
    (id, usable) per problem row (`problem_keys`; called only when the store holds any answer under these
    settings): every teacher must have answered each usable row, and one of them must have rejected each unusable
    one (`rejecting_teacher` does now; any counts, as a store written before may hold another's rejections). Ids,
    not counts: a source edited in place to the same length still has new problems to ask. The check reads the
    store without changing it, so parts written under other settings stay until a run that will ask again replaces
    them (`open_store`). The generate job uses it to skip deploying its teachers on a resumed run; the eval job, to
    deploy only the models with work left."""
    store = PartStore(stage.output_dir / samples_name, fingerprint(store_settings(teachers, distillation, job.dataset)))
    done = store.committed_keys()
    if not done:
        return None
    for problem, usable in problems():
        asked = [f"{t.name}|{problem}" in done for t in teachers]
        if not (all(asked) if usable else any(asked)):
            return None
    store = open_store(stage, samples_name, store_settings(teachers, distillation, job.dataset))  # done: tidy up
    store.ensure_readable(schemas.SAMPLE)
    if kept_dir is not None:
        write_kept(store, kept_dir)
    return _finished(store, kept_dir, store.totals(new_run_id()))


def _finished(store: PartStore, kept_dir: Path | None, totals: StoreTotals) -> GenerationRun:
    # Only the small columns that the statistics need are read into this process.
    stats = sample_stats(pq.read_table(store.root, columns=STAT_COLUMNS))
    return GenerationRun(store.root, kept_dir, totals.counts.rows_in, stats, totals, store)


def warn_if_underfilled(stage_name: str, teachers: list[Teacher]) -> str | None:
    """Log (once) and return the warning of `distill_ray.models.in_flight.fill_warning` for these teachers' callers
    against their engines' slots, or None when every engine can be kept full."""
    message = fill_warning(stage_name, [fill_plan(t) for t in teachers])
    if message:
        log.warning(message)
    return message


def store_settings(teachers: list[Teacher], distillation: DistillationConfig, dataset) -> dict:
    """What the stored samples depend on (the store's fingerprint): per teacher, its name, its weights
    (`model_identity`: a model retrained in place is asked again), its engine and sampling settings, and, for an
    external `openai` endpoint only, that endpoint's URL; a teacher we deploy answers the same on any port, so its
    URL (a new free port on every run of a benchmark) must not throw its answers away."""
    return {
        "teachers": {t.name: [t.served_name, model_identity(t.spec), t.engine,
                              t.endpoint.base_url if t.engine == "openai" else None, _sampling(t.inference)]
                     for t in teachers},  # fmt: skip
        "distillation": distillation.model_dump(),
        "dataset": dataset.model_dump(exclude={"labeled_path"}),
    }


def _sampling(inference: InferenceConfig) -> dict:
    """The inference settings that change what a teacher writes (not how fast it is asked)."""
    return inference.model_dump(include={"system_prompt", "user_template", "max_new_tokens", "temperature",
                                         "top_p", "num_samples", "seed"})  # fmt: skip


def _problem_count(table) -> int:
    return len(pc.unique(table["id"])) if table.num_rows else 0


def sample_stats(table) -> dict:
    """Counts and rates over all generated samples, overall and per teacher when there are several."""
    stats = _rates(table)
    teachers = sorted(set(table["teacher"].to_pylist())) if table.num_rows else []
    if len(teachers) > 1:
        stats["per_teacher"] = {t: _rates(table.filter(pc.equal(table["teacher"], t))) for t in teachers}
    return stats


def _rates(table) -> dict:
    n = table.num_rows
    correct = table.filter(pc.equal(table["correct"], True)).num_rows if n else 0
    kept = table.filter(pc.field("kept")).num_rows if n else 0
    fmt = pc.sum(pc.greater(table["format_reward"], 0)).as_py() if n else 0
    tokens = pc.mean(table["completion_tokens"]).as_py() if n else None
    return {
        "problems": _problem_count(table),
        "samples": n,
        "correct": correct,
        "kept": kept,
        "accuracy": round(correct / n, 4) if n else None,
        "format_rate": round((fmt or 0) / n, 4) if n else None,
        "mean_completion_tokens": round(tokens, 1) if tokens is not None else None,
    }
