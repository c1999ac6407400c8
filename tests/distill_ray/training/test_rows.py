"""The rows every trainer starts from: the shared reader (Parquet file or folder, JSON lines), row checks. No Ray."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distill_ray.errors import InputFileError
from distill_ray.training.rows import prompt_problem, read_rows, split_rows, text_problem

RESPONSE = "<think>2 plus 3 is 5.</think><answer>\\boxed{5}</answer>"
LABELED = ["problem", "response"]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from distill_ray.models.loading import load_tokenizer

    return load_tokenizer(tiny_model_dir)


def labeled_problem(row: dict) -> str | None:
    return text_problem(row, ("problem", "response"))


@pytest.mark.parametrize(
    "row, reason",
    [
        ({"problem": "p", "response": "r"}, None),
        ({"problem": None, "response": "r"}, "missing problem"),
        ({"problem": "p", "response": float("nan")}, "missing response"),
        ({"problem": "p"}, "missing response"),
        ({"problem": "  ", "response": "r"}, "empty problem"),
        ({"problem": "p", "response": 3}, "response is not a string"),
    ],
)
def test_text_problem(row, reason):
    assert labeled_problem(row) == reason


def test_read_rows_keeps_wanted_columns_and_bad_json_lines(tmp_path):
    row = {"problem": "p", "response": "r", "rv": 3, "junk": 1}
    pq.write_table(pa.Table.from_pylist([row]), tmp_path / "a.parquet")
    rows, rejects = read_rows(str(tmp_path / "a.parquet"), LABELED, ["rv", "cd"])
    assert rows == [{"problem": "p", "response": "r", "rv": 3}] and rejects == []
    with pytest.raises(InputFileError, match="missing column"):
        read_rows(str(tmp_path / "a.parquet"), ["problem", "chosen"])
    (tmp_path / "b.jsonl").write_text('{"problem": "p", "response": "r"}\n{not json\n')
    rows, rejects = read_rows(str(tmp_path / "b.jsonl"), LABELED)
    assert len(rows) == 1 and rejects[0]["reason"] == "invalid JSON line"


def test_read_jsonl_skips_blank_lines_and_rejects_bad_ones(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"problem": "p", "response": "r", "extra": 1}\n\nnot json\n[1, 2]\n')
    rows, rejects = read_rows(str(path), LABELED)
    assert rows[0]["problem"] == "p" and len(rows) == 2
    assert [r["reason"] for r in rejects] == ["invalid JSON line"] and rejects[0]["row"]["line"] == 3
    assert labeled_problem(rows[1]) == "missing problem"  # a non-object line becomes a rejectable row


def test_read_rows_file_errors(tmp_path):
    with pytest.raises(InputFileError, match="not found"):
        read_rows(str(tmp_path / "missing.parquet"), LABELED)
    pq.write_table(pa.Table.from_pylist([{"question": "q", "response": "r"}]), tmp_path / "bad.parquet")
    with pytest.raises(InputFileError, match="missing column"):
        read_rows(str(tmp_path / "bad.parquet"), LABELED)


def test_read_rows_from_a_parquet_folder(tmp_path):
    """The generation job writes its kept samples as a folder of Parquet parts."""
    folder = tmp_path / "kept"
    folder.mkdir()
    for i in range(2):
        pq.write_table(pa.Table.from_pylist([{"problem": f"p{i}", "response": "r", "kept": True}]),
                       folder / f"part-{i}.parquet")  # fmt: skip
    rows, rejects = read_rows(str(folder), LABELED)
    assert sorted(r["problem"] for r in rows) == ["p0", "p1"] and rejects == []
    assert all(set(r) == {"problem", "response"} for r in rows)  # unrequested columns are not read


def test_split_rows_rejects_with_reasons(tokenizer):
    """The sft driver's check: non-empty text, then a prompt that leaves room for the response."""
    rows = [
        {"problem": "What is 2+3?", "response": RESPONSE},
        {"problem": "", "response": RESPONSE},
        {"problem": "word " * 200, "response": RESPONSE},
    ]

    def check(row):
        return labeled_problem(row) or prompt_problem(row, tokenizer, None, "{problem}", 128)

    clean, rejects = split_rows(rows, check)
    assert clean == [{"problem": "What is 2+3?", "response": RESPONSE}]
    assert rejects[0] == {"reason": "empty problem", "row": rows[1]}
    assert rejects[1]["reason"].startswith("prompt longer than max_length")
    assert rejects[1]["row"] is rows[2]
