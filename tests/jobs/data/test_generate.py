"""The generation job on the embedded cluster: Ray Data -> Serve teacher -> scored Parquet + rejects."""

import json
import shutil

import pyarrow.parquet as pq
import pytest
from conftest import assert_declared_schema

from distill_ray.config import build_config
from distill_ray.data import schemas
from jobs.stage import StageEnv

pytestmark = pytest.mark.ray


def _write_prompts(path):
    good = [{"question": f"What is {a} + {a}?", "answer": str(2 * a)} for a in range(2, 6)]
    lines = [json.dumps(r) for r in good]
    lines += ['{"question": "broken json', json.dumps({"question": "no answer"}),
              json.dumps({"question": "  ", "answer": "1"})]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")


def _job(tmp_path, serve_port, teacher="tiny:smollm2", **inference):
    return build_config({
        "job_type": "generate",
        "output_dir": str(tmp_path / "out"),
        "dataset": {"instruction_path": str(tmp_path / "prompts.jsonl")},
        "models": {"teacher": teacher},
        "inference": {"max_new_tokens": 8, "temperature": [0.7, 1.0], "num_samples": 2, "seed": 1,
                      "serve": {"port": serve_port}, **inference},
        "distillation": {"keep": "all"},
    })  # fmt: skip


def test_generate_writes_scored_samples_and_quarantines_bad_rows(tmp_path, ray_cluster, serve_port):
    from jobs.data import generate

    _write_prompts(tmp_path / "prompts.jsonl")
    job = _job(tmp_path, serve_port)
    env = StageEnv("generate", tmp_path / "out", tmp_path / "out" / "rejected", ray_cluster)
    result = generate.run(job, env)

    table = pq.read_table(tmp_path / "out" / "generations")
    rows = table.to_pylist()
    assert len(rows) == 4 * 2 * 2  # problems x temperatures x samples
    assert len({r["sample_id"] for r in rows}) == len(rows)
    assert {r["temperature"] for r in rows} == {0.7, 1.0}
    assert all(r["completion_tokens"] >= 1 and r["finish_reason"] in ("stop", "length") for r in rows)
    assert all(r["correct"] in (True, False) and r["advantage"] is not None for r in rows)
    # Counted per problem: in = out + rejected; samples are records_written.
    assert (result.rows_in, result.rows_out, result.rows_rejected) == (7, 4, 3)
    assert result.metrics["records_written"] == 16 and result.metrics["kept"] == 16  # keep=all
    assert result.metrics["teacher_calls"] == 4 * 2 and result.metrics["teacher_calls_reused"] == 0

    rejected = [json.loads(line) for line in (tmp_path / "out" / "rejected" / "generate.jsonl").open()]
    reasons = sorted(r["reason"] for r in rejected)
    assert len(rejected) == 3
    assert any("malformed JSON" in r for r in reasons)
    assert any("answer" in r for r in reasons) and any("prompt" in r for r in reasons)
    assert pq.read_table(tmp_path / "out" / "kept").num_rows == 16
    for folder in ("generations", "kept"):
        assert_declared_schema(tmp_path / "out" / folder, schemas.SAMPLE)


def test_unreachable_teacher_fails_the_stage_and_keeps_finished_parts(tmp_path, ray_cluster, serve_port):
    from conftest import free_port

    from jobs.data import generate

    _write_prompts(tmp_path / "prompts.jsonl")
    job = _job(tmp_path, serve_port, engine="openai", base_url=f"http://127.0.0.1:{free_port()}/v1",
               max_retries=1, request_timeout_s=5)  # fmt: skip
    env = StageEnv("generate", tmp_path / "out", tmp_path / "out" / "rejected", ray_cluster)
    with pytest.raises(RuntimeError, match="teacher unreachable.*re-run the same command") as stopped:
        generate.run(job, env)
    # The message the worker raised, not the line of source code that raised it.
    assert "after 2 attempt(s): APIConnectionError" in str(stopped.value) and "{" not in str(stopped.value)


