"""training.strategy: deepspeed against DDP: the same SFT steps under ZeRO-2 and ZeRO-3 as under DDP, the same
DPO steps under ZeRO-3 (the frozen reference partitioned too) as under DDP, and a ZeRO-3 run resumed from a
sharded checkpoint ending where the uninterrupted run ends.

The trainer's own code runs in every worker: `jobs.train.loop.TrainRun` (rows from Parquet, seeded shards, the
step's unit all-reduce, the loss normalisation) with `SFTObjective`, on 2 local processes in one gloo group on
loopback (torch.multiprocessing) rather than Ray Train workers, as in test_opd_workers.py: Ray's part in a worker
is `prepare_model` (DDP over the process group; the stand-in below) and `ray.train.report` (a recorder). Under
`deepspeed` the loop does not call `prepare_model`: DeepSpeed joins the same gloo group.

Tolerances: DDP and ZeRO do the same arithmetic in fp32 but reduce in different orders and chunks (ZeRO
reduce-scatters flat buckets, then runs AdamW on flat partitions), so per-step losses agree to 1e-5 relative and
the trained weights to 1e-3 of their largest change after 4 steps at lr 1e-3 (measured: 4.2e-7 against a change
of 4.0e-3 under ZeRO-3, about 1e-4; AdamW's m / sqrt(v) turns rounding in near-zero gradient entries into
updates of up to lr, so weights agree less tightly than losses).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

pytest.importorskip("deepspeed")
# Spawned workers import torch, Ray Train and DeepSpeed; the first DeepSpeed start on a machine builds its CPU
# communication op (about a minute, cached in TORCH_EXTENSIONS_DIR).
pytestmark = pytest.mark.timeout(900)

STEPS, SAVE_EVERY = 4, 2
CASES = {"ddp": None, "zero2": 2, "zero3": 3}
DPO_CASES = {"dpo_ddp": None, "dpo_zero3": 3}  # DPO's frozen reference is partitioned too under stage 3


def _stand_in_prepare_model(model):
    return torch.nn.parallel.DistributedDataParallel(model)


def _training(stage: int | None):
    from distill_ray.config import TrainingConfig

    strategy = {"strategy": "deepspeed", "zero_stage": stage} if stage else {}
    return TrainingConfig(max_steps=STEPS, learning_rate=1e-3, lr_scheduler_type="constant", num_workers=2,
                          per_device_train_batch_size=2, gradient_accumulation_steps=2, max_length=160,
                          logging_steps=1, save_steps=SAVE_EVERY, **strategy)  # fmt: skip


def _run(rank: int, root: str, student: str, name: str, stage: int | None) -> list[float]:
    from distill_ray.training.schedule import Phase
    from jobs.train.dpo import DPOObjective
    from jobs.train.loop import TrainRun
    from jobs.train.sft import SFTObjective

    t = _training(stage)
    out = f"{root}/{name}"
    kind, objective = ("dpo", DPOObjective) if name.startswith("dpo") else ("sft", SFTObjective)
    config = {"objective": objective(student, None, "{problem}", t),
              "phases": [asdict(Phase(kind, f"{root}/{kind}.parquet", 16, STEPS))], "output_dir": out, "training": t,
              "fit_started": 0.0, "run_dir": out, "stage": kind, "student": student}  # fmt: skip
    run = TrainRun(config, rank, 2, torch.device("cpu"))
    run.train()
    run.save_final()
    return run.state["losses"]


def _worker(rank: int, root: str, student: str) -> None:
    """Rank `rank` of the group: every case, then the ZeRO-3 run again from its step-2 checkpoint (the step-4
    checkpoint and the model removed, as a run killed between the two would leave them). Rank 0 saves each
    case's per-step losses to root/<case>.pt."""
    import ray.train
    import ray.train.torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"  # loopback only
    os.environ["LOCAL_RANK"] = str(rank)  # as Ray Train's worker sets it (jobs/train/loop.py)
    dist.init_process_group("gloo", init_method=f"file://{root}/rendezvous", rank=rank, world_size=2)
    ray.train.report = lambda metrics, **_: None
    ray.train.torch.prepare_model = _stand_in_prepare_model
    try:
        for name, stage in {**CASES, **DPO_CASES}.items():
            losses = _run(rank, root, student, name, stage)
            if rank == 0:
                torch.save(losses, f"{root}/{name}.pt")
        dist.barrier()
        resumed = Path(root, "zero3_resumed")
        if rank == 0:
            shutil.copytree(Path(root, "zero3"), resumed)
            shutil.rmtree(resumed / "checkpoints" / f"step_{STEPS}")
            shutil.rmtree(resumed / "model")
        dist.barrier()
        losses = _run(rank, root, student, "zero3_resumed", 3)
        if rank == 0:
            torch.save(losses, f"{root}/zero3_resumed.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir):
    """{case: (per-step losses, final model state dict)}."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch.multiprocessing as mp

    from distill_ray.models.loading import load_causal_lm

    root = tmp_path_factory.mktemp("zero")
    rows = [{"problem": f"What is {a} + {a + 3}?", "response": f"{a} + {a + 3} = {2 * a + 3}. The answer is "
             f"\\boxed{{{2 * a + 3}}}."} for a in range(16)]  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows), root / "sft.parquet")
    pairs = [{"problem": r["problem"], "chosen": r["response"], "rejected": f"It is {i}.", "beta": None}
             for i, r in enumerate(rows)]  # fmt: skip
    pq.write_table(pa.Table.from_pylist(pairs, schema=pa.schema(
        [("problem", pa.string()), ("chosen", pa.string()), ("rejected", pa.string()), ("beta", pa.float64())])),
        root / "dpo.parquet")  # fmt: skip
    mp.spawn(_worker, args=(str(root), str(tiny_model_dir)), nprocs=2, join=True)
    out = {}
    for name in [*CASES, *DPO_CASES, "zero3_resumed"]:
        model = load_causal_lm(root / name / "model")
        out[name] = (torch.load(root / f"{name}.pt"), {k: v.float() for k, v in model.state_dict().items()})
    out["start"] = (None, load_causal_lm(tiny_model_dir).state_dict())
    out["root"] = root
    return out


def _max_weight_gap(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.mark.parametrize("case", ["zero2", "zero3"])
def test_zero_steps_match_ddp(runs, case):
    ddp_losses, ddp_weights = runs["ddp"]
    losses, weights = runs[case]
    assert len(losses) == STEPS
    assert losses == pytest.approx(ddp_losses, rel=1e-5)
    moved = _max_weight_gap(ddp_weights, runs["start"][1])
    assert moved > 1e-3  # the weights really trained, so agreeing is not trivial
    gap = _max_weight_gap(weights, ddp_weights)
    assert gap <= 1e-3 * moved, f"{case}: max weight gap {gap:.3g} vs largest change {moved:.3g}"


def test_zero3_checkpoint_is_sharded_per_rank(runs):
    shards = sorted(p.name for p in (runs["root"] / "zero3" / "checkpoints" / f"step_{SAVE_EVERY}"
                                     / "deepspeed" / "state").iterdir())  # fmt: skip
    assert [s for s in shards if "optim_states" in s] == [
        "zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"]  # fmt: skip
    assert (runs["root"] / "zero3" / "checkpoints" / f"step_{SAVE_EVERY}" / "tokenizer").is_dir()


def test_zero3_resumed_run_ends_where_the_uninterrupted_one_ends(runs):
    full_losses, full_weights = runs["zero3"]
    losses, weights = runs["zero3_resumed"]
    assert losses[:SAVE_EVERY] == full_losses[:SAVE_EVERY]  # the history came back from the checkpoint
    assert losses[SAVE_EVERY:] == pytest.approx(full_losses[SAVE_EVERY:], rel=1e-6)
    moved = _max_weight_gap(full_weights, runs["start"][1])
    assert _max_weight_gap(weights, full_weights) <= 1e-6 * moved


def test_dpo_under_zero3_matches_ddp_with_its_reference_partitioned(runs):
    ddp_losses, ddp_weights = runs["dpo_ddp"]
    losses, weights = runs["dpo_zero3"]
    assert ddp_losses[0] == pytest.approx(0.6931, abs=1e-3)  # policy = reference at step 1: -log sigmoid(0)
    assert losses == pytest.approx(ddp_losses, rel=1e-5)
    moved = _max_weight_gap(ddp_weights, runs["start"][1])
    assert _max_weight_gap(weights, ddp_weights) <= 1e-3 * moved
