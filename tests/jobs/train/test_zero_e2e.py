"""training.strategy: deepspeed on the embedded cluster, through the real sft job and Ray Train workers.

- Issue 19's done-when: a tiny SFT with `strategy: deepspeed` (ZeRO-2), `lora` and `report_to: [tensorboard]`
  runs end to end on 2 workers: sharded checkpoints, the adapter and a merged HF model the serving code loads,
  TensorBoard event files with the shared metric names.
- ZeRO-3 under a fault: a Ray Train worker killed (SIGKILL) after the first sharded checkpoint; Ray Train
  restarts the group (`training.max_failures`) and every rank loads its shard back, so the run ends at its last
  step. (That a resumed ZeRO-3 run ends where an uninterrupted one ends, weight for weight, is
  test_zero_strategy.py's.)

Loopback only, bounded: tiny student, a few steps, one kill.
"""

from __future__ import annotations

import json

import pytest
from conftest import Background, sigkill_ray_worker
from trainer_fixtures import arithmetic, job, stage, write_parquet

pytest.importorskip("deepspeed")
pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]


@pytest.mark.parametrize("zero_stage", [2])
def test_deepspeed_lora_tensorboard_sft_runs_end_to_end(tmp_path, ray_cluster, zero_stage):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from distill_ray.models.loading import load_causal_lm, load_tokenizer
    from jobs.train import sft

    rows = write_parquet(arithmetic(16), tmp_path / "rows.parquet")
    cfg = job("sft", rows, tmp_path, max_steps=4, save_steps=2, strategy="deepspeed", zero_stage=zero_stage,
              lora={"r": 8, "alpha": 16, "dropout": 0.0}, report_to=["tensorboard"], learning_rate=2e-2)  # fmt: skip
    result = sft.run(cfg, stage("sft", tmp_path, ray_cluster))

    m, out = result.metrics, tmp_path / "sft"
    assert m["steps"] == 4 and m["steps_run"] == 4, m
    assert 0 < m["trainable_params"] < 0.1 * m["total_params"], m
    for step in ("step_2", "step_4"):
        ckpt = out / "checkpoints" / step
        state = json.loads((ckpt / "trainer_state.json").read_text())
        assert state["strategy"] == "deepspeed" and state["world_size"] == 2
        assert sorted(p.name for p in (ckpt / "deepspeed" / "state").glob("*optim_states.pt")) == [
            "zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"]  # fmt: skip
    from safetensors.torch import load_file

    adapter = load_file(out / "adapter" / "adapter_model.safetensors")
    # peft starts every lora_B at zero: non-zero ones mean DeepSpeed's steps reached the adapters.
    assert max(float(v.abs().max()) for k, v in adapter.items() if "lora_B" in k) > 1e-4
    merged = load_causal_lm(out / "model")  # a plain HF folder, as the teacher service loads it
    assert not any("lora" in name for name in merged.state_dict())
    assert load_tokenizer(out / "model").pad_token_id is not None

    events = EventAccumulator(str(tmp_path / "tensorboard" / "sft")).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/grad_norm", "train/tokens_per_s"} <= tags, tags
    assert sorted({e.step for e in events.Scalars("train/loss")}) == [1, 2, 3, 4]
    assert all(e.value > 0 for e in events.Scalars("train/grad_norm"))  # DeepSpeed's norm reached the tracker


def test_zero3_worker_killed_mid_run_resumes_from_its_shards(tmp_path, ray_cluster):
    from distill_ray.models.loading import load_causal_lm
    from distill_ray.training.checkpoints import latest_checkpoint, latest_step
    from jobs.train import sft

    steps, save = 12, 3
    rows = write_parquet(arithmetic(32), tmp_path / "rows.parquet")
    env = stage("sft", tmp_path, ray_cluster)
    cfg = job("sft", rows, tmp_path, max_steps=steps, save_steps=save, strategy="deepspeed", zero_stage=3,
              per_device_train_batch_size=2)  # fmt: skip
    run = Background(lambda: sft.run(cfg, env), timeout_s=600)
    run.wait_until(lambda: (latest_step(latest_checkpoint(env.output_dir / "checkpoints")) or 0) >= save,
                   "a checkpoint")  # fmt: skip
    sigkill_ray_worker("RayTrainWorker", several=True)  # one rank of two
    run.join()
    outcome = run.outcome

    assert not run.thread.is_alive(), "the run did not finish after the kill"
    assert "error" not in outcome, f"the run failed after the kill: {outcome.get('error')!r}"
    metrics = outcome["result"].metrics
    assert metrics["steps"] == steps
    assert save <= metrics["resumed_from_step"] < steps, metrics["resumed_from_step"]
    losses = json.loads((env.output_dir / "checkpoints" / f"step_{steps}" / "trainer_state.json").read_text())["losses"]
    assert len(losses) == steps  # one history across the restart
    model = load_causal_lm(env.output_dir / "model")  # the shards gathered into one HF folder
    assert sum(p.numel() for p in model.parameters()) > 0