def test_a_prompt_the_teacher_refuses_rejects_that_row_and_the_stage_goes_on(tmp_path, ray_cluster, serve_port):
    """A request error (here: a prompt longer than the teacher's context) is a bad row, not a down teacher."""
    from jobs.data import generate

    _write_prompts(tmp_path / "prompts.jsonl")
    with (tmp_path / "prompts.jsonl").open("a") as fh:
        fh.write(json.dumps({"question": "What is 1 + 1? " * 3000, "answer": "2"}) + "\n")
    env = StageEnv("generate", tmp_path / "out", tmp_path / "out" / "rejected", ray_cluster)
    result = generate.run(_job(tmp_path, serve_port, max_retries=3), env)
    assert (result.rows_in, result.rows_out, result.rows_rejected) == (8, 4, 4)
    assert result.metrics["teacher_calls"] == 5 * 2  # the refused request was not retried
    rejected = [json.loads(line) for line in (tmp_path / "out" / "rejected" / "generate.jsonl").open()]
    refused = [r for r in rejected if r["reason"].startswith("teacher rejected the request")]
    assert len(refused) == 1 and "context" in refused[0]["reason"]


def no_deploy(*args, **kwargs):
    raise AssertionError("a generate run whose every problem is stored deployed its teachers")


def test_rerun_reuses_committed_parts_without_new_teacher_calls(tmp_path, ray_cluster, serve_port, monkeypatch):
    from jobs.data import generate

    _write_prompts(tmp_path / "prompts.jsonl")
    job = _job(tmp_path, serve_port, batch_size=1)  # one problem per part
    env = StageEnv("generate", tmp_path / "out", tmp_path / "out" / "rejected", ray_cluster)
    first = generate.run(job, env)
    manifests = sorted((tmp_path / "out" / "generations" / "_manifests").glob("part-*.json"))
    with_calls = [m for m in manifests if json.loads(m.read_text())["teacher_calls"] > 0]
    with_calls[0].unlink()  # as if the run had been killed just before committing this part
    second = generate.run(job, env)
    rows = pq.read_table(tmp_path / "out" / "generations").to_pylist()
    assert len(rows) == 16 and len({r["sample_id"] for r in rows}) == 16  # nothing lost, nothing twice
    assert second.metrics["teacher_calls_reused"] + second.metrics["teacher_calls"] == first.metrics["teacher_calls"]
    assert 0 < second.metrics["teacher_calls"] < first.metrics["teacher_calls"]
    assert (second.rows_in, second.rows_out, second.rows_rejected) == (7, 4, 3)
    assert len((tmp_path / "out" / "rejected" / "generate.jsonl").read_text().splitlines()) == 3

    shutil.rmtree(tmp_path / "out" / "kept")  # a finished run again (a pipeline resumed after a later stage failed):
    monkeypatch.setattr(generate, "reach_teachers", no_deploy)  # no teacher deployed, the kept rows rewritten
    third = generate.run(job, env)
    assert (third.rows_in, third.rows_out, third.rows_rejected) == (7, 4, 3) and third.metrics["teacher_calls"] == 0
    assert pq.read_table(tmp_path / "out" / "kept").num_rows == 16
    assert len((tmp_path / "out" / "rejected" / "generate.jsonl").read_text().splitlines()) == 3


def test_a_teacher_trained_again_in_its_folder_is_asked_again(tmp_path, ray_cluster, serve_port):
    """Stored parts belong to the teacher's weights, not its folder's name: a student retrained in place (then
    evaluated, or used as a teacher) must not be answered from the parts its old weights wrote."""
    import shutil

    from safetensors.torch import load_file, save_file

    from distill_ray.models.loading import resolve_model
    from jobs.data import generate

    _write_prompts(tmp_path / "prompts.jsonl")
    folder = tmp_path / "student" / "model"
    shutil.copytree(resolve_model("tiny:smollm2"), folder)
    job = _job(tmp_path, serve_port, teacher=str(folder))
    env = StageEnv("generate", tmp_path / "out", tmp_path / "out" / "rejected", ray_cluster)
    first = generate.run(job, env)
    assert first.metrics["teacher_calls"] == 4 * 2 and first.metrics["teacher_calls_reused"] == 0

    weights = load_file(folder / "model.safetensors")  # "trained again": other weights, same files and sizes
    save_file({k: v + 0.05 for k, v in weights.items()}, folder / "model.safetensors", metadata={"format": "pt"})
    again = generate.run(job, env)
    assert again.metrics["teacher_calls"] == 4 * 2 and again.metrics["teacher_calls_reused"] == 0
    unchanged = generate.run(job, env)  # the same weights once more: every part is reused
    assert unchanged.metrics["teacher_calls"] == 0 and unchanged.metrics["teacher_calls_reused"] == 4 * 2


