"""The advdistill job on the embedded cluster: one problem's group per micro-batch, 2 DDP workers.

Checks that the AdvDistill loss drops (the advantage-weighted CE of the correct responses falls), the
HF model loads, groups without a correct response are rejected, and the sft_best baseline's rows.
"""

from __future__ import annotations

import random

import pytest
from trainer_fixtures import STUDENT, job, stage, write_parquet


def _groups(n: int) -> list[dict]:
    rng = random.Random(3)
    groups = []
    for i in range(n):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        right = f"<think>{a} plus {b} is {a + b}.</think><answer>\\boxed{{{a + b}}}</answer>"
        groups.append({
            "id": f"g{i}", "problem": f"What is {a}+{b}?", "reference": str(a + b),
            "responses": [right, right.replace("plus", "and"), "I am not sure.", "No idea, maybe 0?"],
            "advantages": [1.2, 0.8, -0.9, -1.1], "rewards": [3.0, 2.9, -9.0, -9.5],
            "correct": [True, True, False, False], "completion_tokens": [20, 20, 5, 7],
        })  # fmt: skip
    return groups


@pytest.fixture(scope="module")
def advdistill_run(tmp_path_factory, ray_cluster):
    from jobs.train import advdistill

    root = tmp_path_factory.mktemp("advdistill")
    groups = _groups(6)
    groups.append({**groups[0], "id": "all-wrong", "correct": [False] * 4})
    groups.append({**groups[1], "id": "short", "advantages": [1.0]})
    rows_path = write_parquet(groups, root / "groups.parquet")
    return advdistill.run(job("advdistill", rows_path, root, max_steps=10), stage("advdistill", root, ray_cluster))


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_advdistill_trains_and_rejects_groups_without_a_correct_response(advdistill_run):
    from transformers import AutoModelForCausalLM

    r = advdistill_run
    assert (r.rows_in, r.rows_out, r.rows_rejected) == (8, 6, 2)
    assert r.rejected_reasons == {"no correct response in group": 1,
                                  "advantages does not have one entry per response": 1}  # fmt: skip
    m = r.metrics
    assert m["steps"] == 10 and m["mode"] == "advdistill" and m["responses"] == 24 and m["groups_per_second"] > 0
    assert m["final_loss"] < 0.6 * m["first_loss"], m
    assert m["final_weighted_ce"] < 0.6 * m["first_weighted_ce"], m
    assert 0.5 < m["first_max_weight"] < 1  # softmax(A / 0.5) over the group
    assert AutoModelForCausalLM.from_pretrained(r.outputs["model"]).config.num_hidden_layers == 2


def test_sft_best_rows_take_the_highest_advantage_response():
    from jobs.train.advdistill import best_response_rows

    group = {"problem": "p", "responses": ["a", "b", "c"], "advantages": [0.1, 0.9, 0.9]}
    assert best_response_rows([group]) == [{"problem": "p", "response": "b"}]


def test_token_normalization_gives_sft_best_gradient_when_all_weight_is_on_the_best_reply(tmp_path):
    """No Ray: the trainer's objective under normalize "token" (tau -> 0, lam 0), summed over two groups of
    different lengths and divided by their units, has the gradient of SFT on the best replies; under the paper's
    "response" mean it does not (each reply weighs the same there, whatever its length)."""
    import pickle

    import torch

    from jobs.train.advdistill import AdvDistillObjective, best_response_rows
    from jobs.train.sft import SFTObjective

    groups = _groups(2)
    groups[1]["responses"][0] = groups[1]["responses"][0].replace("</think>", " Checking: done, it holds.</think>")

    def gradient(objective, rows):
        tokenizer = objective.load_tokenizer()
        model = objective.load_model(objective.start_path()).float()
        data = objective.dataset(rows, tokenizer)
        batches = [objective.collate([data[i]], tokenizer) for i in range(len(data))]
        units = [objective.units(b) for b in batches]
        for b in batches:
            objective.loss(model, b, sum(units))[0].backward()
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]), units

    def advdistill(normalize):
        cfg = job("advdistill", tmp_path / "rows.parquet", tmp_path,
                  advdistill={"normalize": normalize, "tau": 1e-4, "lam": 0.0}).training  # fmt: skip
        return AdvDistillObjective(STUDENT, None, "{problem}", cfg)

    token_grad, units = gradient(token := advdistill("token"), groups)
    assert token.unit == "weighted_tokens" and units[0] != units[1]
    assert pickle.loads(pickle.dumps(token)).unit == "weighted_tokens" and AdvDistillObjective.unit == "groups"
    sft = SFTObjective(STUDENT, None, "{problem}", job("sft", tmp_path / "rows.parquet", tmp_path).training)
    sft_grad, sft_units = gradient(sft, best_response_rows(groups))
    assert units == pytest.approx(sft_units)
    torch.testing.assert_close(token_grad, sft_grad, rtol=1e-4, atol=1e-7)
    response_grad, _ = gradient(advdistill("response"), groups)
    assert not torch.allclose(response_grad, sft_grad, rtol=1e-2, atol=1e-5)
