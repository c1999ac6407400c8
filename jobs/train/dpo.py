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
from distill_ray.errors import ConfigError, InputFileError
from distill_ray.training.preference_data import PairDataset, collate_pairs, pair_problem
from distill_ray.summary import StageResult
from distill_ray.training.rows import prompt_problem, read_rows, split_rows
from jobs.stage import StageEnv
from jobs.train.loop import Objective, Phase, fit, total_steps
from jobs.train.driver import record_rejects, student_tokenizer, write_rows

PAIR_COLUMNS = ["problem", "chosen", "rejected", "beta"]
TRAIN_ROWS = "train_rows.parquet"


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
        self.reference = load_causal_lm(resolve_model(spec, key)).to(device).eval()
        self.reference.requires_grad_(False)

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


def check_pairs(job: JobConfig, stage: StageEnv, result: StageResult, tokenizer) -> list[dict]:
    """Clean pairs of dataset.labeled_path; rejects recorded with their reasons (shared with the rm job)."""
    inf, path = job.inference, job.dataset.labeled_path
    rows, unreadable = read_rows(path, ["problem", "chosen", "rejected"], ["beta", "pair_type", "id"])
    result.rows_in = len(rows) + len(unreadable)

    def check(row):
        return pair_problem(row) or prompt_problem(row, tokenizer, inf.system_prompt, inf.user_template,
                                                   job.training.max_length)  # fmt: skip

    clean, bad = split_rows(rows, check)
    record_rejects(result, stage, unreadable + bad)
    if not clean:
        raise InputFileError(path, f"no usable pairs ({result.rows_rejected} rejected: {result.rejected_reasons})")
    return clean


def run(job: JobConfig, stage: StageEnv) -> StageResult:
    """Check pairs, then train DPO / CogPO with Ray Train."""
    t = job.training
    if not job.dataset.labeled_path:
        raise ConfigError("dataset.labeled_path", "the dpo job reads its preference pairs from this file")
    result = StageResult(name=stage.name, job_type="dpo")
    clean = check_pairs(job, stage, result, student_tokenizer(job, "dpo"))
    dest = write_rows(clean, stage.output_dir / TRAIN_ROWS, PAIR_COLUMNS, schema=pair_schema())
    result.rows_out = len(clean)
    objective = DPOObjective(job.models.student, job.inference.system_prompt, job.inference.user_template, t)
    phases = [Phase("dpo", str(dest), len(clean), total_steps(t, len(clean), t.num_workers))]
    result.metrics = {**fit(job, stage, objective, phases), "loss_type": t.dpo.loss}
    result.outputs = {"model": str(stage.output_dir / "model"), "checkpoints": str(stage.output_dir / "checkpoints")}
    return result


def pair_schema():
    """Explicit types: a beta column that is all null must still be a double column."""
    import pyarrow as pa

    return pa.schema([("problem", pa.string()), ("chosen", pa.string()), ("rejected", pa.string()),
                      ("beta", pa.float64())])  # fmt: skip
