"""Problems as a Ray Dataset: read a source lazily, normalise each record, keep the reason for bad ones.

Malformed JSON lines, missing fields and empty prompts become rows with an `error` column instead of
crashing the read; the job streams the good rows onward and quarantines the rest.
"""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa
import ray

from distill_ray.config import DatasetConfig
from distill_ray.datasets import RowError, Source, normalize_row, parse_json_line, procedural_arithmetic

PROBLEM_SCHEMA = pa.schema([(name, pa.string()) for name in ("id", "problem", "reference", "error", "raw")])


def read_problem_records(source: Source, cfg: DatasetConfig) -> tuple[ray.data.Dataset, DatasetConfig]:
    """Raw records as a Dataset with one `raw` text column (JSON), plus the field mapping to apply."""
    if source.kind == "procedural":
        rows = procedural_arithmetic(cfg.limit or 100, cfg.seed, source.max_operand, source.split)
        ds = ray.data.from_items([{"raw": json.dumps(r)} for r in rows])
        cfg = cfg.model_copy(update={"prompt_field": "question", "answer_field": "answer", "id_field": "id",
                                     "answer_format": "plain"})  # fmt: skip
        return ds, cfg
    if source.kind == "parquet":
        ds = ray.data.read_parquet(str(source.path))
        ds = ds.map_batches(_records_to_raw, batch_format="pandas")
    else:
        ds = ray.data.read_text(str(source.path)).rename_columns({"text": "raw"})
    if cfg.limit:
        ds = ds.limit(cfg.limit)
    return ds, cfg


def _records_to_raw(batch: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"raw": [json.dumps(r, default=str) for r in batch.to_dict("records")]})


def normalize_problems(batch: pd.DataFrame, cfg: dict) -> pa.Table:
    """Ray Data UDF: `raw` JSON text -> problem columns, or `error` with the reason."""
    dataset_cfg = DatasetConfig.model_validate(cfg)
    out = []
    for raw in batch["raw"]:
        try:
            row = normalize_row(parse_json_line(raw), dataset_cfg)
            out.append({**row, "error": None, "raw": None})
        except RowError as exc:
            out.append({"id": None, "problem": None, "reference": None, "error": str(exc), "raw": raw})
    return pa.Table.from_pylist(out, schema=PROBLEM_SCHEMA)


def problems_dataset(source: Source, cfg: DatasetConfig) -> ray.data.Dataset:
    records, cfg = read_problem_records(source, cfg)
    return records.map_batches(normalize_problems, fn_kwargs={"cfg": cfg.model_dump()}, batch_format="pandas")
