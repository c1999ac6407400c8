"""Sources as Ray Datasets: problems (generate, synthesize, eval, grpo), collected problems and CoT rows.

Every source is read by one Ray Data task, in the source's order, with the pure readers of `distill_ray/data`
(`sources.py` for problems, `cot_rows.py` for CoT rows; both read JSON lines with `distill_ray/jsonl.py`). Why
one ordered task and not Ray's `read_text` / `read_json` / `read_parquet`:
- those fail the whole read on one bad line (`read_text` decodes the whole file at once, so one byte that
  is not UTF-8 is a `UnicodeDecodeError` for the stage; `read_json` stops at the first malformed line or at a
  column that changes type), where a careful reader quarantines that line, with its number, and goes on;
- `read_text` splits at U+2028 and the other characters `str.splitlines` treats as line breaks, which JSON
  allows inside strings, and holds each file whole in memory; the line reader splits at "\\n" only and holds
  at most one line (up to `dataset.max_line_bytes`) besides the block being built;
- a repeated id can only be caught exactly, with the first record winning, by a reader that sees the
  records in order; parallel reads would make "first" a race.
It stays lazy and streaming: the task yields blocks as it reads, and the stages downstream start on the
first ones. Reading is never the slow part of a stage that waits on a teacher.
Bad records become rows with a reason (`error` for problems, the tag columns for CoT rows) that the stage
quarantines to `rejected/<stage>.jsonl` and counts, so rows_in = rows_out + rows_rejected.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import ray

from distill_ray.config import DatasetConfig
from distill_ray.data import schemas
from distill_ray.data.cot_rows import cot_rows, cot_schema, is_parquet
from distill_ray.data.sources import Source, problem_rows
from distill_ray.jsonl import MAX_LINE_BYTES
from distill_ray.rejects import tagged_schema
from jobs.stage import LIGHT

ROWS_PER_BATCH = 1024  # rows per table the reading task yields; Ray Data packs them into blocks


def ordered_read(tables: Callable[..., Iterable[pa.Table]], table_schema: pa.Schema, **kwargs: Any) -> ray.data.Dataset:
    """A lazy Dataset of the tables `tables(**kwargs)` yields (each with `table_schema`), produced by one Ray task in
    order (see above)."""
    return ray.data.from_items([{"read": 0}]).map_batches(
        _run_reader, fn_kwargs={"tables": tables, "table_schema": table_schema, "kwargs": kwargs},
        batch_size=1, batch_format="pyarrow", **LIGHT,
    )  # fmt: skip


def _run_reader(_: pa.Table, tables: Callable[..., Iterable[pa.Table]], table_schema: pa.Schema,
                kwargs: dict[str, Any]) -> Iterator[pa.Table]:  # fmt: skip
    empty = True
    for table in tables(**kwargs):
        empty = False
        yield table
    if empty:  # an empty source still has its columns, so filters on them downstream work
        yield table_schema.empty_table()


def batched_tables(rows: Iterable[dict[str, Any]], schema: pa.Schema) -> Iterator[pa.Table]:
    """`rows` as tables of ROWS_PER_BATCH rows with exactly `schema` (missing keys are nulls)."""
    it = iter(rows)
    while batch := list(itertools.islice(it, ROWS_PER_BATCH)):
        yield pa.Table.from_pylist([{c: r.get(c) for c in schema.names} for r in batch], schema=schema)


def problems_dataset(source: Source, cfg: DatasetConfig) -> ray.data.Dataset:
    """`schemas.PROBLEM` rows of `source`; a bad record carries its reason in `error` and its text in `raw`."""
    return ordered_read(_problem_tables, schemas.PROBLEM, source=source, cfg=cfg)


def _problem_tables(source: Source, cfg: DatasetConfig) -> Iterator[pa.Table]:
    return batched_tables(problem_rows(source, cfg), schemas.PROBLEM)


def cot_rows_dataset(spec: str | None, key: str = "dataset.labeled_path",
                     max_line_bytes: int = MAX_LINE_BYTES) -> tuple[ray.data.Dataset, pa.Schema]:  # fmt: skip
    """Rows of an earlier stage (Parquet file/folder, or JSON lines) and their schema. The dataset also has the
    two tag columns (`distill_ray.rejects.tagged_schema`): a row with a reason there is
    quarantined by the stage (`actors/part_writer.py`, `jobs/data/grouped.py`); the schema does not list them."""
    from distill_ray.errors import ConfigError, InputFileError

    if not spec:
        raise ConfigError(key, "this job reads the rows written by an earlier stage; set it")
    path = Path(spec).expanduser()
    if not path.exists():
        raise InputFileError(str(path), "not found (did the stage that writes it run?)")
    if not is_parquet(path) and path.suffix not in (".jsonl", ".json"):
        raise ConfigError(key, f"'{spec}' should be a Parquet file or folder, or a .jsonl file")
    schema = cot_schema(path, max_line_bytes)
    tagged = tagged_schema(schema)
    return ordered_read(_cot_tables, tagged, path=path, schema=schema, max_line_bytes=max_line_bytes), schema


def _cot_tables(path: Path, schema: pa.Schema, max_line_bytes: int) -> Iterator[pa.Table]:
    return batched_tables(cot_rows(path, schema, max_line_bytes), tagged_schema(schema))
