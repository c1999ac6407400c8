"""Every malformed-input kind a problem file can hold, as data: each case is one line of a JSON-lines file and
the reason it must be rejected with (None: a good row that must be processed).

Used by the pure reader tests (tests/distill_ray/data/test_sources.py) and by the same file run through Ray Data
and the teacher (tests/jobs/data/test_bad_inputs.py). Read with prompt_field `question`, answer_field `answer`,
id_field `id` and `max_line_bytes` MAX_LINE_BYTES.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

MAX_LINE_BYTES = 65536


@dataclass(frozen=True)
class Case:
    name: str
    line: bytes  # without its line break
    reason: str | None  # a regex the located reason must match; None for a good row
    ending: bytes = b"\n"
    row_id: str | None = None  # a good row's id


def _j(**record) -> bytes:
    return json.dumps(record).encode()


CASES = [
    Case("BOM at the start of the file is dropped",
         b"\xef\xbb\xbf" + _j(id="g1", question="What is 1 + 1?", answer="2"), None, row_id="g1"),
    Case("CRLF line ending", _j(id="crlf", question="What is 2 + 2?", answer="4"), None, b"\r\n", row_id="crlf"),
    Case("answer as a JSON number", _j(id="num", question="What is 3 + 3?", answer=6), None, row_id="num"),
    Case("integer id", _j(id=7, question="What is 4 + 4?", answer="8"), None, row_id="7"),
    Case("U+2028 inside a string stays one line", _j(id="u2028", question="What is\u2028 5 + 5?", answer="10"),
         None, row_id="u2028"),
    Case("not valid UTF-8", b'{"id": "latin1", "question": "caf\xe9?", "answer": "1"}',
         r"^not valid UTF-8: line {n}, byte 0xE9 at byte 34$"),
    Case("blank line", b"", r"^blank line: line {n}$"),
    Case("whitespace-only line", b" \t ", r"^blank line: line {n}$"),
    Case("a JSON array line", b"[1, 2]", r"^not a JSON object: line {n}, it holds an array$"),
    Case("a JSON number line", b"42", r"^not a JSON object: line {n}, it holds a number$"),
    Case("a JSON string line", b'"just text"', r"^not a JSON object: line {n}, it holds a string$"),
    Case("a JSON null line", b"null", r"^not a JSON object: line {n}, it holds null$"),
    Case("malformed JSON", b'{"id": "cut", "question": ', r"^malformed JSON: line {n}, Expecting value at column 27$"),
    Case("a key twice in one object", b'{"id": "k2", "question": "a", "question": "b", "answer": "1"}',
         r"^duplicate key: line {n}, 'question' appears twice in one object$"),
    Case("integer of 5000 digits", b'{"id": "big", "question": "q", "answer": ' + b"9" * 5000 + b"}",
         r"^malformed JSON: line {n}, Exceeds the limit \(4300 digits\)"),
    Case("nested 5000 deep", b'{"id": "deep", "question": ' + b"[" * 5000 + b"]" * 5000 + b"}",
         r"^malformed JSON: line {n}, nested too deeply$"),
    Case("prompt is a number", _j(id="t1", question=5, answer="1"),
         r"^wrong type: line {n}, prompt field 'question' holds a number, not a string$"),
    Case("prompt is an array", _j(id="t2", question=["a"], answer="1"),
         r"^wrong type: line {n}, prompt field 'question' holds an array, not a string$"),
    Case("prompt is an object", _j(id="t3", question={"text": "a"}, answer="1"),
         r"^wrong type: line {n}, prompt field 'question' holds an object, not a string$"),
    Case("prompt is a boolean", _j(id="t4", question=True, answer="1"),
         r"^wrong type: line {n}, prompt field 'question' holds a boolean, not a string$"),
    Case("prompt missing", _j(id="m1", answer="1"), r"^missing or empty prompt field 'question': line {n}$"),
    Case("prompt null", _j(id="m2", question=None, answer="1"),
         r"^missing or empty prompt field 'question': line {n}$"),
    Case("prompt empty", _j(id="m3", question="", answer="1"), r"^missing or empty prompt field 'question': line {n}$"),
    Case("prompt blank", _j(id="m4", question=" \n ", answer="1"),
         r"^missing or empty prompt field 'question': line {n}$"),
    Case("answer missing", _j(id="a1", question="q?"), r"^missing or empty answer field 'answer': line {n}$"),
    Case("answer is an array", _j(id="a2", question="q?", answer=[1]),
         r"^wrong type: line {n}, answer field 'answer' holds an array, not a string or a number$"),
    Case("answer is NaN", b'{"id": "a3", "question": "q?", "answer": NaN}',
         r"^wrong type: line {n}, answer field 'answer' holds nan, not a finite number$"),
    Case("id missing", _j(question="q?", answer="1"), r"^missing or empty id field 'id': line {n}$"),
    Case("id is an array", _j(id=[1], question="q?", answer="1"),
         r"^wrong type: line {n}, id field 'id' holds an array, not a string or an integer$"),
    Case("id is a boolean", _j(id=False, question="q?", answer="1"),
         r"^wrong type: line {n}, id field 'id' holds a boolean, not a string or an integer$"),
    Case("duplicate id", _j(id="g1", question="Another problem?", answer="3"),
         r"^duplicate id: line {n} repeats 'g1' from line 1$"),
    Case("duplicate of an integer id, as a string", _j(id="7", question="Yet another?", answer="3"),
         r"^duplicate id: line {n} repeats '7' from line 4$"),
    Case("line over max_line_bytes", _j(id="huge", question="x" * (MAX_LINE_BYTES + 10), answer="1"),
         rf"^line too long: line {{n}} is over the limit of {MAX_LINE_BYTES} bytes$"),
    Case("last line without a newline", _j(id="last", question="What is 6 + 6?", answer="12"), None, b"",
         row_id="last"),
]  # fmt: skip


def write_cases(path: Path, cases: list[Case] = CASES) -> Path:
    path.write_bytes(b"".join(c.line + c.ending for c in cases))
    return path


def expected_reasons(cases: list[Case] = CASES) -> dict[int, str]:
    """line number -> the regex its reason must match, for every bad line."""
    return {n: c.reason.replace("{n}", str(n)) for n, c in enumerate(cases, 1) if c.reason is not None}


def good_ids(cases: list[Case] = CASES) -> set[str]:
    return {c.row_id for c in cases if c.reason is None}


def assert_reasons(reasons_by_line: dict[int, str], cases: list[Case] = CASES) -> None:
    """Each bad line has exactly its expected reason (and no good line has one)."""
    expected = expected_reasons(cases)
    assert set(reasons_by_line) == set(expected), (sorted(reasons_by_line), sorted(expected))
    for n, pattern in expected.items():
        assert re.search(pattern, reasons_by_line[n]), (n, cases[n - 1].name, reasons_by_line[n], pattern)
