"""The trainer loop's contract without Ray: step-normalised losses (accumulation / worker invariance), phases,
step counts and LR schedules."""

from __future__ import annotations

import pytest
import torch

from distill_ray.config import TrainingConfig
from distill_ray.training.schedule import Phase, cap_phases, epoch_steps, lr_factor, total_steps

ROWS = [{"problem": f"What is {a}+{b}?", "response": f"<think>{a}+{b}={a + b}</think>" + "x" * (a * 3)}
        for a, b in [(1, 2), (3, 4), (5, 6), (7, 8)]]  # fmt: skip


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir):
    from distill_ray.models.loading import load_causal_lm, load_tokenizer

    return load_causal_lm(tiny_model_dir), load_tokenizer(tiny_model_dir)


def _grads(model, objective, tokenizer, rows, splits: list[list[list[int]]], world: int) -> torch.Tensor:
    """The step gradient the loop produces: micro-batches per worker, loss / (step units / world), DDP mean."""
    data = objective.dataset(rows, tokenizer)
    batches = [[objective.collate([data[i] for i in idx], tokenizer) for idx in worker] for worker in splits]
    step_units = sum(objective.units(b) for worker in batches for b in worker)
    per_worker = []
    for worker in batches:
        model.zero_grad()
        for batch in worker:
            loss, _ = objective.loss(model, batch, step_units / world)
            loss.backward()
        per_worker.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    return torch.stack(per_worker).mean(0)  # what DDP's all-reduce averages to


def _kd_rows(tokenizer):
    """Joined logits rows with a made-up teacher: top-8 log-probs of random logits."""
    import pyarrow as pa

    from distill_ray.data import schemas
    from distill_ray.training.kd_data import teacher_forced_ids

    gen, rows = torch.Generator().manual_seed(0), []
    for i, row in enumerate(ROWS):
        prompt, response = teacher_forced_ids(tokenizer, row["problem"], row["response"], "", "{problem}", 64)
        logprobs, ids = torch.log_softmax(torch.randn(len(response), 300, generator=gen), -1).topk(8)
        rows.append({"sample_id": str(i), "prompt_ids": prompt, "response_ids": response,
                     "topk_ids": ids.flatten().tolist(), "topk_logprobs": logprobs.flatten().tolist()})  # fmt: skip
    return pa.Table.from_pylist(rows, schema=schemas.logits("float32"))


def _objective(kind: str, tokenizer):
    from jobs.train.dpo import DPOObjective
    from jobs.train.kd import KDObjective
    from jobs.train.sft import SFTObjective

    t = TrainingConfig(max_length=64, dpo={"loss": "cogpo"})
    if kind == "sft":
        return SFTObjective("tiny:smollm2", "", "{problem}", t), ROWS
    if kind == "kd":
        return KDObjective("tiny:smollm2", "", "{problem}", t), _kd_rows(tokenizer)
    objective = DPOObjective("tiny:smollm2?seed=1", "", "{problem}", t)  # reference != policy: non-zero margins
    objective.setup_worker("cpu")
    pairs = [{"problem": r["problem"], "chosen": r["response"], "rejected": "no", "beta": 0.1 * (i + 1)}
             for i, r in enumerate(ROWS)]  # fmt: skip
    return objective, pairs


@pytest.mark.parametrize("kind", ["sft", "kd", "dpo"])
def test_step_gradient_is_invariant_to_micro_batching_and_workers(model_and_tokenizer, kind):
    model, tokenizer = model_and_tokenizer
    objective, rows = _objective(kind, tokenizer)
    whole = _grads(model, objective, tokenizer, rows, [[[0, 1, 2, 3]]], world=1)
    accumulated = _grads(model, objective, tokenizer, rows, [[[0], [1, 2], [3]]], world=1)
    two_workers = _grads(model, objective, tokenizer, rows, [[[0], [1]], [[2, 3]]], world=2)
    # Rows differ in length, so a per-micro-batch mean would weigh tokens unequally and fail here.
    assert torch.allclose(whole, accumulated, atol=1e-6)
    assert torch.allclose(whole, two_workers, atol=1e-6)


def test_phases_are_capped_by_max_steps():
    phases = [Phase("medium", "a", 6, 9), Phase("medium_hard", "b", 12, 6)]
    assert cap_phases(phases, None) == phases
    assert [(p.name, p.steps) for p in cap_phases(phases, 11)] == [("medium", 9), ("medium_hard", 2)]
    assert [(p.name, p.steps) for p in cap_phases(phases, 4)] == [("medium", 4)]
    assert epoch_steps(6, 2, 1, 1, 3) == 9  # 3 rows per rank, one per micro-batch, 3 epochs


