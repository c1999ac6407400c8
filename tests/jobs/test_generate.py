"""The generation job on the embedded cluster: Ray Data -> Serve teacher -> scored Parquet + rejects."""

import json

import pyarrow.parquet as pq
import pytest

from distill_ray.config import build_config
from jobs.common import StageEnv

pytestmark = pytest.mark.ray


def _write_prompts(path):
    good = [{"question": f"What is {a} + {a}?", "answer": str(2 * a)} for a in range(2, 6)]
    lines = [json.dumps(r) for r in good]
    lines += ['{"question": "broken json', json.dumps({"question": "no answer"}),
              json.dumps({"question": "  ", "answer": "1"})]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")


def _job(tmp_path, serve_port, **inference):
    return build_config({
        "job_type": "generate",
        "output_dir": str(tmp_path / "out"),
        "dataset": {"instruction_path": str(tmp_path / "prompts.jsonl")},
        "models": {"teacher": "tiny:smollm2"},
        "inference": {"max_new_tokens": 8, "temperature": [0.7, 1.0], "num_samples": 2, "seed": 1,
                      "serve": {"port": serve_port}, **inference},
        "distillation": {"keep": "all"},
    })  # fmt: skip


def test_generate_writes_scored_samples_and_quarantines_bad_rows(tmp_path, ray_cluster, serve_port):
    from jobs import generate

    _write_prompts(tmp_path / "prompts.jsonl")
    job = _job(tmp_path, serve_port)
    env = StageEnv("generate", tmp_path / "out", tmp_path / "out" / "rejected", ray_cluster)
    result = generate.run(job, env)

    table = pq.read_table(tmp_path / "out" / "generations")
    rows = table.to_pylist()
    assert len(rows) == 4 * 2 * 2  # problems x temperatures x samples
    assert len({r["sample_id"] for r in rows}) == len(rows)
    assert {r["temperature"] for r in rows} == {0.7, 1.0}
    assert all(r["error"] is None and r["completion_tokens"] >= 1 for r in rows)
    assert all(r["correct"] in (True, False) and r["advantage"] is not None for r in rows)
    assert result.rows_in == 7 and result.rows_out == 16  # keep=all keeps every sample
    assert result.rows_rejected == 3

    rejected = [json.loads(line) for line in (tmp_path / "out" / "rejected" / "generate.jsonl").open()]
    reasons = sorted(r["reason"] for r in rejected)
    assert len(rejected) == 3
    assert any("malformed JSON" in r for r in reasons)
    assert any("answer" in r for r in reasons) and any("prompt" in r for r in reasons)
    assert pq.read_table(tmp_path / "out" / "kept").num_rows == 16


def test_unreachable_external_teacher_rejects_rows_instead_of_crashing(tmp_path, ray_cluster, serve_port):
    from conftest import free_port
    from jobs import generate

    _write_prompts(tmp_path / "prompts.jsonl")
    job = _job(tmp_path, serve_port, engine="openai", base_url=f"http://127.0.0.1:{free_port()}/v1",
               max_retries=1, request_timeout_s=5)  # fmt: skip
    env = StageEnv("generate", tmp_path / "out", tmp_path / "out" / "rejected", ray_cluster)
    result = generate.run(job, env)
    assert result.rows_out == 0
    assert result.rejected_reasons["teacher error"] == 4 * 2  # one per (problem, temperature)
    assert result.metrics["teacher_errors"] == 8


def test_input_with_only_bad_rows_yields_empty_outputs_not_a_crash(tmp_path, ray_cluster, serve_port):
    from jobs import generate

    (tmp_path / "prompts.jsonl").write_text('{"question": \n{"answer": "3"}\n')
    job = _job(tmp_path, serve_port)
    env = StageEnv("generate", tmp_path / "out", tmp_path / "out" / "rejected", ray_cluster)
    result = generate.run(job, env)
    assert (result.rows_in, result.rows_out, result.rows_rejected) == (2, 0, 2)
    assert pq.read_table(tmp_path / "out" / "generations").num_rows == 0
    assert (tmp_path / "out" / "kept").is_dir()
