"""Every malformed-input kind (tests/bad_inputs.py) through the real reading path: Ray Data on the embedded
cluster and, for problems, the real teacher service. Each bad row is quarantined with its reason and counted
(rows_in = rows_out + rows_rejected), every good row is processed, and a prompt longer than the teacher's
context is rejected by the teacher with the token counts, not retried as if the teacher were down."""

import json
import re

import pyarrow.parquet as pq
import pytest
from bad_inputs import CASES, MAX_LINE_BYTES, Case, assert_reasons, good_ids, write_cases

from distill_ray.config import build_config
from jobs.stage import StageEnv

pytestmark = pytest.mark.ray

OVER_CONTEXT = Case(
    "a prompt longer than the teacher's context",
    json.dumps({"id": "long", "question": "What is 1 + 1? " * 3000, "answer": "2"}).encode(),
    r"^teacher rejected the request: .*the prompt has \d+ tokens; the model's context is \d+ tokens",
)


def _rejects(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _line_of(reason: str) -> int | None:
    found = re.search(r"\bline (\d+)\b", reason)
    return int(found.group(1)) if found else None


def test_generate_quarantines_every_bad_input_kind_and_answers_the_good_rows(tmp_path, ray_cluster, serve_port):
    from jobs.data import generate

    cases = [*CASES[:-1], OVER_CONTEXT, CASES[-1]]  # the last case has no final newline
    write_cases(tmp_path / "faults.jsonl", cases)
    job = build_config({
        "job_type": "generate", "output_dir": str(tmp_path / "out"),
        "dataset": {"instruction_path": str(tmp_path / "faults.jsonl"), "prompt_field": "question",
                    "answer_field": "answer", "id_field": "id", "max_line_bytes": MAX_LINE_BYTES},
        "models": {"teacher": "tiny:smollm2"},
        "inference": {"max_new_tokens": 4, "temperature": 0.7, "num_samples": 1, "seed": 1, "max_retries": 3,
                      "serve": {"port": serve_port}},
        "distillation": {"keep": "all"},
    })  # fmt: skip
    env = StageEnv("generate", tmp_path / "out", tmp_path / "out" / "rejected", ray_cluster)
    result = generate.run(job, env)

    assert result.rows_in == len(cases) and result.rows_in == result.rows_out + result.rows_rejected
    assert result.rows_out == len(good_ids(cases))
    samples = pq.read_table(tmp_path / "out" / "generations").to_pylist()
    assert {r["id"] for r in samples} == good_ids(cases)  # every good row answered, the BOM and CRLF ones too
    assert "What is\u2028 5 + 5?" in {r["problem"] for r in samples}  # U+2028 did not split its line

    rejects = _rejects(tmp_path / "out" / "rejected" / "generate.jsonl")
    assert len(rejects) == result.rows_rejected
    refused = [r for r in rejects if r["reason"].startswith("teacher rejected")]
    assert len(refused) == 1 and refused[0]["row"]["id"] == "long"
    assert result.metrics["teacher_calls"] == result.rows_out + 1  # one request per problem the reader let through
    by_line = {_line_of(r["reason"]): r["reason"] for r in rejects if r not in refused}
    assert_reasons({**by_line, cases.index(OVER_CONTEXT) + 1: refused[0]["reason"]}, cases)
    assert not any(re.search(r"line \d", kind) for kind in result.rejected_reasons)  # by kind; lines in the file
    assert sum(result.rejected_reasons.values()) == result.rows_rejected


def _cot(i: int, **changes) -> dict:
    return {"id": f"p{i // 2}", "sample_id": f"s{i}", "problem": f"What is {i} + 1?", "response": f"\\boxed{{{i + 1}}}",
            "correct": i % 2 == 0, "reward": 1.0, "advantage": 0.5 - i % 2, **changes}  # fmt: skip


def test_cot_rows_from_json_lines_are_quarantined_with_their_reasons_in_a_group_stage(tmp_path, ray_cluster):
    """curate reads CoT rows like judge, rewrite, select and pairs do (jobs/data/sources.py:cot_rows_dataset)."""
    from jobs.data import curate

    lines = [json.dumps(_cot(i)).encode() for i in range(4)]
    lines += [
        b"\xef\xbb\xbfnot at the start",
        b"",
        json.dumps(_cot(9, response=["a"])).encode(),
        json.dumps(_cot(0)).encode(),
        b"[1]",
        b'{"id": "p1", "id": "p2"}',
        json.dumps(_cot(5, reward="1")).encode(),
    ]
    (tmp_path / "cots.jsonl").write_bytes(b"\r\n".join(lines))  # CRLF throughout, no final newline
    job = build_config({"job_type": "curate", "output_dir": str(tmp_path / "out"),
                        "dataset": {"labeled_path": str(tmp_path / "cots.jsonl")},
                        "processing": {"curate": {"min_group_size": 2}}})  # fmt: skip
    env = StageEnv("curate", tmp_path / "out", tmp_path / "out" / "rejected", ray_cluster)
    result = curate.run(job, env)

    assert result.rows_in == len(lines) and result.rows_in == result.rows_out + result.rows_rejected
    assert result.rows_out == 4 and result.metrics["groups"] == 2  # p0 and p1, two CoTs each
    reasons = {_line_of(r["reason"]): r["reason"] for r in _rejects(tmp_path / "out" / "rejected" / "curate.jsonl")}
    assert reasons == {
        5: "malformed JSON: line 5, Unexpected UTF-8 BOM (decode using utf-8-sig) at column 1",
        6: "blank line: line 6",
        7: "wrong type: line 7, field 'response' holds an array, not a string",
        8: "duplicate sample_id: line 8 repeats 's0' from line 1",
        9: "not a JSON object: line 9, it holds an array",
        10: "duplicate key: line 10, 'id' appears twice in one object",
        11: "wrong type: line 11, field 'reward' holds a string, not a number",
    }


def test_a_teacher_stage_rejects_rows_its_reader_tagged_without_asking_the_teacher(tmp_path, ray_cluster, serve_port):
    from jobs.data import judge

    lines = [
        json.dumps(_cot(0)).encode(),
        b"\xff",
        json.dumps(_cot(1, problem=3)).encode(),
        json.dumps(_cot(0)).encode(),
    ]
    (tmp_path / "cots.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    job = build_config({
        "job_type": "judge", "output_dir": str(tmp_path / "out"),
        "dataset": {"labeled_path": str(tmp_path / "cots.jsonl")},
        "models": {"teacher": "tiny:smollm2"}, "inference": {"serve": {"port": serve_port}, "batch_size": 4},
        "processing": {"judge": {"criteria": ["rv"], "max_attempts": 1, "max_new_tokens": 4}},
    })  # fmt: skip
    env = StageEnv("judge", tmp_path / "out", tmp_path / "out" / "rejected", ray_cluster)
    result = judge.run(job, env)

    assert (result.rows_in, result.rows_out + result.rows_rejected) == (4, 4)
    assert result.metrics["teacher_calls"] == 1  # only the one good CoT was judged
    reasons = sorted(
        r["reason"] for r in _rejects(tmp_path / "out" / "rejected" / "judge.jsonl") if "line" in r["reason"]
    )
    assert reasons == ["duplicate sample_id: line 4 repeats 's0' from line 1",
                           "not valid UTF-8: line 2, byte 0xFF at byte 1",
                           "wrong type: line 3, field 'problem' holds a number, not a string"]  # fmt: skip