def test_schedule_and_step_count():
    assert [lr_factor("cosine", s, 2, 10) for s in (0, 1, 2)] == [0.0, 0.5, 1.0]
    assert lr_factor("linear", 6, 2, 10) == pytest.approx(0.5) and lr_factor("constant", 9, 2, 10) == 1.0
    t = TrainingConfig(num_train_epochs=2, per_device_train_batch_size=4, gradient_accumulation_steps=2)
    assert total_steps(t, 18, 2) == 3  # 9 rows per rank -> 3 micro-batches x 2 epochs / 2
    assert total_steps(t, 18, 2, micro_batch=1) == 9  # one group per micro-batch (advdistill)


def test_sft_curriculum_phases(tmp_path):
    import pyarrow.parquet as pq

    from distill_ray.config import JobConfig
    from distill_ray.errors import ConfigError
    from jobs.train.sft import plan_sft_phases

    rows = [{"problem": f"p{i}", "response": "r", "difficulty": ["easy", "medium", "hard"][i % 3]} for i in range(12)]
    curriculum = [{"name": "medium", "difficulty": ["medium"], "num_train_epochs": 3},
                  {"name": "medium_hard", "difficulty": ["medium", "hard"]}]  # fmt: skip
    job = JobConfig(job_type="sft", dataset={"labeled_path": "rows.parquet"},
                    training={"curriculum": curriculum, "per_device_train_batch_size": 1})  # fmt: skip
    phases = plan_sft_phases(job, tmp_path, {"rows.parquet": rows})
    # 4 medium rows: 2 per rank, 2 steps an epoch, 3 epochs; then 8 medium+hard rows for 1 epoch.
    assert [(p.name, p.rows, p.steps) for p in phases] == [("medium", 4, 6), ("medium_hard", 8, 4)]
    assert pq.read_table(phases[1].rows_path).num_rows == 8
    bad = job.model_copy(update={"training": job.training.model_copy(update={"curriculum": [
        job.training.curriculum[0].model_copy(update={"difficulty": ["expert"]})]})})  # fmt: skip
    with pytest.raises(ConfigError, match="training.curriculum.medium.difficulty"):
        plan_sft_phases(bad, tmp_path, {"rows.parquet": rows})


def test_curriculum_config_is_documented_and_checked():
    from distill_ray.config import build_config
    from distill_ray.config.training import CurriculumStage, KDConfig, LoRAConfig, TrainingConfig
    from distill_ray.errors import ConfigError

    for model in (TrainingConfig, KDConfig, CurriculumStage, LoRAConfig):
        assert all(f.description for f in model.model_fields.values()), model
    with pytest.raises(ConfigError, match="unique"):
        build_config({"job_type": "sft", "training": {"curriculum": [{"name": "a"}, {"name": "a"}]}})
    with pytest.raises(ConfigError, match="forward_kl"):
        build_config({"job_type": "kd", "training": {"kd": {"loss": "reverse_kl", "tail": "ignore"}}})


def test_rank_zero_prints_a_progress_line_every_so_often_and_at_the_last_step(monkeypatch):
    # The console's only per-step sign of a trainer (Ray Train's own report line is dropped in quiet runs).
    from types import SimpleNamespace

    from jobs.train import loop

    lines: list[str] = []
    monkeypatch.setattr(loop.log, "info", lambda fmt, *args: lines.append(fmt % args))
    clock = {"now": 1000.0}
    monkeypatch.setattr(loop.time, "time", lambda: clock["now"])
    run = SimpleNamespace(stage_name="sft", state={"step": 0, "losses": []},
                          _progress={"step": 0, "start": 1000.0, "last": 1000.0, "losses": 0})  # fmt: skip
    for step in range(1, 11):  # 10 steps of 10 s each, losses 1.0, 0.9, ...
        clock["now"] += 10.0
        run.state["step"] = step
        run.state["losses"].append(1.0 - 0.1 * (step - 1))
        loop.TrainRun._print_progress(run, total=10)
    # at most one line per PROGRESS_EVERY_S (30 s): after steps 3, 6, 9, and the last step
    assert [line.split(",")[0] for line in lines] == [f"stage 'sft': step {s}/10" for s in (3, 6, 9, 10)]
    assert lines[0] == "stage 'sft': step 3/10, loss 0.9000, 0.10 steps/s, ETA 1m 10s"  # mean of 1.0, 0.9, 0.8
    assert "ETA" not in lines[-1] and "loss 0.1000" in lines[-1]  # the last line: only step 10's loss is new
