"""The `sft` job: supervised fine-tuning of the student on teacher-labelled rows, on Ray Train.

Where it sits: after `generate` (which writes `problem`/`response` rows to `dataset.labeled_path`)
and before `eval`. The driver validates rows (bad ones go to rejected/ with a reason), writes the
clean ones to `<stage>/train_rows.parquet` and starts a `TorchTrainer`; every worker runs the plain
loop in `train_loop_per_worker` (DDP over gloo on CPU, NCCL on GPU). Rank 0 writes checkpoints to
`<stage>/checkpoints/step_N/` and the final HF model to `<stage>/model/`.

Resume: a checkpoint folder is written under a temp name and renamed, so `step_N/` exists only when
complete. On start every worker loads the newest one (weights, optimizer, scheduler, data position)
and skips the micro-batches that epoch already consumed, so re-running the same command after a
kill continues where the last checkpoint left off.

Logging: `ray.train.report` every `logging_steps`, but at most once per Train V2 controller poll
(2 s), because faster reports stall the loop; every step's loss is kept in the checkpointed state.

Loss weighting: each micro-batch's loss is the mean cross-entropy over its response tokens (sum /
count), divided by gradient_accumulation_steps, so micro-batches weigh equally within an optimizer
step; DDP then averages gradients over workers, so workers weigh equally too.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from distill_ray.config import JobConfig, TrainingConfig
from distill_ray.errors import ConfigError, InputFileError
from distill_ray.sft_data import SFTDataset, epoch_batches, read_labeled_rows, select_training_rows
from distill_ray.summary import StageResult
from jobs.common import StageEnv, append_rejected

TRAIN_ROWS = "train_rows.parquet"
STATE_FILE = "trainer_state.json"  # written last inside a checkpoint; its presence marks it complete
METRICS_FILE = "train_metrics.json"


def run(job: JobConfig, stage: StageEnv) -> StageResult:
    """Validate rows, train with Ray Train, return counts and loss metrics (see module docstring)."""
    from distill_ray.models import load_tokenizer, resolve_model

    if not job.models.student:
        raise ConfigError("models.student", "the sft job needs a student model to start from")
    if not job.dataset.labeled_path:
        raise ConfigError("dataset.labeled_path", "the sft job reads its training rows from this file")
    result = StageResult(name=stage.name, job_type="sft")
    tokenizer = load_tokenizer(resolve_model(job.models.student, "models.student"))
    path = job.dataset.labeled_path
    rows, rejects = read_labeled_rows(path)
    result.rows_in = len(rows) + len(rejects)
    inf = job.inference
    clean, bad = select_training_rows(rows, tokenizer, inf.system_prompt, inf.user_template, job.training.max_length)
    rejects += bad
    append_rejected(stage.rejected_file, stage.name, rejects)
    result.count_rejects([r["reason"] for r in rejects])
    if not clean:
        raise InputFileError(path, f"no usable training rows ({len(rejects)} rejected: {result.rejected_reasons})")

    import pyarrow as pa
    import pyarrow.parquet as pq

    stage.output_dir.mkdir(parents=True, exist_ok=True)
    rows_path = stage.output_dir / TRAIN_ROWS
    pq.write_table(pa.Table.from_pylist(clean), rows_path)
    result.rows_out = len(clean)
    result.metrics = fit(job, stage, rows_path)
    result.outputs = {"model": str(stage.output_dir / "model"), "checkpoints": str(stage.output_dir / "checkpoints")}
    return result


def fit(job: JobConfig, stage: StageEnv, rows_path: Path) -> dict[str, Any]:
    """Run the TorchTrainer and return rank 0's metrics."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    t = job.training
    out = stage.output_dir.resolve()
    config = {
        "model_spec": job.models.student,
        "rows_path": str(rows_path.resolve()),
        "output_dir": str(out),
        "system_prompt": job.inference.system_prompt,
        "user_template": job.inference.user_template,
        "training": t.model_dump(),
        "fit_started": time.time(),
    }
    (out / METRICS_FILE).unlink(missing_ok=True)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=config,
        torch_config=TorchConfig(backend="nccl" if t.use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=t.num_workers, use_gpu=t.use_gpu, resources_per_worker={"CPU": t.cpus_per_worker}
        ),
        # One Ray Train run name per stage folder: re-runs of a stage land in the same place.
        run_config=RunConfig(storage_path=stage.ray.storage_path, name=_run_name(out)),
    )
    result = trainer.fit()
    metrics = getattr(result, "return_value", None)  # Train V2 hands back rank 0's return value
    if metrics is None:  # Train V1 does not: rank 0 also wrote them next to the model
        metrics = json.loads((out / METRICS_FILE).read_text())
    return metrics


