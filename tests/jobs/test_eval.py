"""The eval job side by side: two tiny models x two benchmarks -> per-row results, report, plots."""

import json

import pyarrow.parquet as pq
import pytest

from distill_ray.config import build_config
from jobs.stage import StageEnv

pytestmark = pytest.mark.ray
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_side_by_side_eval_writes_results_report_and_plots(tmp_path, ray_cluster, serve_port):
    from jobs import eval as eval_job

    bench = tmp_path / "levels.jsonl"
    bench.write_text("".join(json.dumps({"problem": f"What is {a} + 1?", "answer": str(a + 1), "level": a % 2})
                             + "\n" for a in range(4)) + "not json\n")  # fmt: skip
    job = build_config({
        "job_type": "eval",
        "output_dir": str(tmp_path / "out"),
        "inference": {"max_new_tokens": 6, "serve": {"port": serve_port}},
        "evaluation": {
            "models": {"tiny_a": "tiny:smollm2", "tiny_b": "tiny:smollm2?seed=1"},
            "benchmarks": [{"name": "levels", "path": str(bench), "prompt_field": "problem", "group_fields": ["level"]},
                           {"name": "arith", "preset": "arithmetic", "limit": 3}],
            "num_samples": 2, "temperature": 1.0, "ks": [1, 2],
        },
    })  # fmt: skip
    env = StageEnv("eval", tmp_path / "out", tmp_path / "out" / "rejected", ray_cluster)
    result = eval_job.run(job, env)

    assert result.rows_out == 2 * (4 + 3)  # models x problems (each answered twice)
    assert result.rejected_reasons == {"malformed JSON": 2}  # once per model; details in rejected/eval.jsonl
    for label in ("tiny_a", "tiny_b"):
        for name, problems in (("levels", 4), ("arith", 3)):
            rows = pq.read_table(tmp_path / "out" / "results" / label / name).to_pylist()
            assert len(rows) == problems * 2 and {r["sample_index"] for r in rows} == {0, 1}

    report = json.loads((tmp_path / "out" / "report.json").read_text())
    leaf = report["results"]["tiny_a"]["levels"]
    assert leaf["problems"] == 4 and leaf["samples"] == 8
    assert set(leaf["by_group"]["level"]) == {"0", "1"}
    assert {"pass@1", "pass@2"} <= set(leaf)
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "tiny_a" in markdown and "tiny_b" in markdown and "arith" in markdown
    pngs = sorted((tmp_path / "out").glob("*.png"))
    assert len(pngs) >= 3
    for png in pngs:
        assert png.read_bytes()[:8] == PNG_SIGNATURE
    assert result.metrics["results"]["tiny_b"]["arith"]["pass@2"] >= result.metrics["results"]["tiny_b"]["arith"]["pass@1"]