def test_several_teachers_share_one_app_with_a_deployment_each(tmp_path, ray_cluster, serve_port, monkeypatch):
    from jobs.data import generate

    _write_prompts(tmp_path / "prompts.jsonl")
    job = _job(tmp_path, serve_port, temperature=0.7, num_samples=1)
    job.models.teachers = {"big": {"model": "tiny:smollm2", "num_samples": 2},
                           "small": {"model": "tiny:smollm2", "concurrency": 1}}  # fmt: skip
    env = StageEnv("generate", tmp_path / "out", tmp_path / "out" / "rejected", ray_cluster)
    bar_totals, drain = [], generate.drain  # the progress bar's total: the rows each run's manifests will report
    monkeypatch.setattr(generate, "drain", lambda *a, **kw: bar_totals.append(kw["total"]) or drain(*a, **kw))
    result = generate.run(job, env)
    assert bar_totals == [result.rows_in]  # the malformed rows counted once, as the one teacher that rejects them
    rows = pq.read_table(tmp_path / "out" / "generations").to_pylist()
    by_teacher = {t: [r for r in rows if r["teacher"] == t] for t in ("big", "small")}
    assert len(by_teacher["big"]) == 4 * 2 and len(by_teacher["small"]) == 4
    assert (result.rows_in, result.rows_out, result.rows_rejected) == (4 * 2 + 3, 8, 3)  # malformed once
    assert set(result.metrics["per_teacher"]) == {"big", "small"}
    deploy = generate.reach_teachers
    monkeypatch.setattr(generate, "reach_teachers", no_deploy)  # every teacher's share is stored
    again = generate.run(job, env)
    assert (again.rows_in, again.rows_out, again.rows_rejected) == (4 * 2 + 3, 8, 3)
    assert again.metrics["per_teacher"] == result.metrics["per_teacher"]

    # The same teachers listed the other way round reuse the store (keyed by name); with one of small's parts lost,
    # the rerun asks small again, and the malformed rows, already rejected, must not be rejected a second time.
    manifests = sorted((tmp_path / "out" / "generations" / "_manifests").glob("part-*.json"))
    lost = next(m for m in manifests if all(k.startswith("small|") for k in json.loads(m.read_text())["keys"]))
    lost_keys = len(json.loads(lost.read_text())["keys"])
    (tmp_path / "out" / "generations" / f"{lost.stem}.parquet").unlink()
    lost.unlink()
    job.models.teachers = dict(reversed(job.models.teachers.items()))
    monkeypatch.setattr(generate, "reach_teachers", deploy)
    reordered = generate.run(job, env)
    assert reordered.metrics["teacher_calls"] > 0 and bar_totals[-1] == lost_keys  # small asked again, that part only
    assert (reordered.rows_in, reordered.rows_out, reordered.rows_rejected) == (4 * 2 + 3, 8, 3)
    assert len(pq.read_table(tmp_path / "out" / "generations")) == 4 * 2 + 4


def test_input_with_only_bad_rows_yields_empty_outputs_not_a_crash(tmp_path, ray_cluster, serve_port):
    from jobs.data import generate

    (tmp_path / "prompts.jsonl").write_text('{"question": \n{"answer": "3"}\n')
    job = _job(tmp_path, serve_port)
    env = StageEnv("generate", tmp_path / "out", tmp_path / "out" / "rejected", ray_cluster)
    result = generate.run(job, env)
    assert (result.rows_in, result.rows_out, result.rows_rejected) == (2, 0, 2)
    assert pq.read_table(tmp_path / "out" / "generations").num_rows == 0
    assert (tmp_path / "out" / "kept").is_dir()
