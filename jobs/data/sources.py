"""Problems as a Ray Dataset: read a source lazily, normalise each record, keep the reason for bad ones.

Malformed JSON lines, missing fields and empty prompts become rows with an `error` column instead of
crashing the read; the job streams the good rows onward and quarantines the rest.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import ray

from distill_ray.config import DatasetConfig
from distill_ray.data import schemas
from distill_ray.data.sources import (
    RowError,
    Source,
    hf_dataset_files,
    normalize_row,
    parse_json_line,
    procedural_arithmetic,
)
from jobs.stage import LIGHT


def read_problem_records(source: Source, cfg: DatasetConfig) -> tuple[ray.data.Dataset, DatasetConfig]:
    """Raw records as a Dataset with one `raw` text column (JSON), plus the field mapping to apply."""
    if source.kind == "procedural":
        rows = procedural_arithmetic(cfg.limit or 100, cfg.seed, source.max_operand, source.split)
        ds = ray.data.from_items([{"raw": json.dumps(r)} for r in rows])
        cfg = cfg.model_copy(update={"prompt_field": "question", "answer_field": "answer", "id_field": "id",
                                     "answer_format": "plain"})  # fmt: skip
        return ds, cfg
    if source.kind == "parquet":
        ds = ray.data.read_parquet(str(source.path), ray_remote_args=LIGHT)
        ds = ds.map_batches(_records_to_raw, batch_format="pandas", **LIGHT)
    elif source.kind == "hf_dataset":
        files = [str(p) for p in hf_dataset_files(source.path)]
        ds = ray.data.from_items([{"path": p} for p in files]).flat_map(_arrow_file_records, **LIGHT)
    else:
        ds = ray.data.read_text(str(source.path), ray_remote_args=LIGHT).rename_columns({"text": "raw"}, **LIGHT)
    if cfg.limit:
        ds = ds.limit(cfg.limit)
    return ds, cfg


def _arrow_file_records(item: dict) -> list[dict]:
    """One Arrow stream file of a `datasets` folder -> its records as raw JSON (read in a Ray task)."""
    with pa.memory_map(item["path"]) as source:
        table = pa.ipc.open_stream(source).read_all()
    return [{"raw": json.dumps(r, default=str)} for r in table.to_pylist()]


def _records_to_raw(batch: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"raw": [json.dumps(r, default=str) for r in batch.to_dict("records")]})


def normalize_problems(batch: pd.DataFrame, cfg: DatasetConfig) -> pa.Table:
    """Ray Data UDF: `raw` JSON text -> problem columns, or `error` with the reason."""
    out = []
    for raw in batch["raw"]:
        try:
            row = normalize_row(parse_json_line(raw), cfg)
            out.append({**row, "error": None, "raw": None})
        except RowError as exc:
            # A stable id for the bad record, so a resumed run does not quarantine it twice.
            out.append({"id": f"malformed-{hashlib.sha1(raw.encode()).hexdigest()[:16]}", "error": str(exc), "raw": raw})
    return pa.Table.from_pylist([{c: r.get(c) for c in schemas.PROBLEM.names} for r in out], schema=schemas.PROBLEM)


def problems_dataset(source: Source, cfg: DatasetConfig) -> ray.data.Dataset:
    records, cfg = read_problem_records(source, cfg)
    return records.map_batches(normalize_problems, fn_kwargs={"cfg": cfg}, batch_format="pandas", **LIGHT)


def cot_rows_dataset(spec: str | None, key: str = "dataset.labeled_path") -> tuple[ray.data.Dataset, pa.Schema]:
    """Rows of an earlier stage (Parquet file/folder, or JSON lines) and their schema; rows without a
    `sample_id` get one from a hash of problem and response, so resumes can key on it."""
    import pyarrow.dataset as pads

    from distill_ray.errors import ConfigError, InputFileError

    if not spec:
        raise ConfigError(key, "this job reads the rows written by an earlier stage; set it")
    path = Path(spec).expanduser()
    if not path.exists():
        raise InputFileError(str(path), "not found (did the stage that writes it run?)")
    if path.is_dir() or path.suffix == ".parquet":
        ds = ray.data.read_parquet(str(path), ray_remote_args=LIGHT)
        schema = pads.dataset(str(path), format="parquet", exclude_invalid_files=True).schema
    elif path.suffix in (".jsonl", ".json"):
        ds = ray.data.read_json(str(path), lines=True, ray_remote_args=LIGHT)
        schema = pa.schema(list(zip(ds.schema().names, ds.schema().types)))
    else:
        raise ConfigError(key, f"'{spec}' should be a Parquet file or folder, or a .jsonl file")
    if "sample_id" not in schema.names:
        ds = ds.map_batches(_add_sample_ids, batch_format="pyarrow", **LIGHT)
        schema = schema.append(pa.field("sample_id", pa.string()))
    return ds, schema


def _add_sample_ids(batch: pa.Table) -> pa.Table:
    rows = batch.to_pylist()
    ids = [hashlib.sha1(f"{r.get('problem')}\x00{r.get('response')}".encode()).hexdigest()[:16] for r in rows]
    return batch.append_column("sample_id", pa.array(ids, pa.string()))
