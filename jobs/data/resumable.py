"""Driver side of a resumable, teacher-calling data stage (generate, judge, rewrite, synthesize).

    store = open_store(stage, "judged", settings)           # drops stale parts and orphans
    manifests = resumable_map(ds, store, run_id, Processor, kwargs, key_column="sample_id", ...)
    totals = drain(stage, store, run_id, [manifests], schema)   # runs the pipeline, returns the counts
    export_rejected([store], stage.rejected_file, stage.name)  # rejected/<stage>.jsonl from all parts

The data never passes through the driver: `PartWriter` actors commit each batch as a part and hand
back one manifest row. Re-running the same command skips every committed input key, so a killed run
finishes without repeating teacher calls; `stage_result` reports how many were reused. A teacher that
stays down stops the stage with a message saying the finished parts are kept.
"""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import ray

from actors.part_writer import PartWriter
from actors.teacher_client import TeacherUnavailable
from distill_ray.config import JobConfig
from distill_ray.data.part_store import PartStore, StoreTotals, export_rejected, fingerprint
from distill_ray.models.loading import model_identity
from distill_ray.models.teachers import model_teacher
from distill_ray.summary import StageResult
from jobs.console import StageProgress
from jobs.stage import LIGHT, StageEnv
from jobs.teachers import reach_teachers

log = logging.getLogger(__name__)

CALLER_CPUS = 0.25  # callers mostly wait on the teacher; leave the cores to replicas and workers
PROGRESS_EVERY_S = 15.0


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def open_store(stage: StageEnv, name: str, settings: Any) -> PartStore:
    """The stage's part folder `<stage>/<name>/`, prepared for (re)use under these settings."""
    store = PartStore(stage.output_dir / name, fingerprint(settings))
    kept = store.prepare()
    if kept:
        log.info("%s: resuming, %d committed part(s) found in %s", stage.name, kept, store.root)
    return store


def resumable_map(ds: ray.data.Dataset, store: PartStore, run_id: str, processor_cls: type,
                  processor_kwargs: dict[str, Any], *, key_column: str, key_prefix: str = "",
                  concurrency: int = 2, batch_size: int = 4) -> ray.data.Dataset:  # fmt: skip
    """`ds` through a pool of PartWriter actors; the result is a dataset of manifest rows. The input is cut into
    blocks of `batch_size` rows first, so that every caller of the pool gets batches (see `split_blocks`)."""
    return split_blocks(ds, batch_size).map_batches(
        PartWriter,
        fn_constructor_kwargs=dict(
            processor_cls=processor_cls,
            processor_kwargs=processor_kwargs,
            store_root=str(store.root),
            fingerprint=store.fingerprint,
            run_id=run_id,
            key_column=key_column,
            key_prefix=key_prefix,
        ),  # fmt: skip
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=concurrency),
        num_cpus=CALLER_CPUS,
    )


def split_blocks(ds: ray.data.Dataset, rows: int) -> ray.data.Dataset:
    """`ds` in blocks of at most `rows` rows. Ray Data hands a whole block to one actor of a pool, and our sources
    are read as blocks of up to 1024 rows (jobs/data/sources.py), so without this one caller would get every batch
    while the others idle, halving (or worse) the sequences in flight at the teacher. Ray's streaming repartition
    takes no remote args and would ask 1 CPU per task, which a 2-core box with replicas and callers holding their
    shares cannot give (the stage hangs): it gets the light tasks' share, which also lets Ray fuse it into the
    reading task before it."""
    out = ds.repartition(target_num_rows_per_block=rows)
    out._logical_plan.dag.ray_remote_args.update(LIGHT)  # no public way to size it (Ray 2.60)
    return out