def _run_name(output_dir: Path) -> str:
    digest = hashlib.sha1(str(output_dir).encode()).hexdigest()[:10]
    return f"sft-{output_dir.name}-{digest}"


# ----------------------------------------------------------------------------- worker side


def train_loop_per_worker(config: dict) -> dict | None:
    """One Ray Train worker: load data and model, resume if a checkpoint exists, train, save."""
    import ray.train
    import torch

    # Fractional CPU shares: one intra-op thread per worker, or 2 workers fight over 2 cores.
    torch.set_num_threads(1)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    t = TrainingConfig(**config["training"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    out = Path(config["output_dir"])
    ckpt_root = out / "checkpoints"
    if rank == 0:
        _clear_partial_checkpoints(ckpt_root)
    latest = latest_checkpoint(ckpt_root)
    data = _load_dataset(config)
    model, optimizer, scheduler, state = _setup(config, t, data, latest, world)
    torch.manual_seed(t.seed + rank + 1_000_003 * state["step"])  # dropout differs per rank and resume
    started = time.time()
    steps_before = state["step"]
    train_steps(model, optimizer, scheduler, data, state, t, rank, world, ckpt_root)
    if rank != 0:
        return None
    save_checkpoint(ckpt_root, model, optimizer, scheduler, state, data.tokenizer)
    save_final_model(out / "model", model, data.tokenizer)
    seconds = time.time() - started
    losses = state["losses"]
    metrics = {
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "steps": state["step"],
        "steps_run": state["step"] - steps_before,
        "resumed_from_step": latest_step(latest),
        "train_seconds": round(seconds, 3),
        "steps_per_second": round((state["step"] - steps_before) / seconds, 3) if seconds > 0 else None,
        "startup_seconds": round(started - config["fit_started"], 3),
    }
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2))
    return metrics


def _load_dataset(config: dict) -> SFTDataset:
    """The driver's clean rows, tokenized lazily: a rank only pays for the rows it trains on."""
    import pyarrow.parquet as pq

    from distill_ray.models import load_tokenizer, resolve_model

    rows = pq.read_table(config["rows_path"], columns=["problem", "response"]).to_pylist()
    tokenizer = load_tokenizer(resolve_model(config["model_spec"], "models.student"))
    return SFTDataset(rows, tokenizer, config["system_prompt"], config["user_template"],
                      config["training"]["max_length"])


def _setup(config: dict, t: TrainingConfig, data: SFTDataset, latest: Path | None, world: int):
    """Model (from the latest checkpoint or the student spec), AdamW, LR schedule and loop state."""
    import ray.train.torch
    import torch

    from distill_ray.models import load_causal_lm, resolve_model

    model_dir = latest / "model" if latest else resolve_model(config["model_spec"], "models.student")
    model = ray.train.torch.prepare_model(load_causal_lm(model_dir))
    optimizer = torch.optim.AdamW(model.parameters(), lr=t.learning_rate, weight_decay=t.weight_decay)
    total = total_steps(t, len(data), world)
    warmup = math.ceil(t.warmup_ratio * total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(t.lr_scheduler_type, s, warmup, total))
    # Seed info travels with the state: per-rank RNGs are re-derived from (seed, rank, step) on resume.
    state = {"step": 0, "epoch": 0, "samples_in_epoch": 0, "losses": [], "total_steps": total, "seed": t.seed,
             "world_size": world, "per_device_train_batch_size": t.per_device_train_batch_size, "rows": len(data)}
    if latest:
        optimizer.load_state_dict(torch.load(latest / "optimizer.pt", map_location="cpu", weights_only=True))
        scheduler.load_state_dict(torch.load(latest / "scheduler.pt", map_location="cpu", weights_only=True))
        saved = json.loads((latest / STATE_FILE).read_text())
        state.update({k: saved[k] for k in ("step", "epoch", "samples_in_epoch", "losses")})
        # The saved LR followed the old run's schedule (a cosine ending at its max_steps is 0 there);
        # a resumed run with more steps must continue on its own schedule from the same step.
        for group in optimizer.param_groups:
            group["lr"] = t.learning_rate * lr_factor(t.lr_scheduler_type, state["step"], warmup, total)
        scheduler.base_lrs = [t.learning_rate] * len(optimizer.param_groups)
    return model, optimizer, scheduler, state


