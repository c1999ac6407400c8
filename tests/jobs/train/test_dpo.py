"""The dpo job on the embedded cluster: CogPO (per-pair betas, nulls -> dpo.beta) against a frozen reference.

Checks that the preference loss falls from log 2 (policy = reference at step 1), the implicit reward
ranks chosen above rejected by the end, bad pairs are rejected, and the HF model loads.
"""

from __future__ import annotations

import math
import random

import pytest
from trainer_fixtures import job, stage, write_parquet


def _pairs(n: int) -> list[dict]:
    rng = random.Random(5)
    pairs = []
    for i in range(n):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        pairs.append({"id": f"p{i}", "problem": f"What is {a}+{b}?",
                      "chosen": f"<think>{a} plus {b} is {a + b}.</think><answer>\\boxed{{{a + b}}}</answer>",
                      "rejected": f"<answer>\\boxed{{{a * b + 1}}}</answer>", "pair_type": "teacher_vs_student",
                      "beta": None if i % 2 else 0.2})  # fmt: skip
    return pairs


@pytest.fixture(scope="module")
def dpo_run(tmp_path_factory, ray_cluster):
    from jobs.train import dpo

    root = tmp_path_factory.mktemp("dpo")
    pairs = _pairs(12)
    pairs.append({**pairs[0], "id": "same", "rejected": pairs[0]["chosen"]})
    rows_path = write_parquet(pairs, root / "pairs.parquet")
    cfg = job("dpo", rows_path, root, max_steps=10, learning_rate=2e-3, per_device_train_batch_size=3,
              dpo={"loss": "cogpo", "beta": 0.1}, report_to=["tensorboard"])  # fmt: skip
    return dpo.run(cfg, stage("dpo", root, ray_cluster))


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_dpo_prefers_chosen_after_training(dpo_run):
    from transformers import AutoModelForCausalLM

    r = dpo_run
    assert (r.rows_in, r.rows_out) == (13, 12) and r.rejected_reasons == {"chosen and rejected are identical": 1}
    m = r.metrics
    assert m["loss_type"] == "cogpo" and m["steps"] == 10 and m["pairs_per_second"] > 0
    assert m["first_loss"] == pytest.approx(math.log(2), abs=1e-4)  # the policy starts as the reference
    assert m["final_loss"] < 0.5 * m["first_loss"], m
    assert m["final_reward_accuracy"] == 1.0 and m["final_reward_margin"] > 0, m
    assert AutoModelForCausalLM.from_pretrained(r.outputs["model"]).config.num_hidden_layers == 2


@pytest.mark.ray
def test_dpo_metrics_reach_tensorboard_under_the_shared_names(dpo_run):
    from pathlib import Path

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = Path(dpo_run.outputs["model"]).parent.parent  # <run>/dpo/model
    events = EventAccumulator(str(run_dir / "tensorboard" / "dpo")).Reload()
    shared = {"train/loss", "train/lr", "train/grad_norm", "train/tokens_per_s"}
    own = {f"train/{name}" for name in ("reward_accuracy", "reward_margin", "chosen_reward", "rejected_reward")}
    assert set(events.Tags()["scalars"]) == shared | own
    assert [e.step for e in events.Scalars("train/loss")] == list(range(1, 11))
    final = dpo_run.metrics["final_reward_accuracy"]
    assert events.Scalars("train/reward_accuracy")[-1].value == pytest.approx(final, rel=1e-6)
    assert [e.value for e in events.Scalars("train/lr")] == pytest.approx([2e-3] * 10)  # constant schedule