def drain(stage: StageEnv, store: PartStore, run_id: str, manifests: list[ray.data.Dataset],
          schema: pa.Schema, total: int | None = None) -> StoreTotals:  # fmt: skip
    """Run the pipeline(s) to the end with a progress bar (rows done of `total`, the rows this run has to do, when
    known; teacher tokens/s), then total every committed part."""
    ds = manifests[0].union(*manifests[1:]) if len(manifests) > 1 else manifests[0]
    done = rejected = parts = 0
    last = time.time()
    try:
        with StageProgress(stage.name, total, _relative(store.root, stage.output_dir)) as bar:
            for m in ds.iter_rows():
                done, rejected, parts = done + m["rows_in"], rejected + m["rows_rejected"], parts + 1
                bar.update(m["rows_in"], m["completion_tokens"])
                if time.time() - last >= PROGRESS_EVERY_S:
                    log.debug("%s: %d rows done in %d part(s), %d rejected", stage.name, done, parts, rejected)
                    last = time.time()
            bar.finish()
    except Exception as exc:  # noqa: BLE001 - re-raised with what the user needs to know
        reason = _teacher_down(exc)
        if reason is None:
            raise
        saved = store.totals(run_id).parts
        raise TeacherUnavailable(f"{reason}; {saved} finished part(s) are saved in {store.root}: "
                                 "re-run the same command to resume once the teacher is back") from None  # fmt: skip
    store.ensure_readable(schema)
    return store.totals(run_id)


def _teacher_down(exc: BaseException) -> str | None:
    """The message of a TeacherUnavailable inside Ray Data's wrapped exceptions, if that is what stopped it.

    Ray re-raises a worker's exception as a RayTaskError that is also an instance of the original type and
    carries the original as `cause`; Ray Data may wrap that again (`__cause__`). The message is the
    original's own, never the traceback text around it."""
    todo: list[BaseException] = [exc]
    visited: set[int] = set()
    while todo:
        seen = todo.pop(0)
        if id(seen) in visited:
            continue
        visited.add(id(seen))
        if isinstance(seen, TeacherUnavailable):
            original = getattr(seen, "cause", None)
            return str(original if isinstance(original, TeacherUnavailable) else seen).splitlines()[0]
        todo += [e for e in (getattr(seen, "cause", None), seen.__cause__, seen.__context__)
                 if isinstance(e, BaseException)]  # fmt: skip
    return None


def _relative(path: Path, base: Path) -> str:
    try:
        return str(Path(path).relative_to(base))
    except ValueError:
        return str(path)


def rows_to_do(store: PartStore, *inputs: ray.data.Dataset) -> int:
    """How many rows the stage's manifests will report this run: the rows of every input fed to `store` (one per
    map: generate has one per teacher, and only one of them holds the malformed rows), less those committed by an
    earlier run. Counting reads each input once more, a small cost next to the teacher calls."""
    return max(0, sum(ds.count() for ds in inputs) - len(store.done_keys()))


def stage_result(stage: StageEnv, job_type: str, totals: StoreTotals, outputs: dict[str, Path | str]) -> StageResult:
    """summary.json's entry: counts over all committed parts, and what this run reused."""
    c = totals.counts
    result = StageResult(name=stage.name, job_type=job_type, rows_in=c.rows_in, rows_out=c.rows_out)
    result.count_rejects(list(c.reasons.elements()))
    result.metrics = {
        "records_written": c.records_written,
        "teacher_calls": c.teacher_calls - totals.reused_teacher_calls,
        "teacher_calls_reused": totals.reused_teacher_calls,
        "rows_reused": totals.reused_rows,
        "parts": totals.parts,
    }
    result.outputs = {k: str(v) for k, v in outputs.items()}
    return result


def run_teacher_stage(job: JobConfig, stage: StageEnv, *, job_type: str, out_name: str, ds: ray.data.Dataset,
                      key_column: str, processor_cls: type, processor_kwargs: dict[str, Any],
                      output_schema: pa.Schema, settings: Any) -> tuple[StageResult, PartStore]:  # fmt: skip
    """One teacher-calling stage end to end: deploy `models.teacher`, map resumably, total, export rejects."""
    store = open_store(stage, out_name, {"teacher": model_identity(job.models.teacher), "settings": settings})
    run_id = new_run_id()
    teachers = [model_teacher(job.models.teacher, job.inference)]
    with reach_teachers(teachers, f"teacher-{stage.name}", job.inference.serve) as (teacher,):
        manifests = resumable_map(ds, store, run_id, processor_cls, {"teacher": teacher, **processor_kwargs},
                                  key_column=key_column, concurrency=job.inference.concurrency,
                                  batch_size=job.inference.batch_size)  # fmt: skip
        totals = drain(stage, store, run_id, [manifests], output_schema, total=rows_to_do(store, ds))
    export_rejected([store], stage.rejected_file, stage.name)
    return stage_result(stage, job_type, totals, {out_name: store.root}), store