def total_steps(t: TrainingConfig, n_rows: int, world: int) -> int:
    """Optimizer steps to run: max_steps, else epochs x micro-batches per epoch / accumulation."""
    if t.max_steps:
        return t.max_steps
    per_rank = math.ceil(n_rows / world)  # DistributedSampler pads ranks to equal length
    micro_per_epoch = math.ceil(per_rank / t.per_device_train_batch_size)
    return max(1, math.ceil(t.num_train_epochs * micro_per_epoch / t.gradient_accumulation_steps))


def lr_factor(kind: str, step: int, warmup: int, total: int) -> float:
    """LR multiplier at `step`: linear warmup from 0, then cosine/linear decay to 0, or constant."""
    if step < warmup:
        return step / max(1, warmup)
    if kind == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if kind == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def response_loss(model, batch: dict):
    """Mean next-token cross-entropy over the response tokens of one micro-batch."""
    import torch.nn.functional as F

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    # Position i predicts token i+1; prompt and padding labels are -100 and drop out of both sums.
    targets = batch["labels"][:, 1:]
    loss_sum = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(), reduction="sum")
    return loss_sum / (targets != -100).sum().clamp(min=1)


def train_steps(model, optimizer, scheduler, data: SFTDataset, state: dict, t: TrainingConfig, rank: int, world: int,
                ckpt_root: Path) -> None:
    """The loop: accumulate micro-batches, clip, step; log and checkpoint; stop at total_steps.

    Micro-batches form one stream across epochs (an optimizer step may span an epoch boundary), so
    every step has exactly gradient_accumulation_steps micro-batches and checkpoints always fall on
    a step boundary.
    """
    import ray.train.torch

    device = ray.train.torch.get_device()
    accum, total = t.gradient_accumulation_steps, state["total_steps"]
    model.train()
    micro, window_loss = 0, 0.0
    reports = {"time": 0.0, "step": state["step"]}  # when and at which step we last reported
    while state["step"] < total:
        batches = epoch_batches(data, state["epoch"], state["samples_in_epoch"], t.per_device_train_batch_size,
                                t.seed, rank, world)
        for batch in batches:
            micro += 1
            closes_step = micro % accum == 0
            # DDP all-reduces gradients on every backward; only the step's last micro-batch needs it.
            sync = nullcontext() if closes_step or not hasattr(model, "no_sync") else model.no_sync()
            with sync:
                loss = response_loss(model, {k: v.to(device) for k, v in batch.items()}) / accum
                loss.backward()
            window_loss += loss.item()
            state["samples_in_epoch"] += t.per_device_train_batch_size * world
            if not closes_step:
                continue
            _optimizer_step(model, optimizer, scheduler, t)
            state["step"] += 1
            wants_report = rank == 0 and _report_due(state["step"], total, t.logging_steps, reports["time"])
            step_loss, report = _sync_step(window_loss, wants_report, world, device)
            state["losses"].append(step_loss)
            window_loss = 0.0
            if report:
                _report(state, scheduler, reports)
            if rank == 0 and state["step"] % t.save_steps == 0 and state["step"] < total:
                save_checkpoint(ckpt_root, model, optimizer, scheduler, state, data.tokenizer)  # final: after loop
            if state["step"] >= total:
                break
        else:  # the epoch ran out before total_steps
            state["epoch"] += 1
            state["samples_in_epoch"] = 0


