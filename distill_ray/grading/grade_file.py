"""`distill-ray grade FILE --out OUT.jsonl`: re-grade a file of replies with the grader the pipeline uses.

Where it sits: after any run (or on replies from elsewhere), so old generations and eval results can be
graded again when the grader changes. Reads JSON lines, a JSON array or Parquet (a file or a folder: the
stages' own outputs; a folder's rows in the order of their content, as the trainers read them), writes one JSON
line per input row: the row's own fields (`id` included) plus `correct`, `final_answer`, `no_answer_reason`
and, for a row that cannot be graded, `error`. A bad row (not an object, no reply text) is written with its error
and counted; it never stops the run. Pure Python.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill_ray.errors import InputFileError
from distill_ray.grading.grader import grade
from distill_ray.training.rows import read_rows


@dataclass(frozen=True)
class GradeFields:
    """Which input fields hold the reply, the reference and (optionally) the server's finish_reason."""

    response: str = "response"
    reference: str = "reference"
    finish_reason: str = "finish_reason"


def grade_file(path: str, out: str, fields: GradeFields = GradeFields(), fmt: str = "auto",
               timeout_s: float = 5.0) -> Counter:  # fmt: skip
    """Grade every row of `path` into `out` (JSON lines, replaced); returns the counts by outcome:
    correct, wrong, ungraded (no reference), bad_rows, and no_final_answer (a subset of wrong).
    Raises InputFileError for a missing or unreadable input."""
    rows, unreadable = _read(path)
    counts: Counter = Counter()
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".tmp-{target.name}")
    with tmp.open("w") as fh:
        for record in [*unreadable, *_graded(rows, fields, fmt, timeout_s)]:
            counts[_outcome(record)] += 1
            if record.get("no_answer_reason") and record.get("correct") is False:
                counts["no_final_answer"] += 1
            fh.write(json.dumps(record, default=str) + "\n")
    tmp.replace(target)
    return counts


def summary_line(counts: Counter, out: str) -> str:
    graded = counts["correct"] + counts["wrong"]
    share = f" ({counts['correct'] / graded:.1%} of graded)" if graded else ""
    return (f"graded {sum(counts[k] for k in ('correct', 'wrong', 'ungraded', 'bad_rows'))} rows -> {out}: "
            f"{counts['correct']} correct{share}, {counts['wrong']} wrong ({counts['no_final_answer']} without a "
            f"final answer), {counts['ungraded']} without a reference, {counts['bad_rows']} bad rows")  # fmt: skip


def _read(path: str) -> tuple[list[dict], list[dict]]:
    p = Path(path)
    columns: list[str] = []
    if p.exists() and (p.is_dir() or p.suffix == ".parquet"):
        import pyarrow.parquet as pq

        try:
            columns = list(pq.read_schema(p).names if p.is_file() else pq.ParquetDataset(p).schema.names)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for corrupt files
            raise InputFileError(path, f"not a readable parquet file ({exc})") from None
    rows, unreadable = read_rows(path, [], columns)
    return rows, [{"error": r["reason"], **r["row"]} for r in unreadable]


def _graded(rows: list[dict], fields: GradeFields, fmt: str, timeout_s: float) -> Iterator[dict[str, Any]]:
    for row in rows:
        reply = row.get(fields.response)
        if not isinstance(reply, str):
            yield {**row, "error": f"no reply text in field '{fields.response}'"}
            continue
        verdict = grade(reply, row.get(fields.reference), finish_reason=row.get(fields.finish_reason), fmt=fmt,
                        timeout_s=timeout_s)  # fmt: skip
        yield {**row, "correct": verdict.correct, "final_answer": verdict.final_answer,
               "no_answer_reason": verdict.reason}  # fmt: skip


def _outcome(record: dict) -> str:
    if "error" in record:
        return "bad_rows"
    return {True: "correct", False: "wrong", None: "ungraded"}[record["correct"]]
