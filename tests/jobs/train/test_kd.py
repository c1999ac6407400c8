"""The kd job on the embedded cluster: a tiny student learns SmolLM2-135M's stored top-k (2 DDP workers).

Checks that the loss drops, the HF model loads, a row without stored logits is rejected, rows in any
order join their own logits (by sample key), and a student with another tokenizer is refused with
exit code 2 naming models.student before any training starts.
"""

from __future__ import annotations

import random
import shutil

import pytest
from conftest import error_lines
from trainer_fixtures import STUDENT, TEACHER, arithmetic, extracted_logits, job, stage, write_parquet


@pytest.fixture(scope="module")
def logits_run(tmp_path_factory, ray_cluster):
    return extracted_logits(tmp_path_factory, ray_cluster)


def _kd_job(rows_path, out, logits_folder, student=STUDENT, **training):
    return job("kd", rows_path, out, models={"teacher": TEACHER, "student": student},
               kd={"top_k": 8, "logits_path": str(logits_folder)}, **training)  # fmt: skip


@pytest.fixture(scope="module")
def kd_run(tmp_path_factory, logits_run, ray_cluster):
    from jobs.train import kd

    root = tmp_path_factory.mktemp("kd")
    rows = list(logits_run["rows"])
    random.Random(1).shuffle(rows)
    rows.append(arithmetic(1, seed=99)[0])  # never went through the logits job
    rows_path = write_parquet(rows, root / "labeled.parquet")
    return kd.run(_kd_job(rows_path, root, logits_run["folder"], max_steps=12), stage("kd", root, ray_cluster))


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_kd_trains_and_saves_hf_model(kd_run):
    from transformers import AutoModelForCausalLM

    assert (kd_run.rows_in, kd_run.rows_out) == (17, 16)
    assert kd_run.rejected_reasons == {"no teacher logits for this sample_id": 1}
    m = kd_run.metrics
    assert m["steps"] == 12 and m["top_k"] == 8 and m["tokens_per_second"] > 0
    assert m["final_loss"] < 0.5 * m["first_loss"], m
    assert m["final_kd_loss"] < 0.5 * m["first_kd_loss"] and m["final_ce_loss"] < m["first_ce_loss"], m
    assert AutoModelForCausalLM.from_pretrained(kd_run.outputs["model"]).config.num_hidden_layers == 2


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_shuffled_rows_join_their_own_logits(logits_run, tmp_path):
    from distill_ray.models.loading import load_tokenizer, resolve_model
    from distill_ray.training.kd_data import join_logits, read_joined, teacher_forced_ids

    rows = list(logits_run["rows"])
    random.Random(7).shuffle(rows)
    missing, stats = join_logits([r["sample_id"] for r in rows], logits_run["folder"], tmp_path / "joined.arrow")
    assert missing == [] and stats["rows"] == len(rows)
    student = load_tokenizer(resolve_model(STUDENT))
    by_key = {r["sample_id"]: r for r in rows}
    for stored in read_joined(tmp_path / "joined.arrow").to_pylist():
        row = by_key[stored["sample_id"]]
        prompt, response = teacher_forced_ids(student, row["problem"], row["response"], "", "{problem}", 128)
        # Every row's text differs, so a row paired with another row's logits would fail here.
        assert stored["prompt_ids"] == prompt and stored["response_ids"] == response
        assert len(stored["topk_ids"]) == 8 * len(response)


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_student_with_another_tokenizer_exits_2(logits_run, ray_cluster, tmp_path, capsys):
    import os

    import yaml
    from transformers import AutoTokenizer

    from distill_ray.models.loading import resolve_model
    from jobs import cli

    student = tmp_path / "student"
    shutil.copytree(resolve_model(STUDENT), student)
    tokenizer = AutoTokenizer.from_pretrained(student)
    tokenizer.add_tokens(["<a-token-the-teacher-lacks>"])
    tokenizer.save_pretrained(student)
    cfg = _kd_job(logits_run["rows_path"], tmp_path / "run", logits_run["folder"], student=str(student))
    raw = cfg.model_dump(mode="json")
    raw["ray"]["state_dir"] = f"/tmp/dr-test-{os.getpid()}"  # the session's cluster, already running
    (tmp_path / "kd.yaml").write_text(yaml.safe_dump(raw))
    assert cli.main(["run", str(tmp_path / "kd.yaml")]) == 2
    # The error is one line; progress messages and lines Ray forwards from its processes may sit around it.
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "models.student" in err[0] and "tokenizer differs from the teacher's" in err[0], err
    assert not (tmp_path / "run" / "checkpoints").exists()