def _optimizer_step(model, optimizer, scheduler, t: TrainingConfig) -> None:
    import torch

    torch.nn.utils.clip_grad_norm_(model.parameters(), t.max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def _report_due(step: int, total: int, logging_steps: int, last_report: float) -> bool:
    """Rank 0's call: a logging step, unless the last report is under one controller poll old.

    Train V2's controller takes one report per worker per poll (RAY_TRAIN_HEALTH_CHECK_INTERVAL_S,
    2 s) and a worker's report blocks while the previous one waits, so reporting every fast step
    stalls training (measured: 0.5 vs 3.6 steps/s on the tiny model). Skipped steps are folded
    into the next report's `loss_mean`, and every step's loss stays in the checkpointed state.
    """
    if step == total:
        return True
    min_gap = float(os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "2"))
    return step % logging_steps == 0 and time.time() - last_report >= min_gap


def _sync_step(window_loss: float, wants_report: bool, world: int, device) -> tuple[float, bool]:
    """One all-reduce per step: the loss averaged over workers, and rank 0's report decision.

    Every rank must call ray.train.report the same number of times (it is a barrier), so the
    time-based decision rank 0 makes travels with the loss instead of costing a second collective.
    """
    import torch
    import torch.distributed as dist

    if world == 1 or not dist.is_initialized():
        return window_loss, wants_report
    tensor = torch.tensor([window_loss, float(wants_report)], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)  # NCCL reduces GPU tensors only, hence the device
    return tensor[0].item() / world, tensor[1].item() > 0


def _report(state: dict, scheduler, reports: dict) -> None:
    import ray.train

    since = state["losses"][reports["step"]:] or state["losses"][-1:]
    ray.train.report({"step": state["step"], "loss": state["losses"][-1], "loss_mean": sum(since) / len(since),
                      "lr": scheduler.get_last_lr()[0], "epoch": state["epoch"]})
    reports.update(time=time.time(), step=state["step"])


# ----------------------------------------------------------------------------- checkpoints


def latest_checkpoint(root: Path) -> Path | None:
    """The complete `step_N` folder with the highest N (incomplete ones are still temp-named)."""
    if not root.is_dir():
        return None
    done = [p for p in root.glob("step_*") if p.name[5:].isdigit() and (p / STATE_FILE).is_file()]
    return max(done, key=latest_step, default=None)


def latest_step(path: Path | None) -> int | None:
    return int(path.name[5:]) if path is not None else None


def _clear_partial_checkpoints(root: Path) -> None:
    """Remove temp folders a killed run left mid-write (rank 0 is the only writer)."""
    for p in root.glob(".tmp-step_*") if root.is_dir() else []:
        shutil.rmtree(p, ignore_errors=True)


def _unwrap(model):
    from torch.nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model


def save_checkpoint(root: Path, model, optimizer, scheduler, state: dict, tokenizer) -> Path:
    """Rank 0: weights (HF format), optimizer, scheduler and loop state to `root/step_N`, atomically."""
    import torch

    final = root / f"step_{state['step']}"
    if final.is_dir():  # resumed from it with nothing left to do
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-step_{state['step']}-", dir=root))
    tmp.chmod(0o755)  # mkdtemp makes it owner-only; servers running as other users must read it
    _unwrap(model).save_pretrained(tmp / "model")
    tokenizer.save_pretrained(tmp / "model")  # so every checkpoint is a servable HF folder
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    (tmp / STATE_FILE).write_text(json.dumps(state))
    os.rename(tmp, final)  # atomic on one filesystem: a kill leaves a .tmp folder, never a half step_N
    return final


def save_final_model(dest: Path, model, tokenizer) -> None:
    """Rank 0: the trained student as an HF folder (safetensors + tokenizer), replacing any older one."""
    tmp = Path(tempfile.mkdtemp(prefix=".model-", dir=dest.parent))
    tmp.chmod(0o755)
    _unwrap(model).save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    old = None
    if dest.exists():
        old = dest.with_name(f".model-old-{os.getpid()}")
        dest.rename(old)
    tmp.rename(dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
