"""The `grpo` job: GRPO on Ray Train with rewards from the live reward service (METHODS.md section 1).

Where it sits: after the `rm` jobs (RV / CD reward models), at the end of the DistilQwen path. The driver
reads the prompts (`dataset.instruction_path`, with reference answers), rejects unusable ones, deploys the
reward service from the `reward` section (or uses `reward.url`), and runs `jobs.train.loop.fit` with the
`GRPOObjective` below; every worker then, per micro-batch of prompts:

  1. samples G = `training.grpo.group_size` completions per prompt from the current policy (HF generate),
  2. POSTs (problem, completion, reference) to the reward service's /v1/rewards over HTTP, with the
     job's `reward.setting` (vanilla, +RV, +CD, +RV+CD),
  3. normalises rewards within each prompt's group, A = (r - mean) / (std + eps),
  4. minimises `losses.grpo.grpo_loss`: clipped policy gradient + beta * KL to the frozen start model.

One policy update per rollout batch. The loss is averaged over rollouts (each rollout's token mean), so
the train loop's step normalisation applies unchanged; checkpoints, resume and logging are the loop's.
With `training.grpo.eval_steps`, rank 0 scores greedy completions of the eval prompts before training,
every eval_steps steps and at the end (`evals` in the stage metrics). With `training.grpo.engine:
openrlhf` the job instead submits OpenRLHF's trainer to a GPU cluster (`jobs/train/openrlhf_launch.py`).
"""

from __future__ import annotations

from distill_ray.config import JobConfig
from distill_ray.rewards.advdistill import group_advantages
from distill_ray.summary import StageResult
from jobs.stage import StageEnv
from jobs.train.driver import TRAIN_ROWS, single_phase, student_tokenizer, train, write_rows
from jobs.train.rollouts import RolloutObjective, eval_prompts, read_prompts, reward_endpoint

PART_METRICS = ("reward", "accuracy", "format", "rv", "cd")


class GRPOObjective(RolloutObjective):
    """Rollouts, rewards over HTTP, group advantages and the GRPO loss, per micro-batch of prompts."""

    job_type = "grpo"

    def __init__(self, model_spec, system_prompt, user_template, training, reward_url: str, api_key: str | None,
                 setting: str, timeout_s: float, service_models: list[str], eval_rows: list[dict],
                 think_opened: bool | None = None):  # fmt: skip
        super().__init__(model_spec, system_prompt, user_template, training, training.grpo, eval_rows)
        self.reward_url, self.api_key, self.setting, self.timeout_s = reward_url, api_key, setting, timeout_s
        parts = [m for m in PART_METRICS if m not in ("rv", "cd") or m in service_models]
        self.metric_names = (*parts, "kl", "clip_fraction", "completion_tokens")
        self.think_opened = think_opened  # None: read off each rollout's templated prompt
        self.reference = self.client = None

    def setup_worker(self, device) -> None:
        from actors.reward_client import RewardClient
        from distill_ray.models.loading import load_causal_lm

        super().setup_worker(device)
        self.client = RewardClient(self.reward_url, self.api_key, self.timeout_s)
        if self.options.beta > 0:
            self.reference = self.place_frozen(load_causal_lm(self.start_path()), device)

    def loss(self, model, batch, denom):
        import torch

        from distill_ray.losses import get_loss
        from distill_ray.training.rollout import completion_logps

        o, policy = self.options, getattr(model, "module", model)
        rollouts = self.rollout(policy, batch["prompt_ids"], batch["prompt_mask"])
        scored = self.score(self.batch_rows(batch), rollouts)
        rewards = [s["reward"] for s in scored]
        advantages = [a for g in range(0, len(rewards), o.group_size)
                      for a in group_advantages(rewards[g : g + o.group_size], o.advantage_eps)]  # fmt: skip
        logp = completion_logps(model, rollouts, o.temperature)
        ref_logp = None
        if self.reference is not None:
            with torch.no_grad():
                ref_logp = completion_logps(self.reference, rollouts, o.temperature)
        adv = torch.tensor(advantages, dtype=torch.float32, device=logp.device)
        loss, parts = get_loss("grpo")(logp, logp.detach(), ref_logp, adv, rollouts.completion_mask,
                                       o.clip_epsilon, o.beta)  # fmt: skip
        metrics = {**parts, **_means(scored, self.metric_names),
                   "completion_tokens": float(rollouts.completion_mask.sum()) / len(scored)}  # fmt: skip
        return loss / denom, metrics

    def evaluate(self, model) -> dict[str, float]:
        """Greedy completions of the eval prompts, scored by the service: mean reward and its parts."""
        import torch

        if self.client is None:
            return {}
        scored, tokens = [], 0.0
        for rows, ids, mask in self.eval_batches():
            with torch.no_grad():
                rollouts = self.rollout(model, ids, mask, greedy=True)
            scored += self.score(rows, rollouts)
            tokens += float(rollouts.completion_mask.sum())
        return {**_means(scored, self.metric_names), "completion_tokens": tokens / max(len(scored), 1)}

    def score(self, rows: list[dict], rollouts) -> list[dict]:
        """Rewards of the rollouts from the service. Each item says whether its templated prompt opened the
        think block (`reward.think_opened`, else read off the prompt the policy saw), since the service only
        gets the problem as the prompt, the text its reward models score."""
        from distill_ray.grading.parsing import prompt_opens_think

        texts = self.tokenizer.batch_decode(rollouts.completions * rollouts.completion_mask
                                            + self.tokenizer.pad_token_id * (1 - rollouts.completion_mask),
                                            skip_special_tokens=True)  # fmt: skip
        opened = [self.think_opened] * len(texts)
        if self.think_opened is None:
            prompts = self.tokenizer.batch_decode(rollouts.input_ids[:, : rollouts.prompt_width])
            opened = [prompt_opens_think(p) for p in prompts]
        items = [{"prompt": r["problem"], "response": t, "reference": r.get("reference"), "think_opened": o}
                 for r, t, o in zip(rows, texts, opened)]  # fmt: skip
        return self.client.rewards(items, self.setting)


