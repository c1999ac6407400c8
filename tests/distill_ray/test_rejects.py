"""The rejected-rows file: one record format, appended by the trainers, replaced whole by the rebuilding stages."""

from __future__ import annotations

import json

import pytest

from distill_ray.rejects import append_rejects, replace_rejects


def _lines(path) -> list[str]:
    return path.read_text().splitlines()


def test_append_adds_records_and_leaves_no_file_for_no_rejects(tmp_path):
    path = tmp_path / "rejected" / "sft.jsonl"
    assert append_rejects(path, "sft", []) == 0 and not path.exists()
    assert append_rejects(path, "sft", [{"reason": "empty problem", "row": {"problem": ""}}]) == 1
    assert append_rejects(path, "sft", [{"reason": "invalid JSON line"}]) == 1  # a reject without its row
    assert _lines(path) == ['{"stage": "sft", "reason": "empty problem", "row": {"problem": ""}}',
                            '{"stage": "sft", "reason": "invalid JSON line", "row": null}']  # fmt: skip


def test_replace_writes_the_whole_file_once_with_keys_where_rejects_have_them(tmp_path):
    path = tmp_path / "rejected" / "judge.jsonl"
    path.parent.mkdir()
    path.write_text("from an earlier run\n")
    rejects = [{"reason": "unparseable verdict", "key": "k1", "row": {"x": 1}}, {"reason": "no group", "row": [1]}]
    for _ in range(2):  # a re-run: the same rows again, never twice
        assert replace_rejects(path, "judge", iter(rejects)) == 2
    assert [json.loads(line) for line in _lines(path)] == [
        {"stage": "judge", "reason": "unparseable verdict", "key": "k1", "row": {"x": 1}},
        {"stage": "judge", "reason": "no group", "row": [1]},
    ]
    assert list(path.parent.iterdir()) == [path]  # no temp file left
    assert replace_rejects(path, "judge", []) == 0 and path.read_text() == ""


def test_replace_keeps_the_old_file_when_the_rejects_fail_midway(tmp_path):
    path = tmp_path / "collect.jsonl"
    path.write_text('{"stage": "collect", "reason": "old", "row": null}\n')

    def failing():
        yield {"reason": "new", "row": 1}
        raise RuntimeError("the dataset stream broke")

    with pytest.raises(RuntimeError):
        replace_rejects(path, "collect", failing())
    assert _lines(path) == ['{"stage": "collect", "reason": "old", "row": null}']
    assert list(tmp_path.iterdir()) == [path]


def test_rows_that_are_not_json_are_written_as_text(tmp_path):
    from pathlib import Path

    path = tmp_path / "kd.jsonl"
    append_rejects(path, "kd", [{"reason": "odd", "row": {"path": Path("/x")}}])
    assert json.loads(path.read_text())["row"] == {"path": "/x"}
