"""The `kd` job: white-box KD of the student on the teacher's stored top-k log-probs (EasyDistill).

Where it sits: white-box KD, step 2, after the `logits` job. The driver checks the labelled rows,
then JOINS them to the logits shards (`training.kd.logits_path`) BY SAMPLE KEY, once, into
`<stage>/train_rows.arrow` (`kd_data.join_logits`); a row without stored logits is rejected with that
reason. Because every joined row carries its own token ids and top-k, shuffling, accumulation and
resumes can never pair a sequence with another sequence's logits (EasyDistill looked logits up by
step number, which they break).

The student must tokenize like the teacher: the driver compares vocabulary fingerprints and
re-tokenizes the first `kd.check_rows` joined rows with the student tokenizer; any difference is a
ConfigError on models.student (exit 2) before Ray Train starts. Workers train on the stored ids.

Loss (shared loop: `jobs/train/loop.py`): kd_ratio * KD + (1 - kd_ratio) * CE, both from the
student's final hidden states and its LM head through `chunked_topk_kd_loss` (only `chunk_tokens`
positions have full-vocabulary logits at a time), both summed over response tokens and divided by
the optimizer step's response-token count.
"""

from __future__ import annotations

from pathlib import Path

from distill_ray.config import JobConfig
from distill_ray.errors import ConfigError, InputFileError
from distill_ray.summary import StageResult
from distill_ray.training.checkpoints import unwrap
from distill_ray.training.kd_data import (
    KDDataset,
    collate_kd,
    join_logits,
    read_joined,
    read_manifest,
    sample_key,
    token_mismatch,
    tokenizer_fingerprint,
)
from distill_ray.training.rows import text_problem
from jobs.stage import StageEnv
from jobs.train.driver import (
    RowsInput,
    checked_rows,
    labeled_path,
    record_rejects,
    single_phase,
    student_tokenizer,
    train,
)
from jobs.train.objective import Objective

TRAIN_ROWS = "train_rows.arrow"


class KDObjective(Objective):
    """kd_mix(chunked top-k KD, CE) per response token."""

    job_type = "kd"
    unit = "tokens"
    metric_names = ("kd_loss", "ce_loss")
    reads_output_weight = True  # the chunked KD loss multiplies by the LM head's weight itself

    def __init__(self, model_spec, system_prompt, user_template, training):
        super().__init__(model_spec, system_prompt, user_template, training)
        self.kd = training.kd

    def read_rows(self, rows_path: str):
        return read_joined(Path(rows_path))

    def dataset(self, rows, tokenizer):
        return KDDataset(rows, self.max_length)

    def collate(self, examples, tokenizer):
        return collate_kd(examples, tokenizer.pad_token_id)

    def units(self, batch):
        return int(batch["kd_mask"].sum())

    def loss(self, model, batch, denom):
        from distill_ray.losses import get_loss
        from distill_ray.losses.topk_kd import kd_mix

        kd = self.kd
        # Only the final hidden states are needed; logits_to_keep=1 keeps the model from projecting
        # every position onto the vocabulary (the KD loss does that chunk by chunk).
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True,
                    logits_to_keep=1)  # fmt: skip
        weight = unwrap(model).get_output_embeddings().weight
        kd_loss, ce_loss = get_loss(kd.loss)(
            out.hidden_states[-1], weight, batch["topk_ids"], batch["topk_logprobs"], batch["kd_mask"],
            labels=batch["labels"] if kd.kd_ratio < 1 else None, beta=kd.beta, tail=kd.tail,
            temperature=kd.temperature, chunk_tokens=kd.chunk_tokens, num_tokens=denom,
        )  # fmt: skip
        per_unit = denom / max(1, self.units(batch))  # the losses are sums / denom; metrics are means
        metrics = {"kd_loss": kd_loss.item() * per_unit,
                   "ce_loss": ce_loss.item() * per_unit if ce_loss is not None else 0.0}  # fmt: skip
        return kd_mix(kd_loss, ce_loss, kd.kd_ratio), metrics


