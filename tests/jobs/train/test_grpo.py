"""The grpo job on the embedded cluster against the live reward service over HTTP.

The task: with the +RV setting and the RV interval set to [0.9, 1.0], every rollout of the tiny policy scores
below the interval (the tiny RV model gives about 0.5), so the reward is -(0.9 - f_RV): a dense signal the
policy can learn by moving its samples toward what the RV model scores higher.

The policy is the tiny random LM with its (tied) embeddings scaled by 10, so its next-token distribution is
peaked like a trained model's instead of near-uniform over 49k tokens; a uniform policy rarely samples a
token twice and learns too slowly for a few-step test. Measured with the same loop outside Ray over 6 seeds
at these settings: the mean reward of the last 4 steps beat the first 4 by +0.011 to +0.072; with the
advantages' sign flipped the reward falls instead.
"""

from __future__ import annotations

import json
import random

import pytest
from trainer_fixtures import stage

GRPO = {"group_size": 8, "max_new_tokens": 12, "beta": 0.0, "eval_steps": 12, "eval_limit": 4}


def _prompts(path, n: int = 16):
    rng = random.Random(3)
    rows = [{"question": f"What is {a} + {b}?", "answer": str(a + b)}
            for a, b in ((rng.randint(1, 9), rng.randint(1, 9)) for _ in range(n))]  # fmt: skip
    rows.append({"question": "   ", "answer": "1"})  # an empty problem: rejected with its reason
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def _peaked_policy(out):
    import torch

    from distill_ray.models.loading import load_causal_lm, load_tokenizer, resolve_model

    base = resolve_model("tiny:smollm2")
    model = load_causal_lm(base)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(10.0)
    model.save_pretrained(out)
    load_tokenizer(base).save_pretrained(out)
    return out


def _job(root, prompts, rv_model, port, max_steps: int, reward: dict | None = None):
    from distill_ray.config import JobConfig

    return JobConfig(
        job_type="grpo", output_dir=str(root), dataset={"instruction_path": str(prompts)},
        inference={"system_prompt": ""}, models={"student": str(root / "policy")},
        training={"max_steps": max_steps, "learning_rate": 0.01, "lr_scheduler_type": "constant", "num_workers": 1,
                  "cpus_per_worker": 1, "per_device_train_batch_size": 4, "max_length": 96, "save_steps": 100,
                  "grpo": GRPO},
        reward={"rv_model": str(rv_model), "setting": "rv", "rv_interval": (0.9, 1.0), "serve": {"port": port},
                **(reward or {})},
    )  # fmt: skip


@pytest.fixture(scope="module")
def grpo_run(tmp_path_factory, ray_cluster, serve_port, tiny_reward_models):
    from jobs.train import grpo

    root = tmp_path_factory.mktemp("grpo")
    prompts = _prompts(root / "prompts.jsonl")
    _peaked_policy(root / "policy")
    cfg = _job(root, prompts, tiny_reward_models["rv"], serve_port, max_steps=12)
    return root, prompts, grpo.run(cfg, stage("grpo", root, ray_cluster))


@pytest.mark.ray
@pytest.mark.timeout(400)
def test_grpo_raises_mean_reward_against_the_live_service(grpo_run):
    from ray import serve

    root, _, result = grpo_run
    assert (result.rows_in, result.rows_out, result.rejected_reasons) == (17, 16, {"missing or empty prompt field 'question'": 1})
    m = result.metrics
    assert m["steps"] == 12 and m["setting"] == "rv" and m["reward_url"].endswith("/reward-grpo")
    state = json.loads((root / "grpo" / "checkpoints" / "step_12" / "trainer_state.json").read_text())
    rewards = state["metrics"]["reward"]
    assert len(rewards) == 12 and all(r < 0 for r in rewards)  # below the interval: penalties only
    first, last = sum(rewards[:4]) / 4, sum(rewards[-4:]) / 4
    assert last > first + 0.005, rewards
    evals = m["evals"]
    assert [e["step"] for e in evals] == [0, 12] and all(-1 < e["reward"] < 0 for e in evals), evals
    assert 0 < m["final_completion_tokens"] <= 12 and m["rollouts_per_second"] > 0
    assert (root / "grpo" / "model" / "config.json").is_file()
    assert "reward-grpo" not in serve.status().applications  # the job removed the service it deployed


@pytest.mark.ray
@pytest.mark.timeout(400)
def test_grpo_resumes_and_uses_a_running_service_with_its_key(grpo_run, ray_cluster, serve_port, tiny_reward_models):
    from distill_ray.config.reward import RewardConfig
    from jobs.train import grpo
    from serve.reward import deploy_reward, undeploy_reward

    root, prompts, _ = grpo_run
    key = "grpo-test-key"
    service = deploy_reward(RewardConfig(rv_model=str(tiny_reward_models["rv"]), setting="vanilla",
                                         rv_interval=(0.9, 1.0), serve={"port": serve_port, "api_key": key}),
                            app_name="reward-shared")  # fmt: skip
    try:
        # The service's own setting is vanilla; the job asks for +RV in every request.
        cfg = _job(root, prompts, tiny_reward_models["rv"], serve_port, max_steps=14,
                   reward={"url": service.base_url, "serve": {"port": serve_port, "api_key": key}})  # fmt: skip
        result = grpo.run(cfg, stage("grpo", root, ray_cluster))
    finally:
        undeploy_reward("reward-shared")
    m = result.metrics
    assert m["resumed_from_step"] == 12 and m["steps"] == 14 and m["steps_run"] == 2
    assert [e["step"] for e in m["evals"]] == [0, 12, 14]  # the first run's evaluations survived the resume
    assert m["final_reward"] < 0  # +RV penalties, not the service's vanilla default (which would be >= 0)
