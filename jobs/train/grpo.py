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

import logging

from distill_ray.config import JobConfig
from distill_ray.errors import ConfigError
from distill_ray.rewards.advdistill import group_advantages
from distill_ray.summary import StageResult
from distill_ray.training.rows import split_rows, text_problem
from distill_ray.training.sft_data import build_chat_messages, prompt_token_ids
from jobs.stage import StageEnv
from jobs.train.driver import (
    TRAIN_ROWS,
    prompt_check,
    single_phase,
    student_tokenizer,
    train,
    usable_rows,
    write_rows,
)
from jobs.train.objective import Objective

PART_METRICS = ("reward", "accuracy", "format", "rv", "cd")

log = logging.getLogger(__name__)


class GRPOObjective(Objective):
    """Rollouts, rewards over HTTP, group advantages and the GRPO loss, per micro-batch of prompts."""

    job_type = "grpo"
    unit = "rollouts"

    def __init__(self, model_spec, system_prompt, user_template, training, reward_url: str, api_key: str | None,
                 setting: str, timeout_s: float, service_models: list[str], eval_rows: list[dict],
                 think_opened: bool | None = None):  # fmt: skip
        super().__init__(model_spec, system_prompt, user_template, training)
        self.options = training.grpo
        self.reward_url, self.api_key, self.setting, self.timeout_s = reward_url, api_key, setting, timeout_s
        parts = [m for m in PART_METRICS if m not in ("rv", "cd") or m in service_models]
        self.metric_names = (*parts, "kl", "clip_fraction", "completion_tokens")
        self.eval_rows = eval_rows
        self.think_opened = think_opened  # None: read off each rollout's templated prompt
        self.eval_steps = self.options.eval_steps
        self.reference = self.client = self.rows = None

    def read_rows(self, rows_path: str):
        import pyarrow.parquet as pq

        self.rows = pq.read_table(rows_path, columns=["problem", "reference"]).to_pylist()
        return self.rows

    def dataset(self, rows, tokenizer):
        return [{"index": i, "prompt_ids": self._prompt_ids(row["problem"], tokenizer)} for i, row in enumerate(rows)]

    def _prompt_ids(self, problem: str, tokenizer) -> list[int]:
        return prompt_token_ids(tokenizer, build_chat_messages(problem, self.system_prompt, self.user_template))

    def collate(self, examples, tokenizer):
        import torch

        from distill_ray.training.rollout import left_pad

        ids, mask = left_pad([ex["prompt_ids"] for ex in examples], tokenizer.pad_token_id)
        return {"prompt_ids": ids, "prompt_mask": mask, "index": torch.tensor([ex["index"] for ex in examples])}

    def setup_worker(self, device) -> None:
        from actors.reward_client import RewardClient
        from distill_ray.models.loading import load_causal_lm
        from distill_ray.models.stop_tokens import stop_token_ids

        self.device = device
        self.client = RewardClient(self.reward_url, self.api_key, self.timeout_s)
        if self.options.beta > 0:
            self.reference = load_causal_lm(self.start_path()).to(device).eval()
            self.reference.requires_grad_(False)
        self.tokenizer = self.load_tokenizer()
        self.eos_ids = stop_token_ids(self.tokenizer, _generation_config(self.start_path()))

    def units(self, batch):
        return len(batch["index"]) * self.options.group_size

    def loss(self, model, batch, denom):
        import torch

        from distill_ray.losses import get_loss
        from distill_ray.training.rollout import completion_logps

        o, policy = self.options, getattr(model, "module", model)
        rollouts = self._rollout(policy, batch["prompt_ids"], batch["prompt_mask"], greedy=False)
        rows = [self.rows[i] for i in batch["index"].tolist() for _ in range(o.group_size)]
        scored = self._score(rows, rollouts)
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
        from distill_ray.training.rollout import left_pad

        scored, tokens = [], 0.0
        for start in range(0, len(self.eval_rows), self.batch_size):
            rows = self.eval_rows[start : start + self.batch_size]
            ids, mask = left_pad([self._prompt_ids(r["problem"], self.tokenizer) for r in rows],
                                 self.tokenizer.pad_token_id)  # fmt: skip
            with torch.no_grad():
                rollouts = self._rollout(model, ids.to(self.device), mask.to(self.device), greedy=True)
            scored += self._score(rows, rollouts)
            tokens += float(rollouts.completion_mask.sum())
        return {**_means(scored, self.metric_names), "completion_tokens": tokens / max(len(scored), 1)}

    def _rollout(self, policy, prompt_ids, prompt_mask, greedy: bool):
        from distill_ray.training.rollout import sample_completions

        o = self.options
        return sample_completions(policy, prompt_ids, prompt_mask, o.group_size, o.max_new_tokens,
                                  o.temperature, o.top_p, self.tokenizer.pad_token_id, self.eos_ids,
                                  greedy=greedy)  # fmt: skip

    def _score(self, rows: list[dict], rollouts) -> list[dict]:
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


