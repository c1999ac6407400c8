"""The JSON-lines reader under every input: where lines end, what a bad line becomes, and bounded memory."""

import json

import pytest

from distill_ray.jsonl import json_lines, json_type, parse_line, parse_lines, split_lines


def _chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1 << 20])
def test_lines_are_the_same_whatever_the_chunk_boundaries(size):
    data = b'{"a": 1}\r\n\n{"b": "x\xe2\x80\xa8y"}\r\n  \n[1]\n{"c": 3}'
    lines = list(split_lines(_chunks(data, size), max_line_bytes=100))
    assert lines == [(1, b'{"a": 1}', False), (2, b"", False), (3, b'{"b": "x\xe2\x80\xa8y"}', False),
                     (4, b"  ", False), (5, b"[1]", False), (6, b'{"c": 3}', False)]  # fmt: skip


@pytest.mark.parametrize("data, count", [(b"", 0), (b"\n", 1), (b"a\n", 1), (b"a", 1), (b"a\n\n", 2), (b"\r\n", 1)])
def test_the_final_newline_does_not_start_a_line(data, count):
    assert len(list(split_lines([data], 10))) == count


def test_a_line_over_the_limit_is_cut_as_it_arrives_and_flagged():
    limit = 8
    exactly = b"x" * limit
    lines = list(split_lines(_chunks(exactly + b"\r\n" + exactly + b"y\n" + b"z" * 10_000 + b"\nok", 3), limit))
    assert lines[0] == (1, exactly, False)  # at the limit, CRLF or not
    assert lines[1] == (2, exactly + b"y", True)
    assert lines[2][0] == 3 and lines[2][2] and len(lines[2][1]) <= limit + 1  # never more than the limit is held
    assert lines[3] == (4, b"ok", False)
    assert parse_line(3, lines[2][1], True, limit).error == "line too long: line 3 is over the limit of 8 bytes"


def test_a_bom_is_dropped_on_the_first_line_only():
    assert parse_line(1, b'\xef\xbb\xbf{"a": 1}').record == {"a": 1}
    assert parse_line(2, b'\xef\xbb\xbf{"a": 1}').error.startswith("malformed JSON: line 2, Unexpected UTF-8 BOM")


def test_invalid_utf8_names_the_byte_and_keeps_the_line_readable_for_rejected():
    line = parse_line(3, b'{"q": "caf\xe9"}')
    assert line.record is None and line.error == "not valid UTF-8: line 3, byte 0xE9 at byte 11"
    assert line.text == '{"q": "caf\\xe9"}'


@pytest.mark.parametrize("data, error", [
    (b"", "blank line: line 1"),
    (b" \t\r", "blank line: line 1"),
    (b"[]", "not a JSON object: line 1, it holds an array"),
    (b"true", "not a JSON object: line 1, it holds a boolean"),
    (b'{"a": 1, "a": 2}', "duplicate key: line 1, 'a' appears twice in one object"),
    (b'{"a": {"b": 1, "b": 1}}', "duplicate key: line 1, 'b' appears twice in one object"),
    (b'{"a": 1', "malformed JSON: line 1, Expecting ',' delimiter at column 8"),
])  # fmt: skip
def test_what_each_bad_line_becomes(data, error):
    assert parse_line(1, data).error == error


def test_a_file_is_read_in_chunks_and_in_order(tmp_path):
    path = tmp_path / "rows.jsonl"
    records = [{"i": i, "text": "x" * (i % 50)} for i in range(3000)]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    assert [line.record for line in json_lines(path)] == records
    assert [line.number for line in parse_lines([b'{"a": 1}\nnope\n'])] == [1, 2]


def test_json_type_speaks_json():
    assert [json_type(v) for v in (None, True, 1, 1.5, "s", [], {})] == [
        "null", "a boolean", "a number", "a number", "a string", "an array", "an object"]  # fmt: skip
