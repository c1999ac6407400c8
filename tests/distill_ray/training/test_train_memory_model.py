"""distill_ray.training.memory: per-GPU model-state bytes against the ZeRO paper's accounting, worked by hand.

Mixed-precision Adam: 2 bytes of bf16 weights, 2 of bf16 gradients, K = 12 of fp32 master + two moments, per
trained parameter. The expected values below are written from that definition, not from the module's constants."""

from __future__ import annotations

import pytest

from distill_ray.training.memory import lora_parameters, per_gpu_bytes, student_table

SEVEN_B, ONE_FIVE_B, GPUS = 7.6e9, 1.54e9, 8


def test_ddp_holds_sixteen_bytes_a_parameter_on_every_gpu():
    b = per_gpu_bytes(SEVEN_B, GPUS, "ddp")
    assert (b.weights, b.gradients, b.optimizer) == (2 * SEVEN_B, 2 * SEVEN_B, 12 * SEVEN_B)
    assert b.total == pytest.approx(16 * SEVEN_B)
    assert b.total / 1e9 == pytest.approx(121.6)
    assert per_gpu_bytes(SEVEN_B, 1, "ddp") == b  # replicated: the GPU count does not matter


def test_zero2_partitions_gradients_and_optimizer_state():
    b = per_gpu_bytes(SEVEN_B, GPUS, "zero2")
    assert b.weights == pytest.approx(2 * SEVEN_B)
    assert b.gradients == pytest.approx(2 * SEVEN_B / 8)
    assert b.optimizer == pytest.approx(12 * SEVEN_B / 8)
    assert b.total == pytest.approx((2 + 14 / 8) * SEVEN_B)  # 3.75 bytes a parameter on 8 GPUs


def test_zero3_partitions_everything():
    b = per_gpu_bytes(SEVEN_B, GPUS, "zero3")
    assert b.total == pytest.approx(16 / 8 * SEVEN_B)  # 2 bytes a parameter
    assert b.weights == pytest.approx(2 * SEVEN_B / 8)
    assert per_gpu_bytes(ONE_FIVE_B, 64, "zero3").total == pytest.approx(16 / 64 * ONE_FIVE_B)
    # on one GPU no stage saves anything
    assert per_gpu_bytes(ONE_FIVE_B, 1, "zero3").total == pytest.approx(per_gpu_bytes(ONE_FIVE_B, 1, "ddp").total)


def test_lora_trains_only_the_adapters():
    f = 0.01
    b = per_gpu_bytes(ONE_FIVE_B, GPUS, "lora", trainable_fraction=f)
    adapters = f * ONE_FIVE_B
    assert b.weights == pytest.approx(2 * (ONE_FIVE_B + adapters))  # frozen base + adapters, bf16
    assert b.gradients == pytest.approx(2 * adapters)
    assert b.optimizer == pytest.approx(12 * adapters)
    z = per_gpu_bytes(ONE_FIVE_B, GPUS, "zero2_lora", trainable_fraction=f)
    assert z.weights == pytest.approx(b.weights)
    assert z.optimizer == pytest.approx(12 * adapters / 8)


def test_lora_parameter_count_of_one_square_layer_shape():
    # hidden 4, intermediate 8, kv 2, one layer, r 1: q,o 4+4; k,v 4+2; gate,up 4+8; down 8+4
    assert lora_parameters(4, 8, 2, 1, 1) == 8 + 8 + 6 + 6 + 12 + 12 + 12
    assert lora_parameters(4, 8, 2, 3, 16) == 3 * 16 * 64


def test_lora_count_matches_peft_on_smollm2_135m():
    # builtin:smollm2-135m-instruct (hidden 576, intermediate 1536, 3 KV heads x 64, 30 layers) with
    # training.lora r=16 all-linear: peft's trainable count in benchmarks/train_memory.py's run was 4,884,480
    assert lora_parameters(576, 1536, 192, 30, 16) == 4_884_480


def test_qwen_7b_lora_r16_fraction_is_about_half_a_percent():
    # Qwen2.5-7B: hidden 3584, intermediate 18944, 4 KV heads x 128, 28 layers
    count = lora_parameters(3584, 18944, 512, 28, 16)
    assert count == 28 * 16 * (2 * 7168 + 2 * 4096 + 3 * (3584 + 18944))
    assert count / SEVEN_B == pytest.approx(0.0053, abs=2e-4)


def test_table_orders_strategies_as_expected_for_both_students():
    rows = {(r["student"].split()[0], r["strategy"]): r["total_gb"] for r in student_table(GPUS)}
    for s in ("1.5B", "7B"):
        assert rows[(s, "ddp")] > rows[(s, "zero2")] > rows[(s, "zero3")]
        assert rows[(s, "lora")] > rows[(s, "zero2_lora")]
    assert rows[("7B", "zero3")] == pytest.approx(2 * 7.6)


BAD = [{"strategy": "fsdp"}, {"strategy": "lora"}, {"strategy": "ddp", "trainable_fraction": 0.1},
       {"strategy": "lora", "trainable_fraction": 0.0}]  # fmt: skip


@pytest.mark.parametrize("kwargs", BAD)
def test_bad_arguments_are_refused(kwargs):
    with pytest.raises(ValueError):
        per_gpu_bytes(1e9, 8, **kwargs)
