"""The `advdistill` job: AdvDistill stage 2, advantage-weighted distillation with a contrastive penalty.

Where it sits: after the data stages have written one row per problem with its group of teacher
responses (`responses`, `advantages`, `correct`, `rewards`, ...; METHODS.md section 3, stage 1), and
before `eval`. The driver checks each group (a group with no correct response, or lists of unequal
length, is rejected with the reason) and hands the clean groups to the shared Ray Train loop
(`jobs/train/loop.py`). One problem's whole group is one micro-batch (per_device_train_batch_size is
ignored); its loss is `advdistill_loss` (sum_i softmax(A/tau)_i CE_i + lam * sum_{i wrong} C_i),
and the optimizer step averages it over the step's groups on all workers.

`training.advdistill.mode: sft_best` trains the paper's baseline instead: plain SFT (the sft job's
objective) on each group's highest-advantage response.
"""

from __future__ import annotations

from distill_ray.config import JobConfig
from distill_ray.errors import ConfigError, InputFileError
from distill_ray.training.preference_data import GroupDataset, collate_group, group_problem
from distill_ray.summary import StageResult
from distill_ray.training.rows import prompt_problem, read_rows, split_rows
from jobs.stage import StageEnv
from jobs.train.sft import SFTObjective
from jobs.train.loop import Objective, Phase, fit, total_steps
from jobs.train.driver import record_rejects, student_tokenizer, write_rows

GROUP_COLUMNS = ["problem", "responses", "advantages", "correct"]
TRAIN_ROWS = "train_rows.parquet"


class AdvDistillObjective(Objective):
    """The AdvDistill group loss, one group per micro-batch, averaged over the step's groups."""

    job_type = "advdistill"
    unit = "groups"
    metric_names = ("weighted_ce", "penalty", "max_weight")

    def __init__(self, model_spec, system_prompt, user_template, training):
        super().__init__(model_spec, system_prompt, user_template, training)
        self.batch_size = 1  # one problem's group per micro-batch, as in the paper
        self.options = training.advdistill

    def read_rows(self, rows_path: str):
        import pyarrow.parquet as pq

        return pq.read_table(rows_path, columns=GROUP_COLUMNS).to_pylist()

    def dataset(self, rows, tokenizer):
        return GroupDataset(rows, tokenizer, self.system_prompt, self.user_template, self.max_length)

    def collate(self, examples, tokenizer):
        return collate_group(examples[0], tokenizer.pad_token_id)

    def units(self, batch):
        return 1

    def loss(self, model, batch, denom):
        from distill_ray.losses import get_loss
        from distill_ray.losses.advdistill import sequence_token_logprobs

        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        # Aligned: position t's logits score token t + 1.
        token_logprobs, mask = sequence_token_logprobs(logits[:, :-1], batch["labels"][:, 1:])
        o = self.options
        loss, metrics = get_loss("advdistill")(token_logprobs, mask, batch["advantages"], batch["correct"],
                                               tau=o.tau, lam=o.lam, p_max=o.p_max)  # fmt: skip
        return loss / denom, metrics


def best_response_rows(groups: list[dict]) -> list[dict]:
    """The sft_best baseline's rows: each group's highest-advantage response (first on ties)."""
    from distill_ray.losses.advdistill import best_response_index

    return [{"problem": g["problem"], "response": g["responses"][best_response_index(g["advantages"])]}
            for g in groups]  # fmt: skip


def run(job: JobConfig, stage: StageEnv) -> StageResult:
    """Check groups, then train AdvDistill (or the sft_best baseline) with Ray Train."""
    t, inf = job.training, job.inference
    if not job.dataset.labeled_path:
        raise ConfigError("dataset.labeled_path", "the advdistill job reads its response groups from this file")
    tokenizer = student_tokenizer(job, "advdistill")
    result = StageResult(name=stage.name, job_type="advdistill")
    rows, unreadable = read_rows(job.dataset.labeled_path, GROUP_COLUMNS, ["id"])
    result.rows_in = len(rows) + len(unreadable)

    def check(row):
        return group_problem(row) or prompt_problem(row, tokenizer, inf.system_prompt, inf.user_template,
                                                    t.max_length)  # fmt: skip

    clean, bad = split_rows(rows, check)
    record_rejects(result, stage, unreadable + bad)
    if not clean:
        raise InputFileError(job.dataset.labeled_path, f"no usable groups ({result.rows_rejected} rejected: "
                                                       f"{result.rejected_reasons})")  # fmt: skip
    dest = stage.output_dir / TRAIN_ROWS
    if t.advdistill.mode == "sft_best":
        objective = SFTObjective(job.models.student, inf.system_prompt, inf.user_template, t)
        write_rows(best_response_rows(clean), dest, ["problem", "response"])
        micro = t.per_device_train_batch_size
    else:
        objective = AdvDistillObjective(job.models.student, inf.system_prompt, inf.user_template, t)
        write_rows(clean, dest, GROUP_COLUMNS)
        micro = 1
    result.rows_out = len(clean)
    phases = [Phase(t.advdistill.mode, str(dest), len(clean), total_steps(t, len(clean), t.num_workers, micro))]
    responses = sum(len(g["responses"]) for g in clean)
    result.metrics = {**fit(job, stage, objective, phases), "mode": t.advdistill.mode, "responses": responses}
    result.outputs = {"model": str(stage.output_dir / "model"), "checkpoints": str(stage.output_dir / "checkpoints")}
    return result