def test_collect_quarantines_bad_records_and_repeated_ids_per_source(tmp_path, ray_cluster):
    from jobs.data import collect

    cases = [c for c in CASES if c.name != "line over max_line_bytes"]  # collect reads with the default limit
    write_cases(tmp_path / "faults.jsonl", cases)
    job = build_config({"job_type": "collect", "output_dir": str(tmp_path / "out"), "processing": {"collect": {
        "dedup": False, "sources": [{"path": str(tmp_path / "faults.jsonl"), "task": "math", "id_field": "id",
                                     "name": "f"}]}}})  # fmt: skip
    env = StageEnv("collect", tmp_path / "out", tmp_path / "out" / "rejected", ray_cluster)
    result = collect.run(job, env)

    assert result.rows_in == len(cases) and result.rows_in == result.rows_out + result.rows_rejected
    rows = pq.read_table(tmp_path / "out" / "problems").to_pylist()
    assert {r["id"] for r in rows} == {f"f:{i}" for i in good_ids(cases)}  # explicit ids get the source's label
    rejects = _rejects(tmp_path / "out" / "rejected" / "collect.jsonl")
    assert all(r["row"]["source"] == "f" and r["row"]["where"] in r["reason"] for r in rejects)
    assert_reasons({_line_of(r["reason"]): r["reason"] for r in rejects}, cases)


class Counting:
    """A teacher client that counts the requests it sends."""

    def __init__(self, client):
        self.client, self.calls = client, 0

    def chat(self, body):
        self.calls += 1
        return self.client.chat(body)


def test_an_over_long_prompt_is_a_request_error_rejected_at_once_not_a_down_teacher(ray_cluster, serve_port):
    """Through the real teacher service, in-cluster (handle) and over HTTP: the teacher answers the over-long prompt
    with a 400 naming the token counts, the client rejects that row after one request (no retries), and a chat
    message without content is a 400 naming the field (issue 15 items 2 and 6)."""
    import httpx

    from actors.teacher_client import OpenAITeacherClient, ServeTeacherClient, TeacherRejected, chat_with_retries
    from distill_ray.config import ServeConfig
    from serve.teacher import deploy_teacher, undeploy

    endpoint = deploy_teacher("tiny:smollm2", ServeConfig(port=serve_port, num_cpus=0.5), app_name="teacher-long")
    try:
        body = {"model": endpoint.served_name, "messages": [{"role": "user", "content": "What is 1 + 1? " * 3000}],
                "max_tokens": 4}  # fmt: skip
        for client in (ServeTeacherClient(endpoint.app_name, 60), OpenAITeacherClient(endpoint.base_url, None, 60)):
            counting = Counting(client)
            with pytest.raises(TeacherRejected, match=r"the prompt has \d+ tokens; the model's context is \d+ tokens"):
                chat_with_retries(counting, body, max_retries=3, base_delay=0.01)
            assert counting.calls == 1
        reply = httpx.post(f"{endpoint.base_url}/chat/completions", json={"messages": [{"role": "user"}]}, timeout=60)
        assert reply.status_code == 400 and reply.json()["error"]["param"] == "messages[0].content"
    finally:
        undeploy(endpoint.app_name)
