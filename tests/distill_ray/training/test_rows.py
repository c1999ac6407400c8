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
    assert (
        len(rows) == 1
        and rejects[0]["reason"]
        == "malformed JSON: line 2, Expecting property name enclosed in double quotes at column 2"
    )


def test_read_jsonl_rejects_every_line_that_is_not_a_record(tmp_path):
    """Blank, not UTF-8, not JSON, not an object: each a reject with its line, never a crash."""
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"problem": "p", "response": "r"}\r\n\n{"problem": "caf\xe9"}\nnot json\n[1, 2]\n')
    rows, rejects = read_rows(str(path), LABELED)
    assert rows == [{"problem": "p", "response": "r"}]  # the BOM and the CRLF are not part of the record
    assert [r["reason"].split(":")[0] for r in rejects] == [
        "blank line",
        "not valid UTF-8",
        "malformed JSON",
        "not a JSON object",
    ]
    assert [r["row"]["line"] for r in rejects] == [2, 3, 4, 5]
    assert rejects[1]["row"]["text"] == '{"problem": "caf\\xe9"}'


def test_read_a_json_array_file(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text('  [{"problem": "p", "response": "r"}, 3]')
    rows, rejects = read_rows(str(path), LABELED)
    assert (
        rows == [{"problem": "p", "response": "r"}]
        and rejects[0]["reason"] == "not a JSON object: item 2, it holds a number"
    )
    path.write_bytes(b'[{"problem": "caf\xe9"}]')
    with pytest.raises(InputFileError, match="not valid UTF-8: byte 0xE9 at byte 18"):
        read_rows(str(path), LABELED)


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
