"""The `sft` job: supervised fine-tuning of the student on teacher-labelled rows, optionally as a curriculum.

Where it sits: after the data stages (which write `problem`/`response` rows, with a `difficulty`
column once judged) and before `eval`, `dpo` or `kd`. The shared driver (`jobs/train/driver.py`)
reads and checks the rows (bad ones go to rejected/ with a reason); this job writes the clean ones of
each phase to `<stage>/train_rows*.parquet` and hands them to the shared Ray Train loop
(`jobs/train/loop.py`: checkpoints, resume, logging) with the `SFTObjective` below. Loss: next-token
cross-entropy summed over the response tokens and divided by the response-token count of the whole
optimizer step (all micro-batches, all workers), so batch size, accumulation and worker count do not
change what is optimised.

Curriculum (`training.curriculum`, DistilQwen: medium CoTs for 3 epochs, then medium + hard): each
stage is a phase with its own rows (its `labeled_path`, filtered by its `difficulty` list) and its own
epochs, trained in order by one model with one optimizer and one LR schedule. The phase index is part
of the checkpointed state, so a resumed run continues in the stage it was killed in.
"""

from __future__ import annotations

from pathlib import Path

from distill_ray.config import JobConfig
from distill_ray.errors import ConfigError
from distill_ray.losses import get_loss
from distill_ray.summary import StageResult
from distill_ray.training.rows import text_problem
from distill_ray.training.schedule import Phase, cap_phases, epoch_steps
from distill_ray.training.sft_data import SFTDataset, collate
from jobs.stage import StageEnv
from jobs.train.driver import (
    TRAIN_ROWS,
    RowsInput,
    checked_rows,
    prompt_check,
    single_phase,
    student_tokenizer,
    train,
    write_rows,
)
from jobs.train.objective import Objective

COLUMNS = ["problem", "response"]


class SFTObjective(Objective):
    """Response-token cross-entropy, normalised over the optimizer step's tokens."""

    job_type = "sft"
    unit = "tokens"

    def read_rows(self, rows_path: str):
        import pyarrow.parquet as pq

        return pq.read_table(rows_path, columns=COLUMNS).to_pylist()

    def dataset(self, rows, tokenizer):
        return SFTDataset(rows, tokenizer, self.system_prompt, self.user_template, self.max_length)

    def collate(self, examples, tokenizer):
        return collate(examples, tokenizer.pad_token_id)

    def units(self, batch):
        return int((batch["labels"][:, 1:] != -100).sum())

    def loss(self, model, batch, denom):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return get_loss("sft")(logits, batch["labels"]) / denom, {}


def run(job: JobConfig, stage: StageEnv) -> StageResult:
    """Check rows, plan the phases (one, or one per curriculum stage), train with Ray Train."""
    t, inf = job.training, job.inference
    if not job.dataset.labeled_path and not all(s.labeled_path for s in t.curriculum or [None]):
        raise ConfigError("dataset.labeled_path", "the sft job reads its training rows from this file")
    tokenizer = student_tokenizer(job, "sft")
    result = StageResult(name=stage.name, job_type="sft")
    fits = prompt_check(job, tokenizer)

    def check(row):
        return text_problem(row, ("problem", "response")) or fits(row)

    # Each input file is read and checked once (curriculum stages may share one).
    sources = {path: checked_rows(stage, result, RowsInput(path, COLUMNS, check, ["difficulty"], noun="training rows"))
               for path in _input_paths(job)}  # fmt: skip
    objective = SFTObjective(job.models.student, inf.system_prompt, inf.user_template, t)
    return train(job, stage, result, objective, plan_sft_phases(job, stage.output_dir, sources))


def _input_paths(job: JobConfig) -> list[str]:
    """dataset.labeled_path, or the distinct files of the curriculum stages (each defaults to it)."""
    if not job.training.curriculum:
        return [job.dataset.labeled_path]
    return list(dict.fromkeys(s.labeled_path or job.dataset.labeled_path for s in job.training.curriculum))


def plan_sft_phases(job: JobConfig, out: Path, sources: dict[str, list[dict]]) -> list[Phase]:
    """Write each phase's rows and size it: epochs (or max_steps) of its own rows, capped by training.max_steps."""
    t, world, accum = job.training, job.training.num_workers, job.training.gradient_accumulation_steps
    if not t.curriculum:
        rows = sources[job.dataset.labeled_path]
        return single_phase(job, "sft", write_rows(rows, out / TRAIN_ROWS, COLUMNS), len(rows))
    phases = []
    for cs in t.curriculum:
        rows = sources[cs.labeled_path or job.dataset.labeled_path]
        if cs.difficulty is not None:
            wanted = set(cs.difficulty)
            rows = [r for r in rows if r.get("difficulty") in wanted]
        if not rows:
            raise ConfigError(f"training.curriculum.{cs.name}.difficulty",
                              f"no rows with difficulty in {cs.difficulty} (is there a `difficulty` column?)")  # fmt: skip
        path = write_rows(rows, out / f"train_rows_{cs.name}.parquet", COLUMNS)
        epochs = cs.num_train_epochs or t.num_train_epochs
        steps = cs.max_steps or epoch_steps(len(rows), world, t.per_device_train_batch_size, accum, epochs)
        phases.append(Phase(cs.name, str(path), len(rows), steps))
    return cap_phases(phases, t.max_steps)
