"""The `advdistill` job: AdvDistill stage 2, advantage-weighted distillation with a contrastive penalty.

Where it sits: after the data stages have written one row per problem with its group of teacher
responses (`responses`, `advantages`, `correct`, `rewards`, ...; METHODS.md section 3, stage 1), and
before `eval`. The driver checks each group (a group with no correct response, or lists of unequal
length, is rejected with the reason) and hands the clean groups to the shared Ray Train loop
(`jobs/train/loop.py`). One problem's whole group is one micro-batch (per_device_train_batch_size is
ignored); its loss is `advdistill_loss` (sum_i softmax(A/tau)_i CE_i + lam * sum_{i wrong} C_i),
and the optimizer step averages it over the step's groups on all workers (or, with
`training.advdistill.normalize: token`, over the step's advantage-weighted tokens, as SFT averages tokens).

`training.advdistill.mode: sft_best` trains the paper's baseline instead: plain SFT (the sft job's
objective) on each group's highest-advantage response.
"""

from __future__ import annotations

from distill_ray.config import JobConfig
from distill_ray.data import schemas
from distill_ray.summary import StageResult
from distill_ray.training.preference_data import GroupDataset, collate_group, group_problem
from jobs.stage import StageEnv
from jobs.train.driver import RowsInput, checked_rows, labeled_path, prompt_check, student_tokenizer, train_on_rows
from jobs.train.objective import Objective
from jobs.train.sft import SFTObjective

# What the trainer reads of the curate stage's group rows (distill_ray/data/schemas.py: GROUP), with their types.
GROUP_COLUMNS = ["problem", "responses", "advantages", "correct"]
GROUP_TRAIN_SCHEMA = schemas.columns_of(schemas.GROUP, GROUP_COLUMNS)


class AdvDistillObjective(Objective):
    """The AdvDistill group loss, one group per micro-batch, averaged over the step's groups (or, under
    `normalize: token`, over its advantage-weighted tokens: the metrics are then weighted by those too)."""

    job_type = "advdistill"
    unit = "groups"  # "weighted_tokens" under training.advdistill.normalize: token
    metric_names = ("weighted_ce", "penalty", "max_weight")

    def __init__(self, model_spec, system_prompt, user_template, training):
        super().__init__(model_spec, system_prompt, user_template, training)
        self.batch_size = 1  # one problem's group per micro-batch, as in the paper
        self.options = training.advdistill
        if self.options.normalize == "token":
            self.unit = "weighted_tokens"

    def read_rows(self, rows_path: str):
        import pyarrow.parquet as pq

        return pq.read_table(rows_path, columns=GROUP_COLUMNS).to_pylist()

    def dataset(self, rows, tokenizer):
        return GroupDataset(rows, tokenizer, self.system_prompt, self.user_template, self.max_length)

    def collate(self, examples, tokenizer):
        return collate_group(examples[0], tokenizer.pad_token_id)

    def units(self, batch):
        if self.options.normalize == "response":
            return 1
        from distill_ray.losses.advdistill import weighted_token_count

        return weighted_token_count(batch["labels"][:, 1:] != -100, batch["advantages"], self.options.tau)

    def loss(self, model, batch, denom):
        from distill_ray.losses import get_loss
        from distill_ray.losses.advdistill import sequence_token_logprobs

        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        # Aligned: position t's logits score token t + 1.
        token_logprobs, mask = sequence_token_logprobs(logits[:, :-1], batch["labels"][:, 1:])
        o = self.options
        loss, metrics = get_loss("advdistill")(token_logprobs, mask, batch["advantages"], batch["correct"],
                                               tau=o.tau, lam=o.lam, p_max=o.p_max,
                                               normalize=o.normalize)  # fmt: skip
        return loss / denom, metrics


def best_response_rows(groups: list[dict]) -> list[dict]:
    """The sft_best baseline's rows: each group's highest-advantage response (first on ties)."""
    from distill_ray.losses.advdistill import best_response_index

    return [{"problem": g["problem"], "response": g["responses"][best_response_index(g["advantages"])]}
            for g in groups]  # fmt: skip


def run(job: JobConfig, stage: StageEnv) -> StageResult:
    """Check groups, then train AdvDistill (or the sft_best baseline) with Ray Train."""
    t, inf, mode = job.training, job.inference, job.training.advdistill.mode
    path = labeled_path(job, "the advdistill job reads its response groups from this file")
    tokenizer = student_tokenizer(job, "advdistill")
    result = StageResult(name=stage.name, job_type="advdistill")
    fits = prompt_check(job, tokenizer)
    source = RowsInput(path, GROUP_COLUMNS, lambda row: group_problem(row) or fits(row), ["id"], noun="groups")
    groups = checked_rows(stage, result, source)
    metrics = {"mode": mode, "responses": sum(len(g["responses"]) for g in groups)}
    if mode == "sft_best":
        objective = SFTObjective(job.models.student, inf.system_prompt, inf.user_template, t)
        return train_on_rows(job, stage, result, objective, best_response_rows(groups), ["problem", "response"],
                             phase=mode, metrics=metrics)  # fmt: skip
    objective = AdvDistillObjective(job.models.student, inf.system_prompt, inf.user_template, t)
    return train_on_rows(job, stage, result, objective, groups, GROUP_COLUMNS, schema=GROUP_TRAIN_SCHEMA,
                         phase=mode, micro_batch=1, metrics=metrics)  # fmt: skip
