"""Teacher-calling data stages with the tiny random teacher: its replies are noise, so these tests pin
the robustness paths (unparseable verdicts retried then rejected, accounting, config errors). The
recipes' e2e tests run the same stages with the real SmolLM2 teacher."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import assert_declared_schema

from distill_ray.config import build_config
from distill_ray.data import schemas
from distill_ray.errors import ConfigError
from jobs.stage import StageEnv

pytestmark = pytest.mark.ray


def _cots(path, n=6):
    rows = [{"id": f"p{i // 2}", "sample_id": f"p{i // 2}:s{i % 2}", "problem": f"What is {i} + 1?",
             "response": f"<think>{i} plus one</think><answer>\\boxed{{{i + 1}}}</answer>", "reference": str(i + 1),
             "correct": True} for i in range(n)]  # fmt: skip
    rows.append({"id": "p9", "sample_id": "p9:s0", "problem": "", "response": "x", "reference": "1", "correct": False})
    pq.write_table(pa.Table.from_pylist(rows), path)
    return rows


def _job(tmp_path, serve_port, job_type, **sections):
    return build_config({
        "job_type": job_type, "output_dir": str(tmp_path / "out"),
        "dataset": {"labeled_path": str(tmp_path / "cots.parquet"), "instruction_path": str(tmp_path / "texts.jsonl")},
        "models": {"teacher": "tiny:smollm2"},
        "inference": {"serve": {"port": serve_port}, "batch_size": 2},
        **sections,
    })  # fmt: skip


def test_judge_retries_then_rejects_unparseable_verdicts_and_counts_everything(tmp_path, ray_cluster, serve_port):
    from jobs.data import judge

    _cots(tmp_path / "cots.parquet")
    job = _job(tmp_path, serve_port, "judge", processing={"judge": {"criteria": ["rv"], "max_attempts": 2}})
    env = StageEnv("judge", tmp_path / "out", tmp_path / "out" / "rejected", ray_cluster)
    result = judge.run(job, env)
    assert result.rows_in == 7 and result.rows_in == result.rows_out + result.rows_rejected
    assert result.rejected_reasons.get("missing field") == 1
    judged = pq.read_table(tmp_path / "out" / "judged").to_pylist()
    assert all(0 <= r["rv"] <= 9 for r in judged)
    assert_declared_schema(tmp_path / "out" / "judged", schemas.judged(pq.read_schema(tmp_path / "cots.parquet"), ["rv"]))
    lines = [json.loads(x) for x in (tmp_path / "out" / "rejected" / "judge.jsonl").read_text().splitlines()]
    unparsed = [r for r in lines if r["reason"].startswith("unparseable rv judgement")]
    assert len(unparsed) == result.rejected_reasons.get("unparseable rv judgement", 0)
    assert all("2 attempt(s)" in r["reason"] for r in unparsed)
    # one ask per CoT, a second only for those whose first verdict did not parse
    assert 6 <= result.metrics["teacher_calls"] <= 12


def test_rewrite_needs_judged_rows(tmp_path, ray_cluster, serve_port):
    from jobs.data import rewrite

    _cots(tmp_path / "cots.parquet")
    env = StageEnv("rewrite", tmp_path / "out", tmp_path / "out" / "rejected", ray_cluster)
    with pytest.raises(ConfigError, match="no 'difficulty' column"):
        rewrite.run(_job(tmp_path, serve_port, "rewrite"), env)


def test_extract_pairs_rejects_replies_that_hold_no_pairs(tmp_path, ray_cluster, serve_port):
    from jobs.data import synthesize

    (tmp_path / "texts.jsonl").write_text("\n".join(json.dumps({"text": f"Paris is the capital of France. {i}"})
                                                    for i in range(3)) + "\n")  # fmt: skip
    job = _job(tmp_path, serve_port, "synthesize",
               processing={"synthesize": {"operator": "extract_pairs", "max_new_tokens": 12, "max_attempts": 2}})
    job.dataset.prompt_field = "text"
    env = StageEnv("synthesize", tmp_path / "out", tmp_path / "out" / "rejected", ray_cluster)
    result = synthesize.run(job, env)
    assert result.rows_in == 3 == result.rows_out + result.rows_rejected
    assert result.rejected_reasons == {"unparseable extract_pairs reply": 3}  # random tokens are not JSON
    assert result.metrics["teacher_calls"] == 3 * 2


def test_group_stage_on_an_empty_input_writes_empty_readable_outputs(tmp_path, ray_cluster):
    from jobs.data import select

    schema = pa.schema([("id", pa.string()), ("sample_id", pa.string()), ("correct", pa.bool_()),
                        ("difficulty", pa.string())])  # fmt: skip
    (tmp_path / "in").mkdir()
    pq.write_table(schema.empty_table(), tmp_path / "in" / "empty.parquet")  # what an all-rejected stage leaves
    job = build_config({"job_type": "select", "output_dir": str(tmp_path / "out"),
                        "dataset": {"labeled_path": str(tmp_path / "in")},
                        "processing": {"select": {"split_by": "difficulty"}}})  # fmt: skip
    result = select.run(job, StageEnv("select", tmp_path / "out", tmp_path / "out" / "rejected", ray_cluster))
    assert (result.rows_in, result.rows_out, result.rows_rejected) == (0, 0, 0)
    assert result.metrics["split"] == {"easy": 0, "medium": 0, "hard": 0}
    for folder in ("selected", "medium", "hard"):
        assert_declared_schema(tmp_path / "out" / folder, schemas.selected(schema))
