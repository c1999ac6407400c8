"""The `logits` job: the teacher's top-k log-probs for every response token of the labelled rows.

Where it sits: white-box KD, step 1. After the data stages (labelled `problem`/`response` rows, with
`sample_id` where the generation job wrote one) and before `kd`, which joins its rows to these shards
by sample key. The driver checks the rows (bad ones go to rejected/ with a reason); a pool of
`TeacherLogitsExtractor` actors (Ray Data) runs the teacher (`models.teacher`) teacher-forced over
each row and the results are written as Parquet shards to `<stage>/logits/` (format and manifest:
`distill_ray/training/kd_data.py`).

Rows are tokenized exactly as sft tokenizes them (chat prompt + response + end-of-turn, the response's
tail cut at training.max_length), so the student trains on the very sequence the teacher scored. A
row whose prompt alone reaches max_length is rejected with that reason: cutting the prompt would
teach the student a prompt it never sees. A second row with the same sample key is rejected as a
duplicate (its logits are stored once and shared by the key).

Resumable: shards already in `<stage>/logits/` made with the same settings (the manifest) are kept and
their keys skipped; a shard a killed run left unreadable is deleted and its rows are extracted again.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from actors.logits import TeacherLogitsExtractor
from distill_ray.config import JobConfig
from distill_ray.summary import StageResult
from distill_ray.training.kd_data import read_manifest, sample_key, shard_files, tokenizer_fingerprint, write_manifest
from distill_ray.training.rows import text_problem
from jobs.stage import StageEnv
from jobs.train.driver import RowsInput, checked_rows, labeled_path, prompt_check, record_rejects


def run(job: JobConfig, stage: StageEnv) -> StageResult:
    from distill_ray.models.loading import load_tokenizer, model_identity, resolve_model

    path = labeled_path(job, "the logits job reads the labelled rows the teacher scores here")
    tokenizer = load_tokenizer(resolve_model(job.models.teacher, "models.teacher"))
    result = StageResult(name=stage.name, job_type="logits")
    clean = _checked_rows(stage, result, path, prompt_check(job, tokenizer))
    out = stage.output_dir / "logits"
    kd, inf = job.training.kd, job.inference
    settings = {"teacher": model_identity(job.models.teacher),  # its weights: a teacher retrained in place re-scores
                "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer),
                "top_k": kd.top_k, "logprob_dtype": kd.logprob_dtype, "max_length": job.training.max_length,
                "system_prompt": inf.system_prompt, "user_template": inf.user_template}  # fmt: skip
    done = _reusable_keys(out, settings)
    todo = [r for r in clean if r["sample_id"] not in done]
    started = time.time()
    if todo:
        # Settings first: a run killed mid-way leaves shards a re-run can reuse, marked incomplete for kd.
        write_manifest(out, {**settings, "complete": False})
        _extract(job, todo, out)
    seconds = time.time() - started
    stats = shard_stats(out)
    write_manifest(out, {**settings, "complete": True, "vocab_size": len(tokenizer), "rows": stats["rows"],
                         "response_tokens": stats["response_tokens"]})  # fmt: skip
    result.rows_out = len(clean)
    result.metrics = {
        "rows_extracted": len(todo),
        "rows_reused": len(clean) - len(todo),
        **stats,
        "raw_bytes_per_token": kd.top_k * (4 + (2 if kd.logprob_dtype == "float16" else 4)) + 4,
        "extract_seconds": round(seconds, 2),
    }
    result.outputs = {"logits": str(out)}
    return result


def _checked_rows(stage: StageEnv, result: StageResult, path: str, fits) -> list[dict]:
    """Clean rows {sample_id, problem, response}, each key once; rejects recorded with their reasons."""

    def check(row):
        return text_problem(row, ("problem", "response")) or fits(row)

    seen, unique, duplicates = set(), [], []
    for row in checked_rows(stage, result, RowsInput(path, ["problem", "response"], check, ["sample_id"])):
        key = sample_key(row)
        if key in seen:
            duplicates.append({"reason": "duplicate sample_id (its logits are stored once)", "row": row})
            continue
        seen.add(key)
        unique.append({"sample_id": key, "problem": row["problem"], "response": row["response"]})
    record_rejects(result, stage, duplicates)
    return unique


def _reusable_keys(out: Path, settings: dict) -> set[str]:
    """Keys already extracted with these settings; anything else in `out` is removed."""
    import pyarrow.parquet as pq

    manifest = read_manifest(out)
    if manifest is None or any(manifest.get(k) != v for k, v in settings.items()):
        shutil.rmtree(out, ignore_errors=True)
        return set()
    keys: set[str] = set()
    for shard in shard_files(out):
        try:
            keys.update(pq.read_table(shard, columns=["sample_id"]).column("sample_id").to_pylist())
        except Exception:  # noqa: BLE001 - a shard cut short by a kill: extract its rows again
            shard.unlink()
    return keys


def _extract(job: JobConfig, rows: list[dict], out: Path) -> None:
    """Map the extractor pool over `rows` and append its shards to `out`."""
    import ray.data

    t, kd, inf = job.training, job.training.kd, job.inference
    rows = sorted(rows, key=lambda r: len(r["problem"]) + len(r["response"]))  # similar lengths pad less
    out.mkdir(parents=True, exist_ok=True)
    ray.data.from_items(rows).map_batches(
        TeacherLogitsExtractor,
        fn_constructor_kwargs=dict(model_spec=job.models.teacher, system_prompt=inf.system_prompt,
                                   user_template=inf.user_template, max_length=t.max_length, top_k=kd.top_k,
                                   logprob_dtype=kd.logprob_dtype, threads=max(1, int(t.cpus_per_worker)),
                                   use_gpu=t.use_gpu),  # fmt: skip
        batch_size=kd.extract_batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=kd.extract_concurrency),
        num_cpus=t.cpus_per_worker,
        num_gpus=1 if t.use_gpu else 0,
    ).write_parquet(str(out))


def shard_stats(out: Path) -> dict:
    """Rows, response tokens and bytes on disk of the shards in `out` (bytes per token: the storage cost)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    rows = tokens = size = 0
    for shard in shard_files(out):
        column = pq.read_table(shard, columns=["response_ids"]).column("response_ids")
        rows += len(column)
        tokens += int(pc.sum(pc.list_value_length(column)).as_py() or 0)
        size += shard.stat().st_size
    return {"rows": rows, "response_tokens": tokens, "bytes": size,
            "bytes_per_token": round(size / tokens, 2) if tokens else None}  # fmt: skip
