"""Ray Data callable class that makes a row processor resumable: one batch in, one committed part out.

Where it sits: the last operator of every teacher-calling data stage. It skips input rows whose key an
earlier run already committed (read once from the stage's `PartStore`), hands the rest to a row
processor (the CoT generator, the judge, the rewriter, a synthesis operator), and commits the
processor's output rows and rejections as one atomic part. It returns one small manifest row per
batch, which is all the driver ever sees of the data.

A row processor is any class with
- `output_schema: pa.Schema` (one schema for every part, so parts always read back together),
- `teacher_calls: int` (a running count of requests it sent),
- `process(rows: list[dict]) -> list[Outcome]`, one outcome per input row, in order.
An outcome either carries output rows (possibly several: samples of one problem) or a rejection
reason, so every input row is accounted for: rows_in = rows_out + rows_rejected. An input row its reader
tagged as unusable (a reason in `distill_ray.rejects.REJECT_COLUMN`: a bad line, a wrong type, a repeated
key) is rejected with that reason and never reaches the processor.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from distill_ray.data.part_store import PartCounts, PartStore
from distill_ray.rejects import PAYLOAD_COLUMN, REJECT_COLUMN

MANIFEST_SCHEMA = pa.schema([("part", pa.string()), ("rows_in", pa.int64()), ("rows_out", pa.int64()),
                             ("rows_rejected", pa.int64()), ("records_written", pa.int64()),
                             ("teacher_calls", pa.int64()), ("completion_tokens", pa.int64())])  # fmt: skip


@dataclass
class Outcome:
    """What became of one input row: output rows, or a rejection reason."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    reason: str | None = None


def table_from_rows(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Rows -> a table with exactly `schema` (missing keys become nulls, extra keys are dropped)."""
    return pa.Table.from_pylist([{c: r.get(c) for c in schema.names} for r in rows], schema=schema)


def completion_tokens(rows: list[dict[str, Any]]) -> int:
    """The teacher tokens the rows hold in `completion_tokens` (a number, or a list per group), 0 without any: the
    driver's progress bar shows them per second."""
    total = 0
    for row in rows:
        value = row.get("completion_tokens")
        if isinstance(value, int):
            total += value
        elif isinstance(value, list):
            total += sum(v for v in value if isinstance(v, int))
    return total


class PartWriter:
    def __init__(self, processor_cls: type, processor_kwargs: dict[str, Any], store_root: str, fingerprint: str,
                 run_id: str, key_column: str, key_prefix: str = ""):  # fmt: skip
        self.store = PartStore(store_root, fingerprint)
        self.done = self.store.done_keys()
        self.run_id = run_id
        self.key_column, self.key_prefix = key_column, key_prefix
        self.processor = processor_cls(**processor_kwargs)

    def key(self, row: dict[str, Any]) -> str:
        return f"{self.key_prefix}{row[self.key_column]}"

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = [r for r in batch.to_pylist() if self.key(r) not in self.done]
        if not rows:
            return MANIFEST_SCHEMA.empty_table()
        calls_before = self.processor.teacher_calls
        outcomes = self._outcomes(rows)
        out_rows: list[dict[str, Any]] = []
        rejects: list[dict[str, Any]] = []
        counts = PartCounts(rows_in=len(rows), reasons=Counter())
        for row, outcome in zip(rows, outcomes):
            if outcome.reason is not None:
                shown = json.loads(row[PAYLOAD_COLUMN]) if row.get(PAYLOAD_COLUMN) else _untagged(row)
                rejects.append({"reason": outcome.reason, "key": self.key(row), "row": shown})
                counts.rows_rejected += 1
                counts.reasons[outcome.reason.split(":")[0]] += 1  # the reason's kind, without the details
            else:
                out_rows.extend(outcome.rows)
                counts.rows_out += 1
        counts.records_written = len(out_rows)
        counts.teacher_calls = self.processor.teacher_calls - calls_before
        keys = [self.key(r) for r in rows]
        table = table_from_rows(out_rows, self.processor.output_schema) if out_rows else None
        name = self.store.commit(table, rejects, keys, counts, self.run_id)
        self.done.update(keys)
        return pa.Table.from_pylist([{"part": name, "rows_in": counts.rows_in, "rows_out": counts.rows_out,
                                      "rows_rejected": counts.rows_rejected,
                                      "records_written": counts.records_written,
                                      "teacher_calls": counts.teacher_calls,
                                      "completion_tokens": completion_tokens(out_rows)}],
                                    schema=MANIFEST_SCHEMA)  # fmt: skip

    def _outcomes(self, rows: list[dict[str, Any]]) -> list[Outcome]:
        """One outcome per row: tagged rows rejected with their reason, the others from the processor."""
        usable = [_untagged(r) for r in rows if not r.get(REJECT_COLUMN)]
        processed = iter(self.processor.process(usable) if usable else [])
        outcomes = [Outcome(reason=r[REJECT_COLUMN]) if r.get(REJECT_COLUMN) else next(processed, None) for r in rows]
        if None in outcomes or next(processed, None) is not None:
            name = type(self.processor).__name__
            raise RuntimeError(f"{name} did not return one outcome for each of its {len(usable)} rows")
        return outcomes


def _untagged(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in (REJECT_COLUMN, PAYLOAD_COLUMN)}
