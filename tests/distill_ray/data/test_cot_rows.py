"""CoT rows read in order: typed columns, and every row a stage cannot use tagged with its located reason."""

import json

import pyarrow as pa
import pyarrow.parquet as pq

from distill_ray.data.cot_rows import cot_rows, cot_schema
from distill_ray.rejects import PAYLOAD_COLUMN, REJECT_COLUMN

COT = {"id": "p1", "sample_id": "s1", "problem": "2+2?", "response": "4", "correct": True, "reward": 1}


def _write(path, lines: list[bytes]):
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_json_lines_get_declared_types_and_the_users_own_fields_inferred(tmp_path):
    path = _write(tmp_path / "cots.jsonl", [json.dumps({**COT, "score": 3, "note": "a", "mixed": 1}).encode(),
                                            json.dumps({**COT, "sample_id": "s2", "score": 4, "mixed": "b",
                                                        "tags": ["x"]}).encode(), b"not json"])  # fmt: skip
    schema = cot_schema(path, 1 << 20)
    types = {f.name: f.type for f in schema}
    assert types["correct"] == pa.bool_() and types["reward"] == pa.float64() and types["response"] == pa.string()
    assert types["score"] == pa.int64() and types["note"] == pa.string()
    assert types["mixed"] == pa.string() and types["tags"] == pa.string()  # kept as JSON text
    rows = list(cot_rows(path, schema, 1 << 20))
    assert rows[0]["reward"] == 1.0 and rows[0]["mixed"] == "1" and rows[1]["tags"] == '["x"]'
    assert rows[2][REJECT_COLUMN] == "malformed JSON: line 3, Expecting value at column 1"
    assert json.loads(rows[2][PAYLOAD_COLUMN]) == {"where": "line 3", "text": "not json"}
    pa.Table.from_pylist(rows)  # the rows build one table


def test_wrong_types_repeats_and_bad_lines_are_tagged_and_the_first_sample_wins(tmp_path):
    lines = [
        COT,
        {**COT, "response": 4},
        {**COT, "correct": "yes"},
        {**COT, "problem": "other"},
        {"id": "p2", "problem": "3+3?", "response": "6"},
        {"id": "p2", "problem": "3+3?", "response": "6"},
    ]
    path = _write(tmp_path / "cots.jsonl", [json.dumps(r).encode() for r in lines] + [b"\xff{}"])
    rows = list(cot_rows(path, cot_schema(path, 1 << 20), 1 << 20))
    reasons = [r[REJECT_COLUMN] for r in rows]
    assert reasons == [
        None,
        "wrong type: line 2, field 'response' holds a number, not a string",
        "wrong type: line 3, field 'correct' holds a string, not a boolean",
        "duplicate sample_id: line 4 repeats 's1' from line 1",
        None,  # no sample_id: one from a hash of problem and response
        f"duplicate sample_id: line 6 repeats '{rows[4]['sample_id']}' from line 5",  # the same CoT twice
        "not valid UTF-8: line 7, byte 0xFF at byte 1",
    ]
    assert [r["sample_id"] for r in rows if r[REJECT_COLUMN]] == [f"rejected:line {n}" for n in (2, 3, 4, 6, 7)]
    assert json.loads(rows[1][PAYLOAD_COLUMN]) == {**COT, "response": 4}  # the record as it was


def test_parquet_rows_keep_their_types_and_repeats_are_tagged(tmp_path):
    """A Parquet column typed otherwise than declared (int32 tokens) is read as its file says, never rejected."""
    folder = tmp_path / "generations"
    folder.mkdir()
    rows = [{**COT, "prompt_tokens": 5}, {**COT, "prompt_tokens": 6}, {**COT, "sample_id": "s2", "prompt_tokens": 7}]
    table = pa.Table.from_pylist(rows).cast(
        pa.Table.from_pylist(rows).schema.set(6, pa.field("prompt_tokens", pa.int32()))
    )
    pq.write_table(table, folder / "part-0.parquet")
    schema = cot_schema(folder, 1 << 20)
    read = list(cot_rows(folder, schema, 1 << 20))
    assert schema.field("prompt_tokens").type == pa.int32()
    assert [r[REJECT_COLUMN] for r in read] == [
        None,
        "duplicate sample_id: part-0.parquet row 2 repeats 's1' from part-0.parquet row 1",
        None,
    ]
    assert [r["prompt_tokens"] for r in read] == [5, None, 7]
