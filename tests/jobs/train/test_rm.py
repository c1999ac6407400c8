"""The rm job on the embedded cluster: a pointwise RV regressor and a pairwise Bradley-Terry RM.

Checks that each loss drops, the saved folder loads with AutoModelForSequenceClassification (head
included) next to its distill_ray_reward.json, the regressor ranks a verbose CoT above a terse one,
and rows without a score are rejected.
"""

from __future__ import annotations

import random

import pytest
from trainer_fixtures import job, stage, write_parquet

TERSE = "<answer>\\boxed{{{s}}}</answer>"
VERBOSE = ("<think>First I read the question carefully. We add {a} and {b}. Counting up from {a} by {b} "
           "gives {s}. Let me double-check: {s} minus {b} is {a}, so it holds.</think><answer>\\boxed{{{s}}}</answer>")


def _judged(n: int) -> list[dict]:
    rng = random.Random(11)
    rows = []
    for i in range(n):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        verbose = i % 2 == 0
        template = VERBOSE if verbose else TERSE
        rows.append({"sample_id": f"j{i}", "problem": f"What is {a}+{b}?",
                     "response": template.format(a=a, b=b, s=a + b), "rv": 8 if verbose else 1, "cd": 2,
                     "difficulty": "easy"})  # fmt: skip
    return rows


@pytest.fixture(scope="module")
def pointwise_run(tmp_path_factory, ray_cluster):
    from jobs.train import rm

    root = tmp_path_factory.mktemp("rm-pointwise")
    rows = _judged(12) + [{**_judged(1)[0], "sample_id": "unjudged", "rv": None}]
    rows_path = write_parquet(rows, root / "judged.parquet")
    cfg = job("rm", rows_path, root, max_steps=12, learning_rate=3e-3, reward_model={"target": "rv"})
    return rm.run(cfg, stage("rm", root, ray_cluster))


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_pointwise_rv_regressor(pointwise_run):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from distill_ray.training.reward_data import read_reward_meta, reward_in_unit_range, reward_input_ids

    r = pointwise_run
    assert (r.rows_in, r.rows_out) == (13, 12) and r.rejected_reasons == {"missing rv score": 1}
    m = r.metrics
    assert m["objective"] == "pointwise" and m["target"] == "rv" and m["steps"] == 12
    assert m["final_loss"] < 0.5 * m["first_loss"] and m["final_mae"] < m["first_mae"], m
    folder = r.outputs["model"]
    meta = read_reward_meta(folder)
    assert (meta["objective"], meta["target"], meta["score_low"], meta["score_high"]) == ("pointwise", "rv", 0, 9)
    model, tokenizer = AutoModelForSequenceClassification.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
    assert model.config.num_labels == 1
    inputs = [reward_input_ids(tokenizer, "What is 4+5?", t.format(a=4, b=5, s=9), "", "{problem}", 128)
              for t in (VERBOSE, TERSE)]  # fmt: skip
    with torch.no_grad():
        scores = [reward_in_unit_range(model(input_ids=torch.tensor([ids])).logits[0, 0]).item() for ids in inputs]
    assert scores[0] > scores[1] and all(0 <= s <= 1 for s in scores), scores
    assert (r.outputs["checkpoints"] and read_reward_meta(f"{r.outputs['checkpoints']}/step_12/model")["target"] == "rv")


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_pairwise_bradley_terry(tmp_path, ray_cluster):
    from transformers import AutoModelForSequenceClassification

    from distill_ray.training.reward_data import read_reward_meta
    from jobs.train import rm

    pairs = [{"problem": row["problem"], "chosen": row["response"], "rejected": TERSE.format(s=0),
              "pair_type": "verbose_vs_terse", "beta": None} for row in _judged(16)[::2]]  # fmt: skip
    rows_path = write_parquet(pairs, tmp_path / "pairs.parquet")
    cfg = job("rm", rows_path, tmp_path, max_steps=8, learning_rate=3e-3, per_device_train_batch_size=2,
              reward_model={"objective": "pairwise"})  # fmt: skip
    r = rm.run(cfg, stage("rm", tmp_path, ray_cluster))
    m = r.metrics
    assert r.rows_out == 8 and m["objective"] == "pairwise" and m["target"] is None
    assert m["final_loss"] < 0.5 * m["first_loss"] and m["final_accuracy"] == 1.0, m
    assert read_reward_meta(r.outputs["model"])["objective"] == "pairwise"
    assert AutoModelForSequenceClassification.from_pretrained(r.outputs["model"]).config.num_labels == 1
