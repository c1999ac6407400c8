"""`distill-ray grade`: every input row comes out graded or with its error, counted; bad rows never stop it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distill_ray.errors import InputFileError
from distill_ray.grading.grade_file import GradeFields, grade_file

ROWS = [
    {"id": "right", "response": r"<think>2+2</think><answer>\boxed{4}</answer>", "reference": "4"},
    {"id": "cut", "response": "<think>2+2 is", "reference": "4"},
    {"id": "long", "response": r"so \boxed{4}", "reference": "4", "finish_reason": "length"},
    {"id": "wrong", "response": r"\boxed{5}", "reference": "4"},
    {"id": "no-ref", "response": r"\boxed{5}"},
    {"id": "no-reply", "reference": "4"},
    {"id": "not-text", "response": 4, "reference": "4"},
]


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_jsonl_rows_are_graded_and_bad_ones_reported(tmp_path):
    src = tmp_path / "replies.jsonl"
    src.write_text("\n".join([*(json.dumps(r) for r in ROWS), "{broken", "[1, 2]"]) + "\n")
    counts = grade_file(str(src), str(tmp_path / "out.jsonl"))
    out = {r.get("id", r.get("line")): r for r in _lines(tmp_path / "out.jsonl")}
    assert len(out) == len(ROWS) + 2  # one line per input line
    assert out["right"]["correct"] is True and out["right"]["final_answer"] == "4"
    assert out["cut"]["correct"] is False and out["cut"]["no_answer_reason"] == "unclosed think block"
    assert out["long"]["correct"] is False and "length" in out["long"]["no_answer_reason"]
    assert out["wrong"]["correct"] is False and out["wrong"]["final_answer"] == "5"
    assert out["no-ref"]["correct"] is None
    assert "no reply text" in out["no-reply"]["error"] and "no reply text" in out["not-text"]["error"]
    assert dict(counts) == {"correct": 1, "wrong": 3, "no_final_answer": 2, "ungraded": 1, "bad_rows": 4}


def test_parquet_folder_other_field_names_and_a_strict_format(tmp_path):
    folder = tmp_path / "generations"
    folder.mkdir()
    rows = [{"sample_id": "s1", "text": r"so \boxed{4}", "gold": "4"}, {"sample_id": "s2", "text": "it is 4", "gold": "4"}]
    pq.write_table(pa.Table.from_pylist(rows), folder / "part-0.parquet")
    counts = grade_file(str(folder), str(tmp_path / "out.jsonl"), GradeFields("text", "gold"), fmt="boxed")
    out = _lines(tmp_path / "out.jsonl")
    assert [r["sample_id"] for r in out] == ["s1", "s2"] and [r["correct"] for r in out] == [True, False]
    assert out[1]["no_answer_reason"] == "no \\boxed answer" and counts["correct"] == 1


def test_a_missing_file_is_an_input_error_and_the_cli_exits_2(tmp_path):
    with pytest.raises(InputFileError):
        grade_file(str(tmp_path / "absent.jsonl"), str(tmp_path / "out.jsonl"))
    cli = Path(sys.executable).parent / "distill-ray"
    proc = subprocess.run([str(cli), "grade", str(tmp_path / "absent.jsonl"), "--out", str(tmp_path / "o.jsonl")],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.startswith("distill-ray: input error:"), proc.stderr
    src = tmp_path / "r.jsonl"
    src.write_text(json.dumps(ROWS[0]) + "\n")
    ok = subprocess.run([str(cli), "grade", str(src), "--out", str(tmp_path / "o.jsonl")], capture_output=True,
                        text=True, timeout=120)  # fmt: skip
    assert ok.returncode == 0 and ok.stdout.startswith("graded 1 rows") and "1 correct" in ok.stdout
