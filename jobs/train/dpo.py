"""The `dpo` job: DPO or CogPO of the student on preference pairs against a frozen reference model.

Where it sits: after the data stages have written preference pairs (`problem`, `chosen`, `rejected`,
`pair_type`, `beta`; e.g. the teacher's answer chosen, the student's rejected) and usually after
`sft` (DistilQwen: DPO after curriculum SFT). The driver checks the pairs (identical or empty sides,
a non-positive beta: rejected with the reason) and hands them to the shared Ray Train loop
(`jobs/train/loop.py`). Each worker also holds a frozen copy of the reference model
(`training.dpo.reference_model`, default the student's starting point, also after a resume) and
scores every micro-batch with it under no_grad. A micro-batch is per_device_train_batch_size pairs
(chosen and rejected in one forward); the loss is averaged over the optimizer step's pairs.

`training.dpo.loss: cogpo` uses each pair's own `beta` (null -> training.dpo.beta); `sigmoid` uses
training.dpo.beta for every pair.
"""

from __future__ import annotations

from distill_ray.config import JobConfig
from distill_ray.data import schemas
from distill_ray.summary import StageResult
from distill_ray.training.preference_data import PairDataset, collate_pairs, pair_problem
from jobs.stage import StageEnv
from jobs.train.driver import RowsInput, checked_rows, labeled_path, prompt_check, student_tokenizer, train_on_rows
from jobs.train.objective import Objective

# What the trainer reads of the pairs stage's rows (distill_ray/data/schemas.py: PAIR), with their types, so a
# beta column that is all null is still written as doubles.
PAIR_COLUMNS = ["problem", "chosen", "rejected", "beta"]
PAIR_TRAIN_SCHEMA = schemas.columns_of(schemas.PAIR, PAIR_COLUMNS)


class DPOObjective(Objective):
    """Sigmoid DPO / CogPO over pairs, the reference log-probs computed alongside under no_grad."""

    job_type = "dpo"
    unit = "pairs"
    metric_names = ("reward_accuracy", "reward_margin", "chosen_reward", "rejected_reward")

    def __init__(self, model_spec, system_prompt, user_template, training):
        super().__init__(model_spec, system_prompt, user_template, training)
        self.options = training.dpo
        self.reference = None

    def read_rows(self, rows_path: str):
        import pyarrow.parquet as pq

        return pq.read_table(rows_path, columns=PAIR_COLUMNS).to_pylist()

    def dataset(self, rows, tokenizer):
        return PairDataset(rows, tokenizer, self.system_prompt, self.user_template, self.max_length)

    def collate(self, examples, tokenizer):
        return collate_pairs(examples, tokenizer.pad_token_id, self.options.beta)

    def setup_worker(self, device) -> None:
        from distill_ray.models.loading import load_causal_lm, resolve_model

        spec = self.options.reference_model or self.model_spec
        key = "training.dpo.reference_model" if self.options.reference_model else "models.student"
        self.reference = self.place_frozen(load_causal_lm(resolve_model(spec, key)), device)

    def units(self, batch):
        return len(batch["betas"])

    def loss(self, model, batch, denom):
        import torch

        from distill_ray.losses import get_loss
        from distill_ray.losses.preference import sequence_logps

        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        targets = batch["labels"][:, 1:]  # aligned: position t's logits score token t + 1
        policy = sequence_logps(model(**inputs).logits[:, :-1], targets)
        with torch.no_grad():
            reference = sequence_logps(self.reference(**inputs).logits[:, :-1], targets)
        n = len(batch["betas"])
        sides = (policy[:n], policy[n:], reference[:n], reference[n:])
        # cogpo: each pair's own beta (collate fills a missing one with training.dpo.beta); sigmoid: one beta.
        beta = batch["betas"] if self.options.loss == "cogpo" else self.options.beta
        loss, metrics = get_loss(self.options.loss)(*sides, beta, label_smoothing=self.options.label_smoothing)
        return loss * n / denom, metrics  # the loss is a mean over this micro-batch's pairs


def run(job: JobConfig, stage: StageEnv) -> StageResult:
    """Check pairs, then train DPO / CogPO with Ray Train."""
    t, inf = job.training, job.inference
    path = labeled_path(job, "the dpo job reads its preference pairs from this file")
    tokenizer = student_tokenizer(job, "dpo")
    result = StageResult(name=stage.name, job_type="dpo")
    pairs = checked_rows(stage, result, pairs_input(job, path, tokenizer))
    objective = DPOObjective(job.models.student, inf.system_prompt, inf.user_template, t)
    return train_on_rows(job, stage, result, objective, pairs, PAIR_COLUMNS, schema=PAIR_TRAIN_SCHEMA,
                         metrics={"loss_type": t.dpo.loss})  # fmt: skip


def pairs_input(job: JobConfig, path: str, tokenizer) -> RowsInput:
    """The preference pairs in `path` and their check (shared with the rm job's pairwise RMs)."""
    fits = prompt_check(job, tokenizer)
    return RowsInput(path, ["problem", "chosen", "rejected"],
                     lambda row: pair_problem(row) or fits(row), ["beta", "pair_type", "id"], noun="pairs")  # fmt: skip

