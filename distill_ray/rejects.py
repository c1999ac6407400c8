"""Rejected rows: `<output_dir>/rejected/<stage>.jsonl`, one JSON line per input row a stage could not use.

Where it sits: every stage that drops rows writes them here, through this module only, so the file has
one format whoever wrote it:

    {"stage": <stage name>, "reason": <short, countable cause>, "key": <input key>, "row": <the row as read>}

`key` is there only for rejects that carry one (the resumable stages key every input row). A reject is
handed in as `{"reason", "row"}` (plus `key`); the stage name is added here.

Two ways to write, because stages keep their rejects in two ways:
- `append_rejects`: the trainer jobs, which check their rows once per run on the driver and add to the file
  as they go (a job that reads several files appends for each);
- `replace_rejects`: stages that can rebuild the whole list (the group stages from their datasets, the
  resumable stages from their committed parts). The file is written under a temp name and renamed over the
  old one, so a re-run never duplicates rows and a killed run leaves the old file or the new one, never half.
Pure Python and pyarrow, no Ray.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

import pyarrow as pa

# Columns that tag a row in flight that a reader or a group function could not use: the reason, and the row
# (or bad line) as JSON. A tagged row is counted and written here, never processed.
REJECT_COLUMN, PAYLOAD_COLUMN = "_reject", "_payload"


def tagged_schema(schema: pa.Schema) -> pa.Schema:
    """`schema` plus the two tag columns."""
    return schema.append(pa.field(REJECT_COLUMN, pa.string())).append(pa.field(PAYLOAD_COLUMN, pa.string()))


def rejected_record(stage: str, reject: dict[str, Any]) -> dict[str, Any]:
    """The JSON line written for one reject {"reason", "row"} (and "key" where it has one)."""
    record = {"stage": stage, "reason": reject["reason"]}
    if "key" in reject:
        record["key"] = reject["key"]
    record["row"] = reject.get("row")
    return record


def append_rejects(path: Path, stage: str, rejects: Iterable[dict[str, Any]]) -> int:
    """Append `rejects` to the stage's rejected file (left untouched when there are none); returns the count."""
    rejects = list(rejects)
    if not rejects:
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        return _write(fh, stage, rejects)


def replace_rejects(path: Path, stage: str, rejects: Iterable[dict[str, Any]]) -> int:
    """Write `rejects` (streamed: any iterable) as the whole rejected file, atomically; returns the count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    try:
        with tmp.open("w") as fh:
            n = _write(fh, stage, rejects)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    return n


def _write(fh: TextIO, stage: str, rejects: Iterable[dict[str, Any]]) -> int:
    n = 0
    for reject in rejects:
        fh.write(json.dumps(rejected_record(stage, reject), default=str) + "\n")
        n += 1
    return n
