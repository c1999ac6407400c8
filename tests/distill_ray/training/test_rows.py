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


def _write_parts(folder, parts: list[list[dict]], names: list[str]) -> None:
    folder.mkdir()
    for rows, name in zip(parts, names):
        pq.write_table(pa.Table.from_pylist(rows), folder / f"{name}.parquet")


@pytest.mark.parametrize("key", ["sample_id", None])
def test_a_folder_reads_in_the_same_order_whatever_its_parts_are_named_or_hold(tmp_path, key):
    """Ray Data names parts with random ids and fills them in the order its tasks finish: two runs of a
    seeded stage keep the same rows in other parts. The trainer must see them in one order (a seeded
    shuffle of another order trains another student); unrequested columns stay unread."""
    rows = [{"problem": f"p{(7 * i) % 10}", "response": f"r{i}"} | ({key: f"k{i}"} if key else {}) for i in range(10)]
    _write_parts(tmp_path / "run1", [rows[:4], rows[4:]], ["b3f1-000000", "0a9c-000001"])
    _write_parts(tmp_path / "run2", [rows[7:], rows[2:7], rows[:2]], ["77aa-000000", "1e0d-000001", "c2b8-000002"])
    first, _ = read_rows(str(tmp_path / "run1"), LABELED)
    second, _ = read_rows(str(tmp_path / "run2"), LABELED)
    assert first == second
    assert first == sorted(({"problem": r["problem"], "response": r["response"]} for r in rows),
                           key=lambda r: (r["problem"], r["response"]))  # fmt: skip


def test_a_folder_whose_parts_differ_in_their_other_columns_reads_in_one_order(tmp_path):
    """An id in some parts only, or typed differently across parts, neither breaks the read nor lets the parts'
    names choose the order (found in review: an order keyed on such a column did both)."""
    a = [{"problem": "x", "response": "r", "id": 3}, {"problem": "a", "response": "r", "id": 1}]
    b = [{"problem": "z", "response": "r", "id": "s0"}, {"problem": "b", "response": "r", "id": "s9"}]
    _write_parts(tmp_path / "run1", [a, b], ["a", "b"])
    _write_parts(tmp_path / "run2", [a, b], ["b", "a"])
    c = [{"problem": "x", "response": "r"}, {"problem": "a", "response": "r"}]
    _write_parts(tmp_path / "run3", [c, b], ["a", "b"])
    _write_parts(tmp_path / "run4", [c, b], ["b", "a"])
    reads = [read_rows(str(tmp_path / f"run{i}"), LABELED)[0] for i in range(1, 5)]
    assert all(r == reads[0] for r in reads)
    assert [r["problem"] for r in reads[0]] == ["a", "b", "x", "z"]


def test_a_single_parquet_file_keeps_its_own_row_order(tmp_path):
    """A file the user wrote is read in its order (a curriculum or a hand-made file may rely on it)."""
    rows = [{"problem": f"p{i}", "response": "r", "sample_id": f"s{9 - i}"} for i in range(10)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet")
    read, _ = read_rows(str(tmp_path / "a.parquet"), LABELED)
    assert [r["problem"] for r in read] == [f"p{i}" for i in range(10)]


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
