"""The sft job end to end on the embedded cluster: 2 Ray Train workers (gloo) train a tiny student.

Checks that the loss really drops, the HF model folder loads, bad rows are rejected with reasons,
and that a second run on the same output folder resumes from the newest checkpoint.
"""

from __future__ import annotations

import json
import random

import pytest


def _write_rows(path, n: int = 16) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(0)
    rows = []
    for _ in range(n):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        rows.append({
            "problem": f"What is {a}+{b}?",
            "response": f"<think>{a} plus {b} is {a + b}.</think><answer>\\boxed{{{a + b}}}</answer>",
            "correct": True,  # extra generation columns are ignored
        })
    rows.append({"problem": "", "response": "<answer>\\boxed{1}</answer>", "correct": True})
    rows.append({"problem": "What is 1+1?", "response": None, "correct": False})
    pq.write_table(pa.Table.from_pylist(rows), path)


def _job(rows_path, out, **training):
    from distill_ray.config import JobConfig

    base = dict(num_workers=2, cpus_per_worker=0.5, learning_rate=1e-2, per_device_train_batch_size=4,
                max_length=128, lr_scheduler_type="constant", logging_steps=1,
                gradient_accumulation_steps=2)
    base.update(training)
    # No system prompt: shorter sequences keep the 2-core run quick (prompt building has unit tests).
    return JobConfig(job_type="sft", output_dir=str(out), dataset={"labeled_path": str(rows_path)},
                     inference={"system_prompt": ""}, models={"student": "tiny:smollm2"}, training=base)


def _stage(out, ray_cluster):
    from jobs.stage import StageEnv

    return StageEnv(name="sft", output_dir=out / "sft", rejected_dir=out / "rejected", ray=ray_cluster)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, ray_cluster):
    """4 steps with a checkpoint every 2: the run the resume test continues."""
    from jobs.train import sft

    tmp = tmp_path_factory.mktemp("sft")
    rows = tmp / "labeled.parquet"
    _write_rows(rows)
    stage = _stage(tmp / "run", ray_cluster)
    result = sft.run(_job(rows, tmp / "run", max_steps=4, save_steps=2), stage)
    return rows, stage, result


@pytest.mark.ray
def test_sft_rejects_bad_rows_and_checkpoints(first_run):
    _, stage, result = first_run
    assert (result.rows_in, result.rows_out, result.rows_rejected) == (18, 16, 2)
    assert result.rejected_reasons == {"empty problem": 1, "missing response": 1}
    rejected = [json.loads(line) for line in stage.rejected_file.read_text().splitlines()]
    assert sorted(r["reason"] for r in rejected) == ["empty problem", "missing response"]
    assert all(r["stage"] == "sft" and r["row"] for r in rejected)
    m = result.metrics
    assert m["steps"] == 4 and m["steps_run"] == 4 and m["resumed_from_step"] is None
    ckpts = sorted(p.name for p in (stage.output_dir / "checkpoints").iterdir())
    assert ckpts == ["step_2", "step_4"]  # no temp folder left behind
    # training.report_to is empty by default: no tracker wrote anything in the run folder.
    assert not any((stage.run_dir / name).exists() for name in ("tensorboard", "wandb", "mlruns"))


@pytest.mark.ray
def test_sft_resumes_trains_and_saves_hf_model(first_run, ray_cluster):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from jobs.train import sft

    rows, stage, first = first_run
    ckpts = stage.output_dir / "checkpoints"
    before = json.loads((ckpts / "step_4" / "trainer_state.json").read_text())["losses"]
    # save_total_limit 1: once step_12 is saved, step_2 and step_4 are deleted (a resume needs only the newest)
    result = sft.run(_job(rows, stage.output_dir.parent, max_steps=12, save_steps=100, save_total_limit=1), stage)
    m = result.metrics
    assert m["resumed_from_step"] == 4 and m["steps"] == 12 and m["steps_run"] == 8
    assert sorted(p.name for p in ckpts.iterdir()) == ["step_12"]
    state = json.loads((ckpts / "step_12" / "trainer_state.json").read_text())
    assert len(state["losses"]) == 12 and state["losses"][:4] == pytest.approx(before)
    # The loss history carries over a resume; over 12 steps it must drop by a real margin.
    assert m["first_loss"] == first.metrics["first_loss"]
    assert m["final_loss"] < 0.6 * m["first_loss"], m
    model_dir = result.outputs["model"]
    assert AutoModelForCausalLM.from_pretrained(model_dir).config.num_hidden_layers == 2
    assert AutoTokenizer.from_pretrained(model_dir).eos_token == "<|im_end|>"


def test_sft_missing_file_is_an_input_error(tmp_path):
    from cluster.embedded import RayContext
    from distill_ray.errors import InputFileError
    from jobs.train import sft

    # Raised on the driver before any Ray call, so no cluster is needed.
    ctx = RayContext(embedded=True, storage_path=str(tmp_path / "storage"), address=None)
    with pytest.raises(InputFileError, match="nope.parquet"):
        sft.run(_job(tmp_path / "nope.parquet", tmp_path / "run"), _stage(tmp_path / "run", ctx))


def test_schedule_and_step_count():
    from distill_ray.config import TrainingConfig
    from distill_ray.training.schedule import lr_factor, total_steps

    assert [lr_factor("cosine", s, 2, 10) for s in (0, 1, 2)] == [0.0, 0.5, 1.0]  # warmup, then peak
    assert lr_factor("cosine", 6, 2, 10) == pytest.approx(0.5) and lr_factor("cosine", 10, 2, 10) == 0.0
    assert lr_factor("linear", 6, 2, 10) == pytest.approx(0.5) and lr_factor("constant", 9, 2, 10) == 1.0
    # 18 rows on 2 ranks -> 9 per rank -> 3 micro-batches of 4 -> 2 steps of 2 (the last one spans epochs).
    t = TrainingConfig(num_train_epochs=1, per_device_train_batch_size=4, gradient_accumulation_steps=2)
    assert total_steps(t, 18, 2) == 2
    assert total_steps(t.model_copy(update={"num_train_epochs": 2.5}), 18, 2) == 4
    assert total_steps(t.model_copy(update={"max_steps": 7}), 18, 2) == 7
