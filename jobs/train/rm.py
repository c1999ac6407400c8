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
from distill_ray.summary import StageResult
from distill_ray.training.preference_data import PairDataset, collate_pairs
from distill_ray.training.reward_data import (
    RewardRowsDataset,
    collate_scored,
    reward_meta,
    write_reward_meta,
)
from distill_ray.training.rows import score_problem, text_problem
from jobs.stage import StageEnv
from jobs.train.dpo import PAIR_COLUMNS, PAIR_TRAIN_SCHEMA, pairs_input
from jobs.train.driver import RowsInput, checked_rows, labeled_path, prompt_check, student_tokenizer, train_on_rows
from jobs.train.objective import Objective


class PointwiseRMObjective(Objective):
    """Regress sigmoid(head) onto the judge score normalised to [0, 1]."""

    job_type = "rm"
    unit = "sequences"
    metric_names = ("mae",)
    peft_task_type = "SEQ_CLS"  # training.lora: the random score head trains in full beside the adapters

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
    path = labeled_path(job, "the rm job reads judged CoTs or preference pairs from this file")
    tokenizer = student_tokenizer(job, "rm")
    result = StageResult(name=stage.name, job_type="rm")
    args = (job.models.student, inf.system_prompt, inf.user_template, t, tokenizer.pad_token_id)
    metrics = {"objective": rm.objective, "target": rm.target if rm.objective == "pointwise" else None}
    phase = f"rm-{rm.objective}"
    if rm.objective == "pairwise":
        pairs = checked_rows(stage, result, pairs_input(job, path, tokenizer))
        return train_on_rows(job, stage, result, PairwiseRMObjective(*args), pairs, PAIR_COLUMNS,
                             schema=PAIR_TRAIN_SCHEMA, phase=phase, metrics=metrics)  # fmt: skip
    rows = checked_rows(stage, result, judged_input(job, path, tokenizer))
    return train_on_rows(job, stage, result, PointwiseRMObjective(*args), rows, ["problem", "response", rm.target],
                         phase=phase, metrics=metrics)  # fmt: skip


def judged_input(job: JobConfig, path: str, tokenizer) -> RowsInput:
    """Judged CoTs in `path`, each with a numeric score in its `reward_model.target` column."""
    target, fits = job.training.reward_model.target, prompt_check(job, tokenizer)

    def check(row):
        return text_problem(row, ("problem", "response")) or score_problem(row.get(target), target) or fits(row)

    return RowsInput(path, ["problem", "response", target], check, ["sample_id", "difficulty"], noun="judged rows")