def _means(scored: list[dict], names) -> dict[str, float]:
    """Mean of each reward part in `names` over the scored items (parts the service left null are skipped)."""
    out = {}
    for name in (n for n in names if n in PART_METRICS):
        values = [float(s[name]) for s in scored if s.get(name) is not None]
        out[name] = sum(values) / len(values) if values else 0.0
    return out


def run(job: JobConfig, stage: StageEnv) -> StageResult:
    """Check prompts, reach (or deploy) the reward service, then train the policy with GRPO on Ray Train."""
    if job.training.grpo.engine == "openrlhf":
        from jobs.train.openrlhf_launch import run as launch

        return launch(job, stage)
    t, inf, g = job.training, job.inference, job.training.grpo
    tokenizer = student_tokenizer(job, "grpo")
    result = StageResult(name=stage.name, job_type="grpo")
    rows = read_prompts(job, stage, result, tokenizer, g.max_new_tokens)
    rows_path = write_rows(rows, stage.output_dir / TRAIN_ROWS, ["problem", "reference"])
    eval_rows = eval_prompts(job, rows, g)
    endpoint, deployed = reward_endpoint(job, stage)
    try:
        from actors.reward_client import RewardClient

        probe = RewardClient(endpoint, job.reward.serve.api_key, job.reward.request_timeout_s)
        health = probe.health()
        probe.close()
        objective = GRPOObjective(job.models.student, inf.system_prompt, inf.user_template, t, endpoint,
                                  job.reward.serve.api_key, job.reward.setting, job.reward.request_timeout_s,
                                  health.get("models", []), eval_rows, job.reward.think_opened)  # fmt: skip
        return train(job, stage, result, objective, single_phase(job, "grpo", rows_path, len(rows)),
                     {"setting": job.reward.setting, "group_size": g.group_size, "reward_url": endpoint})  # fmt: skip
    finally:
        if deployed:
            from serve.reward import undeploy_reward

            undeploy_reward(deployed)
