"""Checkpoints of the Ray Train jobs: atomic `step_N` folders and the final HF model folder.

Where it sits: `jobs/train/loop.py` calls these on rank 0 (the only writer). A checkpoint folder is
written under a temp name and renamed, so `step_N/` exists only when complete; a killed run leaves
at most a `.tmp-step_*` folder, which the next run removes before looking for the newest step.
Every checkpoint's `model/` is a servable HF folder (safetensors + tokenizer). A LoRA run's checkpoints hold
`adapter/` instead (peft's adapter files + tokenizer: the base weights never change), and its final export is
the adapter in `<stage>/adapter/` plus the merged model in `<stage>/model/` (`distill_ray/training/lora.py`).
Under `training.strategy: deepspeed` a checkpoint holds every rank's ZeRO shards in `deepspeed/` (written by all
ranks, `save_sharded_checkpoint`), the tokenizer in `tokenizer/` and the loop state; only the final model is
gathered into an HF folder.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

STATE_FILE = "trainer_state.json"  # written last inside a checkpoint; its presence marks it complete


def complete_checkpoints(root: Path) -> list[Path]:
    """The complete `step_N` folders in `root` (their state file written), oldest (lowest N) first; none when `root`
    does not exist. Incomplete ones are still temp-named, or lack the state file."""
    if not root.is_dir():
        return []
    return sorted((p for p in root.glob("step_*") if p.name[5:].isdigit() and (p / STATE_FILE).is_file()),
                  key=latest_step)  # fmt: skip


def latest_checkpoint(root: Path) -> Path | None:
    """The complete `step_N` folder with the highest N."""
    done = complete_checkpoints(root)
    return done[-1] if done else None


def latest_step(path: Path | None) -> int | None:
    return int(path.name[5:]) if path is not None else None


def clear_partial_checkpoints(root: Path) -> None:
    """Remove temp folders a killed run left mid-write."""
    for p in root.glob(".tmp-step_*") if root.is_dir() else []:
        shutil.rmtree(p, ignore_errors=True)


def prune_checkpoints(root: Path, keep: int) -> list[Path]:
    """Delete the complete `step_N` folders in `root` older than its newest `keep` (`training.save_total_limit`);
    returns the deleted ones, oldest first. Temp folders of a save in progress are not counted or touched.

    Raises ValueError when `keep` < 1: the newest checkpoint is what a resume starts from. Written here rather than
    left to a library because the folders are this module's own (transformers' Trainer prunes only its own
    `checkpoint-N` folders, and Ray Train's `CheckpointConfig.num_to_keep` only the checkpoints reported to it)."""
    if keep < 1:
        raise ValueError(f"save_total_limit must be at least 1, got {keep}")
    stale = complete_checkpoints(root)[:-keep]
    for path in stale:  # renamed first (atomic): a half-deleted folder must never pass for a complete checkpoint
        doomed = root / f".tmp-{path.name}-pruned"  # a leftover is removed by clear_partial_checkpoints
        os.rename(path, doomed)
        shutil.rmtree(doomed, ignore_errors=True)  # a file still open on NFS may stay; it does not stop training
    return stale


def unwrap(model):
    """The trained module inside a DDP wrapper or a DeepSpeed engine (else `model` itself)."""
    from torch.nn.parallel import DistributedDataParallel

    wrapped = isinstance(model, DistributedDataParallel) or type(model).__module__.startswith("deepspeed.")
    return model.module if wrapped else model


def save_checkpoint(root: Path, model, optimizer, scheduler, state: dict, tokenizer, annotate=None) -> Path:
    """Weights (HF format), optimizer, scheduler and loop state to `root/step_N`, atomically.

    `annotate(folder)` adds a job's own files to the model folder (e.g. the reward model's output
    description), so a checkpoint is as usable as the final model.
    """
    import torch

    final = root / f"step_{state['step']}"
    if final.is_dir():  # resumed from it with nothing left to do
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-step_{state['step']}-", dir=root))
    tmp.chmod(0o755)  # mkdtemp makes it owner-only; servers running as other users must read it
    _save_model(tmp / model_folder(model), model, tokenizer, annotate)
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    (tmp / STATE_FILE).write_text(json.dumps(state))
    os.rename(tmp, final)  # atomic on one filesystem: a kill leaves a .tmp folder, never a half step_N
    return final


def save_sharded_checkpoint(root: Path, state: dict, tokenizer, rank: int, write_shards) -> Path:
    """A checkpoint every rank writes a part of (DeepSpeed ZeRO): `write_shards(folder)` on every rank, then rank 0
    adds the tokenizer and the loop state and renames the folder to `root/step_N`, atomically as above.

    Collective: every rank must call it at the same step (barriers around the writes). The temp folder's name is
    fixed (`.tmp-step_N-sharded`), since every rank must find it; a killed run's is removed by
    `clear_partial_checkpoints` like any other."""
    import torch.distributed as dist

    final = root / f"step_{state['step']}"
    if final.is_dir():  # resumed from it with nothing left to do (every rank sees the same folder)
        return final
    tmp = root / f".tmp-step_{state['step']}-sharded"
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True, mode=0o755)
    _barrier(dist)
    write_shards(tmp)
    _barrier(dist)
    if rank == 0:
        tokenizer.save_pretrained(tmp / "tokenizer")
        (tmp / STATE_FILE).write_text(json.dumps(state))
        os.rename(tmp, final)
    _barrier(dist)  # no rank looks for step_N before it exists
    return final


def _barrier(dist) -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def model_folder(model) -> str:
    """What a checkpoint calls its weights: `adapter` for a LoRA (peft) model, else `model`."""
    from distill_ray.training.lora import ADAPTER, is_peft

    return ADAPTER if is_peft(unwrap(model)) else "model"


def save_final_model(dest: Path, model, tokenizer, annotate=None, state_dict: dict | None = None) -> None:
    """The trained model as an HF folder (safetensors + tokenizer), replacing any older one. `state_dict`: the
    weights to write instead of the module's own (ZeRO-3 gathers them; its module holds only this rank's part).

    A LoRA model also leaves its adapter in `dest`'s sibling `adapter/`, then is merged (in place: the last use of
    it) so `dest` is a plain HF folder like any other trainer's."""
    from distill_ray.training.lora import ADAPTER, is_peft, merge

    inner = unwrap(model)
    if is_peft(inner):
        _replace_folder(dest.with_name(ADAPTER), lambda tmp: _save_model(tmp, inner, tokenizer, annotate))
        inner = merge(inner)
    _replace_folder(dest, lambda tmp: _save_model(tmp, inner, tokenizer, annotate, state_dict))


def _replace_folder(dest: Path, write) -> None:
    """`write(folder)` into a temp folder beside `dest`, then swap it in for `dest`."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    tmp.chmod(0o755)
    write(tmp)
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}-old-{os.getpid()}")
        dest.rename(old)
    tmp.rename(dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _save_model(folder: Path, model, tokenizer, annotate, state_dict: dict | None = None) -> None:
    unwrap(model).save_pretrained(folder, **({"state_dict": state_dict} if state_dict is not None else {}))
    tokenizer.save_pretrained(folder)  # so every saved model is a servable HF folder
    if annotate is not None:
        annotate(folder)
