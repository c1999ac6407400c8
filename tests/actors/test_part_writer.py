"""The resumable part writer without Ray: a row its reader tagged never reaches the processor, and is counted."""

import json

import pyarrow as pa

from actors.part_writer import Outcome, PartWriter
from distill_ray.data.part_store import PartStore, export_rejected
from distill_ray.rejects import PAYLOAD_COLUMN, REJECT_COLUMN, tagged_schema

SCHEMA = pa.schema([("sample_id", pa.string()), ("response", pa.string())])


class Upper:
    """A row processor that upper-cases responses and remembers what it was given."""

    output_schema = SCHEMA
    seen: list[dict] = []

    def __init__(self):
        self.teacher_calls = 0

    def process(self, rows):
        Upper.seen.extend(rows)
        return [Outcome(rows=[{**r, "response": r["response"].upper()}]) for r in rows]


def test_tagged_rows_are_rejected_with_their_reason_and_the_others_processed(tmp_path):
    store = PartStore(tmp_path / "out", "fp")
    store.prepare()
    writer = PartWriter(Upper, {}, str(store.root), "fp", "run", key_column="sample_id")
    rows = [{"sample_id": "a", "response": "x", REJECT_COLUMN: None, PAYLOAD_COLUMN: None},
            {"sample_id": "rejected:line 2", "response": None, REJECT_COLUMN: "blank line: line 2",
             PAYLOAD_COLUMN: json.dumps({"where": "line 2", "text": ""})},
            {"sample_id": "b", "response": "y", REJECT_COLUMN: None, PAYLOAD_COLUMN: None}]  # fmt: skip
    manifest = writer(pa.Table.from_pylist(rows, schema=tagged_schema(SCHEMA))).to_pylist()[0]
    assert (manifest["rows_in"], manifest["rows_out"], manifest["rows_rejected"]) == (3, 2, 1)
    assert [r["sample_id"] for r in Upper.seen] == ["a", "b"] and REJECT_COLUMN not in Upper.seen[0]
    out = tmp_path / "rejected.jsonl"
    export_rejected([store], out, "judge")
    (reject,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert reject["reason"] == "blank line: line 2" and reject["row"] == {"where": "line 2", "text": ""}
    assert store.totals("run").counts.reasons == {"blank line": 1}


def test_manifest_counts_the_teacher_tokens_the_rows_hold():
    from actors.part_writer import completion_tokens

    rows = [{"completion_tokens": 3}, {"completion_tokens": [1, 2, None]}, {"response": "no count"}]
    assert completion_tokens(rows) == 6 and completion_tokens([]) == 0
