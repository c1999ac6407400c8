"""JSON lines read one line at a time, the way a careful data engineer reads them: a bad line is one record
with its reason, never a failed read, and the lines around it are read as usual.

Where it sits: under every reader of a user's JSON-lines file: the problem sources and the CoT rows of the
data stages (`distill_ray/data/sources.py`, `distill_ray/data/cot_rows.py`, run inside a Ray Data task by
`jobs/data/sources.py`), the trainers' rows and `distill-ray grade` (`distill_ray/training/rows.py`) and the
eval report's group fields. Pure Python.

What a line is, and what each fault becomes (`JsonLine.error`, "<kind>: line N, <detail>"):
- Lines end at b"\\n" only, and one "\\r" before it is dropped (CRLF files). Not `str.splitlines`, which
  also splits at U+2028, U+2029, U+0085, \\x0b, \\x0c and \\x1c-\\x1e: JSON allows those unescaped inside a
  string, so a prompt holding one would be cut in two bad halves.
- A UTF-8 byte-order mark at the start of the file is dropped (Windows editors write one).
- Each line is decoded on its own, so a line that is not UTF-8 is one bad record naming the first bad byte.
- A blank line is a bad record ("blank line"): rows_in is then the file's line count (`wc -l`, plus a last
  line without a newline) and nothing is skipped unseen. The file's final newline does not start a line.
- A line over `max_line_bytes` is a bad record, and at most that many of its bytes are ever held: a file
  with no newline at all (a JSON array on one line, a binary file) costs a bounded buffer, not the file.
- A line that is not JSON (including an integer of more than 4300 digits, which Python refuses, and
  nesting deeper than the parser's recursion limit), that repeats a key in one object (which value was
  meant?), or that parses to anything but an object (array, string, number, true/false/null) is a bad record.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_LINE_BYTES = 8 * 1024 * 1024  # the default of dataset.max_line_bytes
TEXT_KEPT = 2000  # characters of a bad line kept for rejected/ (a huge line is not copied whole)
READ_CHUNK = 1 << 20
_BOM = b"\xef\xbb\xbf"
_JSON_BLANK = " \t\r"  # JSON's whitespace, less the line break


@dataclass(frozen=True)
class JsonLine:
    """One line of a JSON-lines file: its parsed object, or why it has none (`text` then keeps the line)."""

    number: int
    record: dict[str, Any] | None = None
    error: str | None = None
    text: str = ""


def json_lines(path: str | Path, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[JsonLine]:
    """Every line of the file at `path`, in order, read in chunks (the file is never held whole)."""
    with open(path, "rb") as fh:
        yield from parse_lines(iter(lambda: fh.read(READ_CHUNK), b""), max_line_bytes)


def parse_lines(chunks: Iterable[bytes], max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[JsonLine]:
    """`chunks` of a file's bytes -> its lines, parsed (see the module docstring for the rules)."""
    for number, data, overflow in split_lines(chunks, max_line_bytes):
        yield parse_line(number, data, overflow, max_line_bytes)


def split_lines(chunks: Iterable[bytes], max_line_bytes: int) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, the line's bytes without its line break, whether it ran over `max_line_bytes`).

    A line's bytes past the limit are dropped as they arrive; a "\\r" before "\\n" is removed."""
    keep = max_line_bytes + 1  # room for the "\r" of a CRLF line exactly at the limit
    number, buf, overflow = 0, bytearray(), False
    for chunk in chunks:
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            piece = chunk[start:] if end < 0 else chunk[start:end]
            if not overflow:
                room = keep - len(buf)
                buf += piece[:room]
                overflow = len(piece) > room
            if end < 0:
                break
            number += 1
            yield number, *_line_end(buf, overflow, max_line_bytes)
            buf, overflow, start = bytearray(), False, end + 1
    if buf or overflow:
        yield number + 1, *_line_end(buf, overflow, max_line_bytes)


def _line_end(buf: bytearray, overflow: bool, max_line_bytes: int) -> tuple[bytes, bool]:
    data = bytes(buf)
    if not overflow and data.endswith(b"\r"):
        data = data[:-1]
    return data, overflow or len(data) > max_line_bytes


def parse_line(number: int, data: bytes, overflow: bool = False, max_line_bytes: int = MAX_LINE_BYTES) -> JsonLine:
    """One line's bytes (without its line break) -> its object, or the reason it has none."""
    if number == 1 and data.startswith(_BOM):
        data = data[len(_BOM) :]
    where = f"line {number}"
    if overflow:
        error = f"line too long: {where} is over the limit of {max_line_bytes} bytes"
        return JsonLine(number, error=error, text=_shown(data))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        error = f"not valid UTF-8: {where}, byte 0x{data[exc.start]:02X} at byte {exc.start + 1}"
        return JsonLine(number, error=error, text=_shown(data))
    if not text.strip(_JSON_BLANK):
        return JsonLine(number, error=f"blank line: {where}", text=text)
    value, kind, detail = _loads(text)
    if kind is None and not isinstance(value, dict):
        kind, detail = "not a JSON object", f"it holds {json_type(value)}"
    if kind is not None:
        return JsonLine(number, error=f"{kind}: {where}, {detail}", text=text[:TEXT_KEPT])
    return JsonLine(number, record=value)


def _loads(text: str) -> tuple[Any, str | None, str]:
    """(the parsed value, None, "") or (None, the fault's kind, its detail)."""
    try:
        return json.loads(text, object_pairs_hook=_object_without_repeats), None, ""
    except json.JSONDecodeError as exc:
        return None, "malformed JSON", f"{exc.msg} at column {exc.colno}"
    except _RepeatedKey as exc:
        return None, "duplicate key", f"'{exc.key}' appears twice in one object"
    except RecursionError:
        return None, "malformed JSON", "nested too deeply"
    except ValueError as exc:  # an integer of more than 4300 digits
        return None, "malformed JSON", str(exc).split(";")[0]


def json_type(value: Any) -> str:
    """What a parsed JSON value is, in JSON's words ("a number", "an array"), for reasons a user reads."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "an array"
    return "an object" if isinstance(value, dict) else f"a {type(value).__name__}"


class _RepeatedKey(Exception):
    def __init__(self, key: str):
        self.key = key


def _object_without_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    record = dict(pairs)
    if len(record) != len(pairs):
        seen: set[str] = set()
        raise _RepeatedKey(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return record


def _shown(data: bytes) -> str:
    """A bad line's bytes as text for rejected/: undecodable bytes as \\xNN, cut at TEXT_KEPT characters."""
    return data[: TEXT_KEPT * 4].decode("utf-8", "backslashreplace")[:TEXT_KEPT]
