"""benchmarks/compare_runs.py: one model label in two distill_quality run folders, paired answer by answer (no Ray)."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from benchmarks import compare_runs


def _answers(run, label, correct, split="test", tokens=10):
    folder = run / "eval" / "results" / label / f"arithmetic_{split}"
    folder.mkdir(parents=True)
    rows = [{"id": f"p{i}", "correct": c, "completion_tokens": tokens, "finish_reason": "stop"}
            for i, c in enumerate(correct)]  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows), folder / "part-0.parquet")


def test_the_paired_difference_is_ablated_minus_reference_on_shared_problems(tmp_path, capsys):
    reference, ablated = tmp_path / "ref", tmp_path / "abl"
    _answers(reference, "advdistill", [True, True, False, False, False, False], tokens=20)
    _answers(ablated, "advdistill", [True, True, True, True, False], tokens=40)  # p5 not answered: left out
    assert compare_runs.main([str(reference), str(ablated), "--labels", "advdistill"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["results"][0]
    assert result["problems"] == 5
    assert result["reference"]["pass@1"] == round(2 / 6, 4) and result["ablated"]["pass@1"] == 0.8
    diff = result["ablated_minus_reference"]
    assert diff["difference"] == pytest.approx(2 / 5) and diff["a_only"] == 2 and diff["b_only"] == 0  # on the 5 shared problems
    assert diff["low"] <= diff["difference"] <= diff["high"]
    assert (result["reference"]["mean_tokens_correct"], result["ablated"]["mean_tokens_correct"]) == (20, 40)


def test_a_label_missing_from_a_folder_exits_2_naming_it(tmp_path, capsys):
    _answers(tmp_path / "ref", "kd", [True])
    _answers(tmp_path / "abl", "kd", [True], split="dev")  # answers on dev only
    assert compare_runs.main([str(tmp_path / "ref"), str(tmp_path / "abl"), "--labels", "kd"]) == 2
    err = capsys.readouterr().err
    assert "no answers of 'kd' on the test split" in err and str(tmp_path / "abl") in err
    assert compare_runs.main([str(tmp_path / "ref"), str(tmp_path / "abl"), "--labels", "kd", "--dev"]) == 2
