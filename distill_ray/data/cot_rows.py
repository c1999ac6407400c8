"""CoT rows of an earlier stage, read in order, with every row a stage cannot use tagged with its reason.

Where it sits: `jobs/data/sources.py:cot_rows_dataset` reads the input of the judge, rewrite, select, curate,
pairs and CoT-synthesis stages with these functions, inside one Ray Data task: a Parquet file or folder
(usually a stage's own output) or a JSON-lines file (often a user's). Pure Python and pyarrow.

- Schema (`cot_schema`): Parquet's own; for JSON lines, one pass over the file before the stage starts
  (`jsonl_schema`): every field a parsed line has, typed as `schemas.COT_COLUMN_TYPES` declares it (a
  `response` is a string, `correct` a boolean, ...), or for fields of the user's own, as their values say
  (a field whose values are of several JSON kinds, or arrays / objects, is kept as JSON text).
- Rows (`cot_rows`): a bad line (`distill_ray/jsonl.py`), a declared field holding another JSON type, and
  a repeated `sample_id` (the first one wins: resumable stages key their parts on it) are tagged:
  `REJECT_COLUMN` holds the located reason and `PAYLOAD_COLUMN` the line or record as JSON, and the stage
  counts and quarantines the row. Rows without a `sample_id` get one from a hash of problem and response,
  so two identical CoTs are one CoT, and the second is a duplicate.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from distill_ray.data.schemas import COT_COLUMN_TYPES
from distill_ray.data.sources import FirstSeen, Source, SourceRecord, jsonl_records, located, table_records
from distill_ray.jsonl import json_lines, json_type
from distill_ray.rejects import PAYLOAD_COLUMN, REJECT_COLUMN

SAMPLE_ID = pa.field("sample_id", pa.string())
_INFERRED = {frozenset(): pa.string(), frozenset({"string"}): pa.string(), frozenset({"integer"}): pa.int64(),
             frozenset({"number"}): pa.float64(), frozenset({"integer", "number"}): pa.float64(),
             frozenset({"boolean"}): pa.bool_()}  # fmt: skip
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_ACCEPTS = {pa.string(): (str,), pa.int64(): (int,), pa.float64(): (int, float), pa.bool_(): (bool,)}


def is_parquet(path: Path) -> bool:
    return path.is_dir() or path.suffix == ".parquet"


def cot_schema(path: Path, max_line_bytes: int) -> pa.Schema:
    """The rows' schema (with a `sample_id`, which the reader adds when the input has none)."""
    if is_parquet(path):
        import pyarrow.dataset as pads

        schema = pads.dataset(str(path), format="parquet", exclude_invalid_files=True).schema
    else:
        schema = jsonl_schema(path, max_line_bytes)
    return schema if "sample_id" in schema.names else schema.append(SAMPLE_ID)


def jsonl_schema(path: Path, max_line_bytes: int) -> pa.Schema:
    """Every field of the file's parsed lines, in first-seen order, with its declared or inferred type."""
    kinds: dict[str, set[str]] = {}
    for line in json_lines(path, max_line_bytes):
        for name, value in (line.record or {}).items():
            seen = kinds.setdefault(name, set())
            if value is not None:
                seen.add(_kind(value))
    types = {n: COT_COLUMN_TYPES.get(n) or _INFERRED.get(frozenset(k), pa.string()) for n, k in kinds.items()}
    return pa.schema(list(types.items()))


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer" if _INT64_MIN <= value <= _INT64_MAX else "json"  # Arrow's int64 cannot hold it
    return {float: "number", str: "string"}.get(type(value), "json")


def cot_rows(path: Path, schema: pa.Schema, max_line_bytes: int) -> Iterator[dict[str, Any]]:
    """The rows of `path` on `schema` plus the two tag columns (null for a usable row), in the file's order."""
    parquet = is_parquet(path)
    records = table_records(Source("parquet", path=path)) if parquet else jsonl_records(path, max_line_bytes)
    seen = FirstSeen("sample_id")
    for rec in records:
        row, reason = _row(rec, schema, check_types=not parquet)
        if reason is None:
            reason = seen.repeat(row["sample_id"], rec.where)
        if reason is None:
            yield {**row, REJECT_COLUMN: None, PAYLOAD_COLUMN: None}
        else:
            yield tagged(schema, reason, rec)


def _row(rec: SourceRecord, schema: pa.Schema, check_types: bool) -> tuple[dict[str, Any], str | None]:
    """The record's values on `schema` (with its sample_id), or the located reason it cannot be a row. Parquet
    values are typed by their file already; JSON values are checked against the column types."""
    if rec.error is not None:
        return {}, rec.error
    row = {field.name: rec.record.get(field.name) for field in schema}
    for field in schema if check_types else ():
        row[field.name], problem = _fitted(row[field.name], field)
        if problem is not None:
            return {}, located(problem, rec.where)
    if not row.get("sample_id"):
        key = f"{row.get('problem')}\x00{row.get('response')}"
        row["sample_id"] = hashlib.sha1(key.encode()).hexdigest()[:16]
    return row, None


def _fitted(value: Any, field: pa.Field) -> tuple[Any, str | None]:
    """`value` as the column's type, or why it is not: a declared column takes only its own JSON kind, a column of
    the user's own keeps what its inferred type cannot hold as JSON text."""
    if value is None:
        return None, None
    accepts = _ACCEPTS.get(field.type)
    fits = accepts is not None and isinstance(value, accepts) and not (isinstance(value, bool) and bool not in accepts)
    if fits and field.type == pa.int64() and not _INT64_MIN <= value <= _INT64_MAX:
        fits = False
    if fits:
        return (float(value) if field.type == pa.float64() else value), None
    if field.name in COT_COLUMN_TYPES:
        return None, f"wrong type: field '{field.name}' holds {json_type(value)}, not {_expected(field.type)}"
    if field.type == pa.string():
        return json.dumps(value, default=str), None
    return value, None  # a list or struct column of a Parquet input: as read


def _expected(type_: pa.DataType) -> str:
    return {pa.string(): "a string", pa.int64(): "an integer", pa.float64(): "a number", pa.bool_(): "a boolean"}.get(
        type_, str(type_)
    )


def tagged(schema: pa.Schema, reason: str, rec: SourceRecord) -> dict[str, Any]:
    """A row that is only its reason: keyed by where it is (stable across resumes, unique in the file)."""
    payload = rec.record if rec.record is not None else {"where": rec.where, "text": rec.text}
    row = dict.fromkeys(schema.names)
    row["sample_id"] = f"rejected:{rec.where}"
    return {**row, REJECT_COLUMN: reason, PAYLOAD_COLUMN: json.dumps(payload, default=str)}
