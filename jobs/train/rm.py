"""The `rm` job: reward models (DistilQwen RV / CD regressors, or pairwise Bradley-Terry RMs) on Ray Train.

Where it sits: after the judge stage (pointwise: judged CoTs with `rv` / `cd` scores 0-9) or the pair
builder (pairwise: `problem`, `chosen`, `rejected`), before GRPO, whose reward service loads the
result. The model is `models.student` (an instruct model) with a one-output sequence-classification
head (`AutoModelForSequenceClassification`, num_labels=1; the head starts random), so the saved
folder loads with `AutoModelForSequenceClassification.from_pretrained` with its head; every saved
folder also holds `distill_ray_reward.json` (objective, target, score range, input format: see
`distill_ray/training/reward_data.py`).

Pointwise: rows whose target score is missing or not a number are rejected with the reason; the loss
is `pointwise_regression_loss` (sigmoid(head) vs the score mapped to [0, 1]). Pairwise: pairs are
checked as the dpo job checks them; the loss is `bradley_terry_loss` on the two heads' outputs.
Both are averaged over the optimizer step's sequences (pointwise) or pairs (pairwise).
"""

from __future__ import annotations

from distill_ray.config import JobConfig
from distill_ray.errors import ConfigError, InputFileError
from distill_ray.training.preference_data import PairDataset, collate_pairs
from distill_ray.training.reward_data import (
    RewardRowsDataset,
    collate_scored,
    reward_meta,
    write_reward_meta,
)
from distill_ray.summary import StageResult
from distill_ray.training.rows import prompt_problem, read_rows, score_problem, split_rows, text_problem
from jobs.stage import StageEnv
from jobs.train.dpo import PAIR_COLUMNS, check_pairs, pair_schema
from jobs.train.loop import Objective, Phase, fit, total_steps
from jobs.train.driver import record_rejects, student_tokenizer, write_rows

TRAIN_ROWS = "train_rows.parquet"


class PointwiseRMObjective(Objective):
    """Regress sigmoid(head) onto the judge score normalised to [0, 1]."""

    job_type = "rm"
    unit = "sequences"
    metric_names = ("mae",)

    def __init__(self, model_spec, system_prompt, user_template, training, pad_id: int):
        super().__init__(model_spec, system_prompt, user_template, training)
        self.options = training.reward_model
        self.pad_id = pad_id
        self.meta = reward_meta(self.options.objective, self.options.target, self.options.score_low,
                                self.options.score_high, system_prompt, user_template, self.max_length,
                                model_spec)  # fmt: skip

    def load_model(self, path):
        from transformers import AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
        # The head reads the last non-padding token, found through pad_token_id (batches > 1 need it).
        model.config.pad_token_id = self.pad_id
        return model

    def read_rows(self, rows_path: str):
        import pyarrow.parquet as pq

        return pq.read_table(rows_path, columns=["problem", "response", self.options.target]).to_pylist()

    def dataset(self, rows, tokenizer):
        return RewardRowsDataset(rows, tokenizer, self.options.target, self.system_prompt, self.user_template,
                                 self.max_length)  # fmt: skip

    def collate(self, examples, tokenizer):
        return collate_scored(examples, tokenizer.pad_token_id)

    def units(self, batch):
        return len(batch["input_ids"])

    def loss(self, model, batch, denom):
        from distill_ray.losses import get_loss

        raw = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.squeeze(-1)
        loss, metrics = get_loss("rm_pointwise")(raw, batch["targets"], self.options.score_low,
                                                  self.options.score_high)  # fmt: skip
        return loss * len(raw) / denom, metrics

    def annotate(self, model_dir) -> None:
        write_reward_meta(model_dir, self.meta)


class PairwiseRMObjective(PointwiseRMObjective):
    """Bradley-Terry: the chosen response's reward above the rejected one's."""

    unit = "pairs"
    metric_names = ("accuracy", "margin")

    def read_rows(self, rows_path: str):
        import pyarrow.parquet as pq

        return pq.read_table(rows_path, columns=PAIR_COLUMNS).to_pylist()

    def dataset(self, rows, tokenizer):
        return PairDataset(rows, tokenizer, self.system_prompt, self.user_template, self.max_length)

    def collate(self, examples, tokenizer):
        return collate_pairs(examples, tokenizer.pad_token_id, 1.0)  # beta is a DPO knob: unused here

    def units(self, batch):
        return len(batch["betas"])

    def loss(self, model, batch, denom):
        from distill_ray.losses import get_loss

        raw = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.squeeze(-1)
        n = len(batch["betas"])
        loss, metrics = get_loss("rm_pairwise")(raw[:n], raw[n:])
        return loss * n / denom, metrics


def run(job: JobConfig, stage: StageEnv) -> StageResult:
    """Check rows (judged CoTs or pairs), then train the reward model with Ray Train."""
    t, inf, rm = job.training, job.inference, job.training.reward_model
    if not job.dataset.labeled_path:
        raise ConfigError("dataset.labeled_path", "the rm job reads judged CoTs or preference pairs from this file")
    tokenizer = student_tokenizer(job, "rm")
    result = StageResult(name=stage.name, job_type="rm")
    dest = stage.output_dir / TRAIN_ROWS
    if rm.objective == "pairwise":
        clean = check_pairs(job, stage, result, tokenizer)
        write_rows(clean, dest, PAIR_COLUMNS, schema=pair_schema())
        objective = PairwiseRMObjective(job.models.student, inf.system_prompt, inf.user_template, t,
                                        tokenizer.pad_token_id)  # fmt: skip
    else:
        clean = _check_judged(job, stage, result, tokenizer)
        write_rows(clean, dest, ["problem", "response", rm.target])
        objective = PointwiseRMObjective(job.models.student, inf.system_prompt, inf.user_template, t,
                                         tokenizer.pad_token_id)  # fmt: skip
    result.rows_out = len(clean)
    phases = [Phase(f"rm-{rm.objective}", str(dest), len(clean), total_steps(t, len(clean), t.num_workers))]
    result.metrics = {**fit(job, stage, objective, phases), "objective": rm.objective,
                      "target": rm.target if rm.objective == "pointwise" else None}  # fmt: skip
    result.outputs = {"model": str(stage.output_dir / "model"), "checkpoints": str(stage.output_dir / "checkpoints")}
    return result


def _check_judged(job: JobConfig, stage: StageEnv, result: StageResult, tokenizer) -> list[dict]:
    inf, target, path = job.inference, job.training.reward_model.target, job.dataset.labeled_path
    rows, unreadable = read_rows(path, ["problem", "response", target], ["sample_id", "difficulty"])
    result.rows_in = len(rows) + len(unreadable)

    def check(row):
        return (text_problem(row, ("problem", "response")) or score_problem(row.get(target), target)
                or prompt_problem(row, tokenizer, inf.system_prompt, inf.user_template, job.training.max_length))  # fmt: skip

    clean, bad = split_rows(rows, check)
    record_rejects(result, stage, unreadable + bad)
    if not clean:
        raise InputFileError(path, f"no usable judged rows ({result.rows_rejected} rejected: {result.rejected_reasons})")
    return clean
