"""What the on-policy trainers share (`grpo`, `opd`): prompts in, rollouts from the current policy out.

An on-policy objective reads prompts (with reference answers where there are any), turns each into the
chat-templated prompt ids the policy sees, and per micro-batch samples G completions per prompt from the
model being trained (`distill_ray.training.rollout.sample_completions`), stopping at eos, the generation
config's eos ids or the chat template's end-of-turn token. What it does with the rollouts (rewards from the
reward service, token scores from the teacher service) is the subclass's. On the driver, `read_prompts`
reads and checks the prompts as the data stages read problems and `eval_prompts` picks the held-out ones.
"""

from __future__ import annotations

import logging

from distill_ray.config import JobConfig
from distill_ray.errors import ConfigError
from distill_ray.summary import StageResult
from distill_ray.training.rows import split_rows, text_problem
from distill_ray.training.sft_data import build_chat_messages, prompt_token_ids
from jobs.stage import StageEnv
from jobs.train.driver import prompt_check, usable_rows
from jobs.train.objective import Objective

log = logging.getLogger(__name__)


class RolloutObjective(Objective):
    """Prompts -> left-padded prompt ids -> G sampled completions per prompt (`sampling`: a config section
    with group_size, max_new_tokens, temperature and top_p). Subclasses score the rollouts in `loss`."""

    unit = "rollouts"

    def __init__(self, model_spec, system_prompt, user_template, training, sampling, eval_rows: list[dict]):
        super().__init__(model_spec, system_prompt, user_template, training)
        self.options = sampling
        self.eval_rows = eval_rows
        self.eval_steps = getattr(sampling, "eval_steps", 0)
        self.rows = self.tokenizer = None
        self.rollout_tokens = 0  # non-padding tokens (prompts + completions) of the last rollout

    def read_rows(self, rows_path: str):
        import pyarrow.parquet as pq

        self.rows = pq.read_table(rows_path, columns=["problem", "reference"]).to_pylist()
        return self.rows

    def dataset(self, rows, tokenizer):
        return [{"index": i, "prompt_ids": self.prompt_ids(row["problem"], tokenizer)} for i, row in enumerate(rows)]

    def prompt_ids(self, problem: str, tokenizer) -> list[int]:
        return prompt_token_ids(tokenizer, build_chat_messages(problem, self.system_prompt, self.user_template))

    def collate(self, examples, tokenizer):
        import torch

        from distill_ray.training.rollout import left_pad

        ids, mask = left_pad([ex["prompt_ids"] for ex in examples], tokenizer.pad_token_id)
        return {"prompt_ids": ids, "prompt_mask": mask, "index": torch.tensor([ex["index"] for ex in examples])}

    def setup_worker(self, device) -> None:
        from distill_ray.models.stop_tokens import stop_token_ids

        self.device = device
        self.tokenizer = self.load_tokenizer()
        self.eos_ids = stop_token_ids(self.tokenizer, generation_config(self.start_path()))

    def units(self, batch):
        return len(batch["index"]) * self.options.group_size

    def tokens(self, batch):
        """The prompt and completion tokens of the micro-batch's rollouts (its `loss` rolled them out just now)."""
        return self.rollout_tokens

    def rollout(self, policy, prompt_ids, prompt_mask, greedy: bool = False):
        """G sampled completions per prompt (one greedy completion each with `greedy`): a `Rollouts`."""
        from distill_ray.training.rollout import sample_completions

        o = self.options
        rollouts = sample_completions(policy, prompt_ids, prompt_mask, o.group_size, o.max_new_tokens,
                                      o.temperature, o.top_p, self.tokenizer.pad_token_id, self.eos_ids,
                                      greedy=greedy)  # fmt: skip
        self.rollout_tokens = int(rollouts.attention_mask.sum())
        return rollouts

    def batch_rows(self, batch) -> list[dict]:
        """The prompt row of every rollout of `batch`, in rollout order (each prompt G times)."""
        return [self.rows[i] for i in batch["index"].tolist() for _ in range(self.options.group_size)]

    def eval_batches(self):
        """(rows, prompt ids, prompt mask) of the eval prompts, `per_device_train_batch_size` at a time."""
        from distill_ray.training.rollout import left_pad

        for start in range(0, len(self.eval_rows), self.batch_size):
            rows = self.eval_rows[start : start + self.batch_size]
            ids, mask = left_pad([self.prompt_ids(r["problem"], self.tokenizer) for r in rows],
                                 self.tokenizer.pad_token_id)  # fmt: skip
            yield rows, ids.to(self.device), mask.to(self.device)


def generation_config(model_dir):
    """The model folder's generation config (its eos list), or None when the folder has none."""
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(model_dir)
    except OSError:
        return None


def read_prompts(job: JobConfig, stage: StageEnv, result: StageResult, tokenizer, max_new_tokens: int) -> list[dict]:
    """The usable prompts of dataset.instruction_path (read as the data stages read problems); rejects recorded.
    Raises ConfigError when the path is unset or training.max_length leaves no room for a rollout."""
    from distill_ray.data.sources import resolve_source
    from jobs.data.sources import problems_dataset

    spec = job.dataset.instruction_path
    if not spec:
        raise ConfigError("dataset.instruction_path", f"the {job.job_type} job reads its prompts from it")
    records = problems_dataset(resolve_source(spec), job.dataset).take_all()
    result.rows_in = len(records)
    unreadable = [{"reason": r["error"], "row": r["raw"]} for r in records if r.get("error")]
    limit = job.training.max_length - max_new_tokens
    if limit < 1:
        raise ConfigError("training.max_length", f"must exceed training.{job.job_type}.max_new_tokens (prompt + "
                          "rollout)")  # fmt: skip
    fits = prompt_check(job, tokenizer, max_length=limit)  # the rollout needs its max_new_tokens too

    def check(row):
        return text_problem(row, ("problem",)) or fits(row)

    clean, bad = split_rows([r for r in records if not r.get("error")], check)
    return usable_rows(stage, result, spec, "prompts", clean, unreadable + bad)


def eval_prompts(job: JobConfig, train_rows: list[dict], sampling) -> list[dict]:
    """Held-out prompts for `evaluate`: `sampling.eval_path` (first eval_limit), else the first training prompts;
    none when sampling.eval_steps is 0."""
    if not sampling.eval_steps:
        return []
    path = getattr(sampling, "eval_path", None)
    if path is None:
        return [{"problem": r["problem"], "reference": r.get("reference")} for r in train_rows[: sampling.eval_limit]]
    from distill_ray.data.sources import resolve_source
    from jobs.data.sources import problems_dataset

    cfg = job.dataset.model_copy(update={"limit": sampling.eval_limit})
    key = f"training.{job.job_type}.eval_path"
    records = problems_dataset(resolve_source(path, key), cfg).take_all()
    return [{"problem": r["problem"], "reference": r.get("reference")} for r in records if not r.get("error")]


def reward_endpoint(job: JobConfig, stage: StageEnv) -> tuple[str, str | None]:
    """(base URL, app name if this job deployed the service and must remove it)."""
    if job.reward.url:
        return job.reward.url.rstrip("/"), None
    from serve.reward import deploy_reward

    app_name = f"reward-{stage.name}"
    log.info("deploying the reward service (%s) as '%s'", job.reward.setting, app_name)
    endpoint = deploy_reward(job.reward, app_name=app_name)
    return endpoint.base_url, app_name
