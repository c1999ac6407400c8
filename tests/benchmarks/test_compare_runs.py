"""benchmarks/compare_runs.py: one model label in two distill_quality run folders, paired answer by answer (no Ray)."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from benchmarks import compare_runs


def _answers(run, label, correct, split="test", tokens=10, first=0, benchmark="arithmetic"):
    folder = run / "eval" / "results" / label / f"{benchmark}_{split}"
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"id": f"p{i}", "correct": c, "completion_tokens": tokens, "finish_reason": "stop"}
            for i, c in enumerate(correct, start=first)]  # fmt: skip
    schema = pa.schema([("id", pa.string()), ("correct", pa.bool_()), ("completion_tokens", pa.int64()),
                        ("finish_reason", pa.string())])  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / "part-0.parquet")


def test_the_paired_difference_is_ablated_minus_reference_on_shared_problems(tmp_path, capsys):
    reference, ablated = tmp_path / "ref", tmp_path / "abl"
    _answers(reference, "advdistill", [True, True, False, False, False, False], tokens=20)  # p0..p5
    _answers(ablated, "advdistill", [True, True, True, True, False], tokens=40)  # p0..p4
    (reference / "eval/results/advdistill/arithmetic_test/part-0.parquet").unlink()
    _answers(reference, "advdistill", [True, True, False, False, False, False][1:], tokens=20, first=1)  # p1..p5
    assert compare_runs.main([str(reference), str(ablated), "--labels", " advdistill, "]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["results"][0]
    # only p1..p4 were answered in both: reference right on p1, ablated on p1..p3
    assert result["problems"] == 4
    assert result["reference"]["pass@1"] == 0.25 and result["ablated"]["pass@1"] == 0.75
    diff = result["ablated_minus_reference"]
    assert diff["difference"] == pytest.approx(0.5) and diff["a_only"] == 2 and diff["b_only"] == 0
    assert diff["low"] <= diff["difference"] <= diff["high"]
    assert (result["reference"]["mean_tokens_correct"], result["ablated"]["mean_tokens_correct"]) == (20, 40)


def test_a_label_missing_from_a_folder_exits_2_naming_it(tmp_path, capsys):
    _answers(tmp_path / "ref", "kd", [True])
    _answers(tmp_path / "abl", "kd", [True], split="dev")  # answers on dev only
    assert compare_runs.main([str(tmp_path / "ref"), str(tmp_path / "abl"), "--labels", "kd"]) == 2
    err = capsys.readouterr().err
    assert "no answers of 'kd' on the test split" in err and str(tmp_path / "abl") in err
    assert compare_runs.main([str(tmp_path / "ref"), str(tmp_path / "abl"), "--labels", "kd", "--dev"]) == 2
    assert str(tmp_path / "ref") in capsys.readouterr().err  # on dev, the reference is the one without answers
    _answers(tmp_path / "ref", "empty", [])  # a folder whose file has no rows
    _answers(tmp_path / "abl", "empty", [True])
    assert compare_runs.main([str(tmp_path / "ref"), str(tmp_path / "abl"), "--labels", "empty"]) == 2
    assert "no answers of 'empty'" in capsys.readouterr().err
    (tmp_path / "ref/eval/results/empty/arithmetic_test/part-0.parquet").write_bytes(b"not parquet")
    assert compare_runs.main([str(tmp_path / "ref"), str(tmp_path / "abl"), "--labels", "empty"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("compare_runs: unreadable answers of 'empty'") and err.count("\n") == 1


def test_gsm8k_runs_are_read_from_their_own_result_folders(tmp_path, capsys):
    _answers(tmp_path / "ref", "kd", [True, False], benchmark="gsm8k")
    _answers(tmp_path / "abl", "kd", [True, True], benchmark="gsm8k")
    runs = [str(tmp_path / "ref"), str(tmp_path / "abl"), "--labels", "kd"]
    assert compare_runs.main(runs) == 2  # no arithmetic answers in either folder
    assert "no answers of 'kd' on the test split" in capsys.readouterr().err
    assert compare_runs.main([*runs, "--benchmark", "gsm8k"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (line["problem_set"], line["split"], line["results"][0]["problems"]) == ("gsm8k", "test", 2)
    with pytest.raises(SystemExit) as stopped:
        compare_runs.main([*runs, "--benchmark", "gsm8k", "--dev"])
    assert stopped.value.code == 2 and "no dev split" in capsys.readouterr().err
