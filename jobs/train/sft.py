"""The `sft` job: supervised fine-tuning of the student on teacher-labelled rows, optionally as a curriculum.

Where it sits: after the data stages (which write `problem`/`response` rows, with a `difficulty`
column once judged) and before `eval`, `dpo` or `kd`. The driver reads and checks the rows (bad ones
go to rejected/ with a reason), writes the clean ones of each phase to `<stage>/train_rows*.parquet`
and hands them to the shared Ray Train loop (`jobs/train/loop.py`: checkpoints, resume, logging)
with the `SFTObjective` below. Loss: next-token cross-entropy summed over the response tokens and
divided by the response-token count of the whole optimizer step (all micro-batches, all workers), so
batch size, accumulation and worker count do not change what is optimised.

Curriculum (`training.curriculum`, DistilQwen: medium CoTs for 3 epochs, then medium + hard): each
stage is a phase with its own rows (its `labeled_path`, filtered by its `difficulty` list) and its own
epochs, trained in order by one model with one optimizer and one LR schedule. The phase index is part
of the checkpointed state, so a resumed run continues in the stage it was killed in.
"""

from __future__ import annotations

from pathlib import Path

from distill_ray.config import JobConfig
from distill_ray.errors import ConfigError, InputFileError
from distill_ray.losses import get_loss
from distill_ray.training.sft_data import SFTDataset, collate
from distill_ray.summary import StageResult
from distill_ray.training.rows import prompt_problem, read_rows, split_rows, text_problem
from jobs.stage import StageEnv
from jobs.train.loop import (  # noqa: F401 - lr_factor / total_steps are part of this module's API
    Objective,
    Phase,
    cap_phases,
    epoch_steps,
    fit,
    lr_factor,
    total_steps,
)
from jobs.train.driver import record_rejects, student_tokenizer, write_rows

TRAIN_ROWS = "train_rows.parquet"


class SFTObjective(Objective):
    """Response-token cross-entropy, normalised over the optimizer step's tokens."""

    job_type = "sft"
    unit = "tokens"

    def read_rows(self, rows_path: str):
        import pyarrow.parquet as pq

        return pq.read_table(rows_path, columns=["problem", "response"]).to_pylist()

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
    t = job.training
    if not job.dataset.labeled_path and not all(s.labeled_path for s in t.curriculum or [None]):
        raise ConfigError("dataset.labeled_path", "the sft job reads its training rows from this file")
    result = StageResult(name=stage.name, job_type="sft")
    tokenizer = student_tokenizer(job, "sft")
    sources = _checked_sources(job, stage, result, tokenizer)
    stage.output_dir.mkdir(parents=True, exist_ok=True)
    objective = SFTObjective(job.models.student, job.inference.system_prompt, job.inference.user_template, t)
    phases = plan_sft_phases(job, stage.output_dir, sources)
    result.rows_out = sum(len(rows) for rows in sources.values())
    result.metrics = fit(job, stage, objective, phases)
    result.outputs = {"model": str(stage.output_dir / "model"), "checkpoints": str(stage.output_dir / "checkpoints")}
    return result


def _checked_sources(job: JobConfig, stage: StageEnv, result: StageResult, tokenizer) -> dict[str, list[dict]]:
    """Clean rows of every input file, each read and checked once (curriculum stages may share a file)."""
    inf, t = job.inference, job.training
    if t.curriculum:
        paths = list(dict.fromkeys(s.labeled_path or job.dataset.labeled_path for s in t.curriculum))
    else:
        paths = [job.dataset.labeled_path]

    def check(row):
        return text_problem(row, ("problem", "response")) or prompt_problem(
            row, tokenizer, inf.system_prompt, inf.user_template, t.max_length)  # fmt: skip

    sources = {}
    for path in paths:
        rows, unreadable = read_rows(path, ["problem", "response"], ["difficulty"])
        clean, bad = split_rows(rows, check)
        result.rows_in += len(rows) + len(unreadable)
        record_rejects(result, stage, unreadable + bad)
        if not clean:
            raise InputFileError(path, f"no usable training rows ({len(unreadable) + len(bad)} rejected: "
                                       f"{result.rejected_reasons})")  # fmt: skip
        sources[path] = clean
    return sources


def plan_sft_phases(job: JobConfig, out: Path, sources: dict[str, list[dict]]) -> list[Phase]:
    """Write each phase's rows and size it: epochs (or max_steps) of its own rows, capped by training.max_steps."""
    t, world, accum = job.training, job.training.num_workers, job.training.gradient_accumulation_steps
    if not t.curriculum:
        rows = sources[job.dataset.labeled_path]
        path = write_rows(rows, out / TRAIN_ROWS, ["problem", "response"])
        return [Phase("sft", str(path), len(rows), total_steps(t, len(rows), world))]
    phases = []
    for cs in t.curriculum:
        rows = sources[cs.labeled_path or job.dataset.labeled_path]
        if cs.difficulty is not None:
            wanted = set(cs.difficulty)
            rows = [r for r in rows if r.get("difficulty") in wanted]
        if not rows:
            raise ConfigError(f"training.curriculum.{cs.name}.difficulty",
                              f"no rows with difficulty in {cs.difficulty} (is there a `difficulty` column?)")  # fmt: skip
        path = write_rows(rows, out / f"train_rows_{cs.name}.parquet", ["problem", "response"])
        epochs = cs.num_train_epochs or t.num_train_epochs
        steps = cs.max_steps or epoch_steps(len(rows), world, t.per_device_train_batch_size, accum, epochs)
        phases.append(Phase(cs.name, str(path), len(rows), steps))
    return cap_phases(phases, t.max_steps)