def _generation_config(model_dir):
    """The model folder's generation config (its eos list), or None when the folder has none."""
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(model_dir)
    except OSError:
        return None


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
    rows = _read_prompts(job, stage, result, tokenizer)
    rows_path = write_rows(rows, stage.output_dir / TRAIN_ROWS, ["problem", "reference"])
    eval_rows = _eval_rows(job, rows)
    endpoint, deployed = _reward_endpoint(job, stage)
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


def _read_prompts(job: JobConfig, stage: StageEnv, result: StageResult, tokenizer) -> list[dict]:
    """The usable prompts of dataset.instruction_path (read as the data stages read problems); rejects recorded."""
    from distill_ray.data.sources import resolve_source
    from jobs.data.sources import problems_dataset

    spec = job.dataset.instruction_path
    if not spec:
        raise ConfigError("dataset.instruction_path", "the grpo job reads prompts (with reference answers) from it")
    records = problems_dataset(resolve_source(spec), job.dataset).take_all()
    result.rows_in = len(records)
    unreadable = [{"reason": r["error"], "row": r["raw"]} for r in records if r.get("error")]
    limit = job.training.max_length - job.training.grpo.max_new_tokens
    if limit < 1:
        raise ConfigError("training.max_length", "must exceed training.grpo.max_new_tokens (prompt + rollout)")
    fits = prompt_check(job, tokenizer, max_length=limit)  # the rollout needs its max_new_tokens too

    def check(row):
        return text_problem(row, ("problem",)) or fits(row)

    clean, bad = split_rows([r for r in records if not r.get("error")], check)
    return usable_rows(stage, result, spec, "prompts", clean, unreadable + bad)


def _eval_rows(job: JobConfig, train_rows: list[dict]) -> list[dict]:
    g = job.training.grpo
    if not g.eval_steps:
        return []
    if g.eval_path is None:
        return [{"problem": r["problem"], "reference": r.get("reference")} for r in train_rows[: g.eval_limit]]
    from distill_ray.data.sources import resolve_source
    from jobs.data.sources import problems_dataset

    cfg = job.dataset.model_copy(update={"limit": g.eval_limit})
    records = problems_dataset(resolve_source(g.eval_path, "training.grpo.eval_path"), cfg).take_all()
    return [{"problem": r["problem"], "reference": r.get("reference")} for r in records if not r.get("error")]


def _reward_endpoint(job: JobConfig, stage: StageEnv) -> tuple[str, str | None]:
    """(base URL, app name if this job deployed the service and must remove it)."""
    if job.reward.url:
        return job.reward.url.rstrip("/"), None
    from serve.reward import deploy_reward

    app_name = f"reward-{stage.name}"
    log.info("deploying the reward service (%s) as '%s'", job.reward.setting, app_name)
    endpoint = deploy_reward(job.reward, app_name=app_name)
    return endpoint.base_url, app_name
