"""Sources and row normalisation: what becomes a problem row, and the reason when nothing can."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from bad_inputs import MAX_LINE_BYTES, assert_reasons, good_ids, write_cases

from distill_ray.config import DatasetConfig
from distill_ray.data.sources import (
    FirstSeen,
    RowError,
    Source,
    checked_problems,
    located,
    normalize_row,
    problem_rows,
    procedural_arithmetic,
    split_size,
    resolve_source,
    stable_id,
)
from distill_ray.errors import ConfigError, InputFileError

CFG = DatasetConfig(prompt_field="question", answer_field="answer", id_field="id", max_line_bytes=MAX_LINE_BYTES)


def test_procedural_is_reproducible_and_correct():
    rows = procedural_arithmetic(50, seed=3, max_operand=9)
    assert rows == procedural_arithmetic(50, seed=3, max_operand=9)
    for r in rows:
        expr = r["question"].removeprefix("What is ").removesuffix("?")
        assert str(eval(expr)) == r["answer"]  # noqa: S307 - our own generated "a op b"
    assert len({r["id"] for r in rows}) == 50


def test_procedural_splits_are_disjoint_and_never_repeat_a_question():
    sets = {split: [r["question"] for r in procedural_arithmetic(split_size(9, split), 1, 9, split)]
            for split in ("train", "dev", "test")}  # fmt: skip
    for split, questions in sets.items():
        assert questions and len(set(questions)) == len(questions), split
    train, dev, test = (set(sets[s]) for s in ("train", "dev", "test"))
    assert not train & dev and not train & test and not dev & test
    assert len(train | dev | test) == split_size(9, "all") == 243  # 81 sums, 81 differences, 81 products
    assert split_size(30, "test") >= 300  # the benchmark's held-out set (benchmarks/distill_quality.py)


def test_procedural_max_operand_is_bounded():
    with pytest.raises(ConfigError, match="between 2 and 1000"):
        resolve_source("procedural:arithmetic?max_operand=1001")


def test_procedural_refuses_more_problems_than_its_split_holds():
    with pytest.raises(ValueError, match="only .* distinct problems in split 'test'"):
        procedural_arithmetic(split_size(9, "test") + 1, 1, 9, "test")


def test_resolve_source_kinds_and_errors(tmp_path):
    assert resolve_source("procedural:arithmetic?max_operand=9&split=test").split == "test"
    with pytest.raises(ConfigError):
        resolve_source("procedural:geometry")
    with pytest.raises(ConfigError):
        resolve_source("procedural:arithmetic?level=3")
    with pytest.raises(InputFileError):
        resolve_source(str(tmp_path / "missing.jsonl"))
    with pytest.raises(ConfigError):
        resolve_source(str(tmp_path / "prompts.txt"))
    assert resolve_source("bundled:gsm8k/test").path.name == "test.jsonl"
    with pytest.raises(ConfigError):
        resolve_source("bundled:nope")


def test_normalize_row_gsm8k_and_rejections():
    cfg = DatasetConfig(prompt_field="question", answer_field="answer", answer_format="gsm8k")
    row = normalize_row({"question": "Q?", "answer": "work... #### 1,234"}, cfg)
    assert row == {"id": stable_id("Q?"), "problem": "Q?", "reference": "1234"}
    with pytest.raises(RowError, match="question"):
        normalize_row({"question": "   ", "answer": "#### 1"}, cfg)
    with pytest.raises(RowError, match="answer"):
        normalize_row({"question": "Q?"}, cfg)
    with pytest.raises(RowError, match="^wrong type: prompt field 'question' holds a number, not a string$"):
        normalize_row({"question": 3, "answer": "3"}, cfg)
    with pytest.raises(RowError, match="^missing or empty answer field 'answer'$"):
        normalize_row({"question": "Q?", "answer": "no hashes ####"}, cfg)  # nothing after '####'
    no_ref = normalize_row({"q": "x", "k": 7}, DatasetConfig(prompt_field="q", answer_field=None, id_field="k"))
    assert no_ref == {"id": "7", "problem": "x", "reference": None}


def test_every_bad_input_kind_is_rejected_with_its_reason_and_every_good_row_is_kept(tmp_path):
    """The data-driven table of tests/bad_inputs.py through the reader the stages run (here without Ray)."""
    source = Source("jsonl", path=write_cases(tmp_path / "faults.jsonl"))
    checked = list(checked_problems(source, CFG))
    reasons = {int(rec.where.removeprefix("line ")): error for rec, row, error in checked if row is None}
    assert_reasons(reasons)
    assert {row["id"] for _, row, _ in checked if row is not None} == good_ids()
    assert len(checked) == len((tmp_path / "faults.jsonl").read_bytes().split(b"\n"))  # every line, the last too


def test_problem_rows_key_bad_records_by_where_they_are(tmp_path):
    """Bad rows get distinct, stable ids (two blank lines are two rejects, and a resume keys them as before)."""
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'{"id": "a", "question": "q", "answer": "1"}\n\n\n{"id": "a", "question": "r", "answer": "2"}\n')
    rows = list(problem_rows(Source("jsonl", path=path), CFG))
    assert [r["id"] for r in rows] == ["a", "rejected:line 2", "rejected:line 3", "rejected:line 4"]
    assert rows[0]["error"] is None and rows[1]["error"] == "blank line: line 2"
    assert json.loads(rows[3]["raw"]) == {"id": "a", "question": "r", "answer": "2"}  # the record, for rejected/
    assert rows == list(problem_rows(Source("jsonl", path=path), CFG))


def test_limit_counts_bad_records_too(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(
        'not json\n{"id": "a", "question": "q", "answer": "1"}\n{"id": "b", "question": "r", "answer": "2"}\n'
    )
    rows = list(problem_rows(Source("jsonl", path=path), CFG.model_copy(update={"limit": 2})))
    assert [r["id"] for r in rows] == ["rejected:line 1", "a"]


def test_parquet_and_hf_rows_are_checked_like_json_lines(tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    pq.write_table(
        pa.Table.from_pylist(
            [{"id": "a", "question": "q1", "answer": "1"}, {"id": "b", "question": None, "answer": "2"}]
        ),
        folder / "part-0.parquet",
    )
    pq.write_table(pa.Table.from_pylist([{"id": "a", "question": "q3", "answer": "3"}]), folder / "part-1.parquet")
    (folder / "_SUCCESS.parquet").write_text("not a part")  # skipped, as pyarrow skips it
    checked = list(checked_problems(Source("parquet", path=folder), CFG))
    assert [(rec.where, error) for rec, _, error in checked] == [
        ("part-0.parquet row 1", None),
        ("part-0.parquet row 2", "missing or empty prompt field 'question': part-0.parquet row 2"),
        ("part-1.parquet row 1", "duplicate id: part-1.parquet row 1 repeats 'a' from part-0.parquet row 1"),
    ]  # fmt: skip


def test_located_puts_where_after_the_kind_so_the_summary_counts_kinds():
    assert (
        located("wrong type: prompt field 'q' holds a number", "line 4")
        == "wrong type: line 4, prompt field 'q' holds a number"
    )
    assert located("missing or empty prompt field 'q'", "row 2") == "missing or empty prompt field 'q': row 2"
    seen = FirstSeen("sample_id")
    assert seen.repeat("x", "line 1") is None and seen.repeat("y", "line 2") is None
    assert seen.repeat("x", "line 3") == "duplicate sample_id: line 3 repeats 'x' from line 1"
