"""Reading and checking the rows every trainer job starts from, before anything is tokenized.

Where it sits: the data stages write Parquet folders or JSONL (labelled rows, AdvDistill groups,
preference pairs, judged CoTs); the trainer jobs' shared driver (`jobs/train/driver.py`: sft, kd,
advdistill, dpo, rm, grpo, logits) reads them here, checks them row by row (a bad row comes back with a
short reason, never an exception) and hands the clean ones to its Ray Train workers. The job-specific
checks (`group_problem`, `pair_problem`) sit next to their datasets in `preference_data.py` and build on
`missing` / `text_problem`. Pure Python, no Ray.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from distill_ray.errors import InputFileError, RowRejected
from distill_ray.jsonl import json_lines, json_type
from distill_ray.training.sft_data import build_chat_messages, prompt_token_ids


def read_rows(path: str, required: list[str], optional: list[str] = ()) -> tuple[list[dict], list[dict]]:
    """Rows of a .parquet file or folder or a .jsonl/.json file with the `required` (and any present
    `optional`) columns, plus rejects {reason, row} for JSON lines that are not records.

    A Parquet input missing a required column is an InputFileError naming it; JSON rows missing one
    are left to the row checks (each JSON line is its own record).
    """
    p = Path(path)
    if not p.exists():
        raise InputFileError(path, "rows file or folder not found")
    if p.is_dir() or p.suffix == ".parquet":
        return _read_parquet(path, required, list(optional)), []
    if p.suffix in (".jsonl", ".json"):
        return _read_json(p)
    raise InputFileError(path, "expected a .parquet file or folder, or a .jsonl/.json file")


def _read_json(p: Path) -> tuple[list[dict], list[dict]]:
    """Records of a .json array or JSON-lines file, plus rejects {reason, row} for lines (or array items) that are
    not records: not UTF-8, blank, too long, not JSON, not an object (distill_ray/jsonl.py)."""
    if _holds_array(p):
        return _read_json_array(p)
    rows, rejects = [], []
    for line in json_lines(p):
        if line.record is None:
            rejects.append({"reason": line.error, "row": {"line": line.number, "text": line.text[:500]}})
        else:
            rows.append(line.record)
    return rows, rejects


def _holds_array(p: Path) -> bool:
    """Whether the file is one JSON array rather than JSON lines (its first character, after a BOM, is '[')."""
    with p.open("rb") as fh:
        head = fh.read(1 << 16).removeprefix(b"\xef\xbb\xbf").lstrip(b" \t\r\n")
    return head.startswith(b"[")


def _read_json_array(p: Path) -> tuple[list[dict], list[dict]]:
    data = p.read_bytes().removeprefix(b"\xef\xbb\xbf")
    try:
        items = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InputFileError(str(p), f"not valid UTF-8: byte 0x{data[exc.start]:02X} at byte {exc.start + 1}") from None
    except json.JSONDecodeError as exc:
        raise InputFileError(str(p), f"invalid JSON ({exc.msg})", line=exc.lineno) from None
    rows = [r for r in items if isinstance(r, dict)]
    rejects = [{"reason": f"not a JSON object: item {i}, it holds {json_type(r)}", "row": {"item": i, "value": r}}
               for i, r in enumerate(items, 1) if not isinstance(r, dict)]  # fmt: skip
    return rows, rejects


def _read_parquet(path: str, required: list[str], optional: list[str]) -> list[dict]:
    """Rows of one Parquet file in file order, or of a folder of parts in a fixed order (`folder_order`)."""
    import pyarrow.parquet as pq

    folder = not Path(path).is_file()
    try:
        schema = pq.ParquetDataset(path).schema if folder else pq.read_schema(path)
        absent = [c for c in required if c not in schema.names]
        if absent:
            raise InputFileError(path, f"missing column(s) {absent}; expected {required}")
        columns = list(required) + [c for c in optional if c in schema.names and c not in required]
        rows = pq.read_table(path, columns=columns).to_pylist()
    except InputFileError:
        raise
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise InputFileError(path, f"not a readable parquet file ({exc})") from None
    return folder_order(rows) if folder else rows


def folder_order(rows: list[dict]) -> list[dict]:
    """`rows` sorted by their content (the columns read, as sorted-key JSON), an order that depends on the rows
    alone.

    Why: Ray Data names the parts of a stage's output folder with random ids and writes rows in the order its
    tasks finish, so the same kept rows come back in another order on every run, and a trainer's seeded shuffle
    of another order trains another student. Rows are sorted by what was read rather than by an id column: an
    id the caller did not ask for may be missing from some parts or typed differently in others, and two rows
    with the same content are the same to a trainer. Cost: one JSON string per row (100k rows of 4.5 KB: ~2 s).
    """
    return sorted(rows, key=lambda row: json.dumps(row, sort_keys=True, default=str))


def missing(value: Any) -> bool:
    """None or NaN (how Parquet nulls and pandas gaps arrive)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def text_problem(row: dict, fields: tuple[str, ...]) -> str | None:
    """Why one of `fields` is not a non-empty string, else None."""
    for field in fields:
        value = row.get(field)
        if missing(value):
            return f"missing {field}"
        if not isinstance(value, str):
            return f"{field} is not a string"
        if not value.strip():
            return f"empty {field}"
    return None


def prompt_problem(row: dict, tokenizer, system_prompt: str | None, user_template: str, max_length: int) -> str | None:
    """Why the row's chat prompt leaves no room for a response token within max_length, else None."""
    try:
        prompt_token_ids(tokenizer, build_chat_messages(row["problem"], system_prompt, user_template), max_length)
    except RowRejected as exc:
        return exc.reason
    return None


def split_rows(rows: list[dict], check) -> tuple[list[dict], list[dict]]:
    """(rows where check(row) is None, rejects {reason, row}) — one pass, order kept."""
    clean, rejects = [], []
    for row in rows:
        reason = check(row)
        if reason is None:
            clean.append(row)
        else:
            rejects.append({"reason": reason, "row": row})
    return clean, rejects


def score_problem(value: Any, name: str) -> str | None:
    """Why a judge score cell cannot be a regression target, else None."""
    if missing(value):
        return f"missing {name} score"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{name} score is not a number"
    return None
