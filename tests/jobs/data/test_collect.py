"""The collect job: several sources -> one schema, dedup across sources, task-aware quotas, rejects."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import assert_declared_schema

from distill_ray.config import build_config
from distill_ray.data import schemas
from jobs.stage import StageEnv

pytestmark = pytest.mark.ray


def _hf_folder(path, rows):
    """A `datasets` save_to_disk folder, written with pyarrow (Arrow stream file + state.json)."""
    path.mkdir()
    table = pa.Table.from_pylist(rows)
    with pa.OSFile(str(path / "data-00000-of-00001.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    (path / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}))


def test_collect_maps_dedups_and_resamples(tmp_path, ray_cluster):
    from jobs.data import collect

    math_rows = [{"question": f"What is {i} + {i}?", "answer": str(2 * i), "level": i % 3} for i in range(10)]
    (tmp_path / "math.jsonl").write_text("\n".join(json.dumps(r) for r in math_rows) + "\n{broken\n")
    pq.write_table(pa.Table.from_pylist([{"prompt": "what is 1 +  1?", "solution": "2", "uid": 7},  # dup of math
                                         {"prompt": "Name a prime.", "solution": "2", "uid": 8}]),
                   tmp_path / "science.parquet")  # fmt: skip
    _hf_folder(tmp_path / "code_hf", [{"question": f"Write code {i}", "answer": "ok"} for i in range(6)])
    job = build_config({
        "job_type": "collect", "output_dir": str(tmp_path / "out"),
        "processing": {"collect": {
            "sources": [
                {"path": str(tmp_path / "math.jsonl"), "task": "math"},
                {"path": str(tmp_path / "science.parquet"), "task": "science", "prompt_field": "prompt",
                 "answer_field": "solution", "id_field": "uid", "name": "sci"},
                {"path": str(tmp_path / "code_hf"), "task": "code"},
            ],
            "task_caps": {"math": 8},
            "task_weights": {"math": 2, "code": 1},
        }},
    })  # fmt: skip
    env = StageEnv("collect", tmp_path / "out", tmp_path / "out" / "rejected", ray_cluster)
    result = collect.run(job, env)

    rows = pq.read_table(tmp_path / "out" / "problems").to_pylist()
    assert_declared_schema(tmp_path / "out" / "problems", schemas.COLLECTED_PROBLEM)
    assert set(rows[0]) == {"id", "task", "problem", "answer", "source", "extra"}
    mix = {t: sum(1 for r in rows if r["task"] == t) for t in ("math", "science", "code")}
    assert mix == {"math": 8, "science": 1, "code": 4}  # math capped at 8, then 2:1 with code (4 of 6 kept)
    assert result.metrics["mix_before"] == {"code": 6, "math": 10, "science": 1}
    assert result.metrics["mix_after"] == {"code": 4, "math": 8, "science": 1}
    assert next(r for r in rows if r["source"] == "sci")["id"] == "sci:8"  # explicit ids are prefixed
    assert all(json.loads(r["extra"]).get("level") is not None for r in rows if r["task"] == "math")
    assert (result.rows_in, result.rows_out + result.rows_rejected) == (10 + 1 + 2 + 6, 19)
    reasons = result.rejected_reasons
    assert reasons["duplicate problem"] == 1 and reasons["over task quota"] == 2 + 2
    assert sum(reasons.values()) == result.rows_rejected == 19 - 13
    lines = (tmp_path / "out" / "rejected" / "collect.jsonl").read_text().splitlines()
    assert len(lines) == result.rows_rejected


def test_collect_without_sources_is_a_config_error(tmp_path, ray_cluster):
    from distill_ray.errors import ConfigError
    from jobs.data import collect

    job = build_config({"job_type": "collect", "output_dir": str(tmp_path / "out")})
    env = StageEnv("collect", tmp_path / "out", tmp_path / "out" / "rejected", ray_cluster)
    with pytest.raises(ConfigError, match="processing.collect.sources"):
        collect.run(job, env)
