"""Driver side of the per-problem data stages (select, curate, pairs): Ray Data groupby -> pure function.

The rows are grouped by problem id (a distributed shuffle; no process holds the whole dataset), a
pure function from `distill_ray` turns each group into output records plus a reason for every input
row it does not use, and the records are written to `<stage>/<out_name>/`. These stages call no
teacher and are deterministic, so a re-run simply recomputes them: the output folder is written
under a temp name and swapped in whole, and a killed run leaves the previous result (or nothing),
never a mix. Counts are in input rows: rows_in = rows_out + rows_rejected.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import ray
from ray.data.expressions import col

from distill_ray.rejects import PAYLOAD_COLUMN, REJECT_COLUMN, replace_rejects, tagged_schema
from distill_ray.summary import StageResult
from jobs.stage import LIGHT, StageEnv

REJECT, PAYLOAD = REJECT_COLUMN, PAYLOAD_COLUMN
GroupFn = Callable[..., tuple[list[dict[str, Any]], list[tuple[dict[str, Any], str]]]]


def _apply_group(group: pa.Table, group_fn: GroupFn, fn_kwargs: dict[str, Any], out_schema: pa.Schema) -> pa.Table:
    records, rejects = group_fn(group.to_pylist(), **fn_kwargs)
    rows = [{**{c: r.get(c) for c in out_schema.names}, REJECT: None, PAYLOAD: None} for r in records]
    rows += [{**dict.fromkeys(out_schema.names), REJECT: reason, PAYLOAD: json.dumps(row, default=str)}
             for row, reason in rejects]  # fmt: skip
    return pa.Table.from_pylist(rows, schema=tagged_schema(out_schema))


def group_apply(ds: ray.data.Dataset, key: str, group_fn: GroupFn, fn_kwargs: dict[str, Any],
                out_schema: pa.Schema) -> ray.data.Dataset:  # fmt: skip
    """Rows grouped by `key`, each group through `group_fn`: a materialised dataset of output records
    and rejections (tagged with `_reject` / `_payload`), kept in the object store across the cluster."""
    if ds.count() == 0:  # Ray's hash shuffle cannot sort column-less blocks
        return ray.data.from_arrow(tagged_schema(out_schema).empty_table())
    return ds.groupby(key).map_groups(
        _apply_group, fn_kwargs=dict(group_fn=group_fn, fn_kwargs=fn_kwargs, out_schema=out_schema),
        batch_format="pyarrow", **LIGHT,
    ).materialize()


def kept(tagged: ray.data.Dataset) -> ray.data.Dataset:
    return tagged.filter(expr=col(REJECT).is_null(), **LIGHT).drop_columns([REJECT, PAYLOAD], **LIGHT)


def write_output(stage: StageEnv, out_name: str, ds: ray.data.Dataset, schema: pa.Schema) -> Path:
    """Write `ds` to `<stage>/<out_name>/` via a temp folder swapped in whole."""
    out_dir = stage.output_dir / out_name
    tmp = stage.output_dir / f".tmp-{out_name}"
    shutil.rmtree(tmp, ignore_errors=True)
    ds.write_parquet(str(tmp), ray_remote_args=LIGHT)
    if not any(tmp.glob("*.parquet")):
        tmp.mkdir(parents=True, exist_ok=True)
        pq.write_table(schema.empty_table(), tmp / "empty.parquet")
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir


def run_group_stage(stage: StageEnv, ds: ray.data.Dataset, *, job_type: str, out_name: str, group_fn: GroupFn,
                    fn_kwargs: dict[str, Any], out_schema: pa.Schema, key: str = "id") -> StageResult:  # fmt: skip
    """`ds` (rows with the tag columns: those its reader could not use carry their reason) grouped by `key`
    through `group_fn`; outputs written, every unused input row quarantined with its reason and counted."""
    ds = ds.materialize()  # read once: counted, split, grouped and its rejects exported from the object store
    rows_in = ds.count()
    unreadable = ds.filter(expr=col(REJECT).is_not_null(), **LIGHT)
    tagged = group_apply(kept(ds), key, group_fn, fn_kwargs, out_schema)
    out_dir = write_output(stage, out_name, kept(tagged), out_schema)
    reasons = export_rejects([unreadable, tagged], stage)
    result = StageResult(name=stage.name, job_type=job_type, rows_in=rows_in)
    result.count_rejects(list(reasons.elements()))
    result.rows_out = rows_in - result.rows_rejected
    result.metrics = {"records_written": _count_rows(out_dir)}
    result.outputs = {out_name: str(out_dir)}
    return result


def export_rejects(tagged: list[ray.data.Dataset], stage: StageEnv) -> Counter:
    """Stream the tagged datasets' rejected rows into rejected/<stage>.jsonl (replacing it); count kinds."""
    kinds: Counter = Counter()

    def rejects():
        for ds in tagged:
            for row in ds.filter(expr=col(REJECT).is_not_null(), **LIGHT).select_columns([REJECT, PAYLOAD], **LIGHT).iter_rows():
                kinds[row[REJECT].split(":")[0]] += 1
                yield {"reason": row[REJECT], "row": json.loads(row[PAYLOAD])}

    replace_rejects(stage.rejected_file, stage.name, rejects())
    return kinds


def _count_rows(folder: Path) -> int:
    return sum(pq.read_metadata(p).num_rows for p in folder.glob("*.parquet"))


def require_columns(schema: pa.Schema, needed: dict[str, str], key: str) -> None:
    """ConfigError naming the first missing input column and the stage that would have written it."""
    from distill_ray.errors import ConfigError

    for column, producer in needed.items():
        if column not in schema.names:
            raise ConfigError(key, f"input rows have no '{column}' column ({producer})")
