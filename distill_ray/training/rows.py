"""Reading and checking the rows every trainer job starts from, before anything is tokenized.

Where it sits: the data stages write Parquet folders or JSONL (labelled rows, AdvDistill groups,
preference pairs, judged CoTs); each trainer job's driver (`jobs/train/sft.py`, `kd.py`, `advdistill.py`,
`dpo.py`, `rm.py`) reads them here, checks them row by row (a bad row comes back with a short reason,
never an exception) and hands the clean ones to its Ray Train workers. Pure Python, no Ray.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill_ray.errors import InputFileError
from distill_ray.training.sft_data import (  # noqa: F401 - missing and text_problem are imported from here by jobs
    RowRejected,
    build_chat_messages,
    missing,
    prompt_token_ids,
    read_json_rows,
    text_problem,
)


def read_rows(path: str, required: list[str], optional: list[str] = ()) -> tuple[list[dict], list[dict]]:
    """Rows of a .parquet file or folder or a .jsonl/.json file with the `required` (and any present
    `optional`) columns, plus rejects {reason, row} for JSON lines that do not parse.

    A Parquet input missing a required column is an InputFileError naming it; JSON rows missing one
    are left to the row checks (each JSON line is its own record).
    """
    p = Path(path)
    if not p.exists():
        raise InputFileError(path, "rows file or folder not found")
    if p.is_dir() or p.suffix == ".parquet":
        return _read_parquet(path, required, list(optional)), []
    if p.suffix in (".jsonl", ".json"):
        return read_json_rows(p)
    raise InputFileError(path, "expected a .parquet file or folder, or a .jsonl/.json file")


def _read_parquet(path: str, required: list[str], optional: list[str]) -> list[dict]:
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path) if Path(path).is_file() else pq.ParquetDataset(path).schema
        missing = [c for c in required if c not in schema.names]
        if missing:
            raise InputFileError(path, f"missing column(s) {missing}; expected {required}")
        columns = list(required) + [c for c in optional if c in schema.names and c not in required]
        return pq.read_table(path, columns=columns).to_pylist()
    except InputFileError:
        raise
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise InputFileError(path, f"not a readable parquet file ({exc})") from None


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