def run(job: JobConfig, stage: StageEnv) -> StageResult:
    """Check rows and tokenizers, join rows to the stored logits by sample key, train with Ray Train."""
    t, inf = job.training, job.inference
    path = labeled_path(job, "the kd job reads the labelled rows the logits were made from")
    folder, manifest = finished_logits(job)
    tokenizer = student_tokenizer(job, "kd")
    check_compatible(job, manifest, tokenizer)
    result = StageResult(name=stage.name, job_type="kd")
    source = RowsInput(path, ["problem", "response"], lambda row: text_problem(row, ("problem", "response")),
                       ["sample_id"])  # fmt: skip
    rows = checked_rows(stage, result, source)
    dest = stage.output_dir / TRAIN_ROWS
    joined = join_rows(stage, result, rows, folder, dest, path)
    check_student_tokens(job, manifest, tokenizer, rows, dest)
    objective = KDObjective(job.models.student, inf.system_prompt, inf.user_template, t)
    return train(job, stage, result, objective, single_phase(job, "kd", dest, joined["rows"]),
                 {"joined_response_tokens": joined["response_tokens"], "top_k": manifest["top_k"]})  # fmt: skip


def finished_logits(job: JobConfig) -> tuple[Path, dict]:
    """The logits job's output folder (training.kd.logits_path) and its manifest, which must say complete."""
    if not job.training.kd.logits_path:
        raise ConfigError("training.kd.logits_path", "the kd job reads the logits job's `<stage>/logits` folder")
    folder = Path(job.training.kd.logits_path)
    manifest = read_manifest(folder)
    if manifest is None or not manifest.get("complete"):
        raise InputFileError(str(folder), "not a finished logits job output (no complete _manifest.json)")
    return folder, manifest


def join_rows(stage: StageEnv, result: StageResult, rows: list[dict], folder: Path, dest: Path, path: str) -> dict:
    """Join `rows` to their stored logits into `dest` by sample key; a row without logits is a reject."""
    dest.unlink(missing_ok=True)
    missing, joined = join_logits([sample_key(r) for r in rows], folder, dest)
    record_rejects(result, stage, [{"reason": "no teacher logits for this sample_id", "row": rows[i]} for i in missing])
    if not joined["rows"]:
        raise InputFileError(path, f"no row has teacher logits in {folder} "
                                   f"({result.rows_rejected} rejected: {result.rejected_reasons})")  # fmt: skip
    return joined


def check_compatible(job: JobConfig, manifest: dict, tokenizer) -> None:
    """The student shares the teacher's vocabulary and the job prompts like the logits job did."""
    theirs, ours = manifest["tokenizer_fingerprint"], tokenizer_fingerprint(tokenizer)
    if ours != theirs:
        raise ConfigError("models.student", f"tokenizer differs from the teacher's ({manifest['teacher']}): vocabulary "
                          f"fingerprint {ours} vs {theirs}; white-box KD needs one shared tokenizer")  # fmt: skip
    for key in ("system_prompt", "user_template"):
        if getattr(job.inference, key) != manifest[key]:
            raise ConfigError(f"inference.{key}", "differs from the one the teacher logits were extracted with "
                              f"({manifest[key]!r}); the student must train on the prompt the teacher scored")  # fmt: skip


def check_student_tokens(job: JobConfig, manifest: dict, tokenizer, rows: list[dict], joined: Path) -> None:
    """Re-tokenize the first kd.check_rows joined rows with the student; any difference is a config error."""
    by_key = {sample_key(r): r for r in rows}
    table = read_joined(joined)
    n = min(job.training.kd.check_rows, table.num_rows)
    for stored in table.slice(0, n).to_pylist():
        reason = token_mismatch(tokenizer, by_key[stored["sample_id"]], stored, manifest["system_prompt"],
                                manifest["user_template"])  # fmt: skip
        if reason:
            raise ConfigError("models.student", f"tokenizer differs from the teacher's: sample "
                              f"{stored['sample_id']}: {reason} from the stored teacher sequence")  # fmt: skip
