"""The trainers' shared driver without Ray: rows checked and rejected with reasons, the no-usable-rows error,
the training rows file and phase, and the stage result (`fit` replaced by a stub that records its phases)."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from trainer_fixtures import job, stage, write_parquet

from distill_ray.errors import ConfigError, InputFileError
from distill_ray.summary import StageResult
from distill_ray.training.rows import text_problem
from jobs.train import driver

ROWS = [{"problem": "What is 1+1?", "response": "2", "difficulty": "easy", "junk": 1},
        {"problem": " ", "response": "2", "difficulty": "easy", "junk": 2},
        {"problem": "What is 2+2?", "response": None, "difficulty": "hard", "junk": 3}]  # fmt: skip


def _labeled(path) -> driver.RowsInput:
    return driver.RowsInput(str(path), ["problem", "response"], lambda row: text_problem(row, ("problem", "response")),
                            ["difficulty"], noun="training rows")  # fmt: skip


def test_checked_rows_keeps_clean_rows_and_records_the_rest(tmp_path):
    env = stage("sft", tmp_path, None)
    result = StageResult(name="sft", job_type="sft")
    clean = driver.checked_rows(env, result, _labeled(write_parquet(ROWS, tmp_path / "rows.parquet")))
    assert clean == [{"problem": "What is 1+1?", "response": "2", "difficulty": "easy"}]
    assert (result.rows_in, result.rows_rejected) == (3, 2)
    assert result.rejected_reasons == {"empty problem": 1, "missing response": 1}
    lines = [json.loads(line) for line in env.rejected_file.read_text().splitlines()]
    assert [(r["stage"], r["reason"], r["row"]["problem"]) for r in lines] == [
        ("sft", "empty problem", " "), ("sft", "missing response", "What is 2+2?")]  # fmt: skip


def test_no_usable_rows_is_an_input_error_naming_the_file(tmp_path):
    path = write_parquet(ROWS[1:], tmp_path / "bad.parquet")
    result = StageResult(name="sft", job_type="sft")
    with pytest.raises(InputFileError, match=r"bad\.parquet: no usable training rows \(2 rejected"):
        driver.checked_rows(stage("sft", tmp_path, None), result, _labeled(path))
    assert result.rows_rejected == 2  # recorded before the error


def test_an_unset_rows_path_is_a_config_error():
    from distill_ray.config import JobConfig

    with pytest.raises(ConfigError, match="dataset.labeled_path: the dpo job reads"):
        driver.labeled_path(JobConfig(job_type="dpo"), "the dpo job reads its preference pairs from this file")


def test_train_on_rows_writes_one_phase_and_fills_the_result(tmp_path, monkeypatch):
    seen = {}

    def fake_fit(job, stage, objective, phases):
        seen["phases"] = phases
        return {"steps": phases[0].steps}

    monkeypatch.setattr(driver, "fit", fake_fit)
    cfg = job("advdistill", "rows.parquet", tmp_path, per_device_train_batch_size=4, num_workers=2)
    env = stage("advdistill", tmp_path, None)
    result = StageResult(name="advdistill", job_type="advdistill", rows_in=9, rows_rejected=1)
    rows = [{"problem": f"p{i}", "response": "r", "extra": i} for i in range(8)]
    out = driver.train_on_rows(cfg, env, result, None, rows, ["problem", "response"], micro_batch=1,
                               metrics={"mode": "advdistill"})  # fmt: skip
    (phase,) = seen["phases"]
    assert (phase.name, phase.rows, phase.steps) == ("advdistill", 8, 4)  # 4 rows per rank, one per micro-batch
    assert pq.read_table(phase.rows_path).to_pylist() == [{"problem": f"p{i}", "response": "r"} for i in range(8)]
    assert out is result and result.rows_out == 8  # rows_in - rows_rejected
    assert list(result.metrics) == ["steps", "mode"]
    assert result.outputs == {"model": str(env.output_dir / "model"),
                              "checkpoints": str(env.output_dir / "checkpoints")}  # fmt: skip
