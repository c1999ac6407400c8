"""benchmarks/train_memory.py --quick runs every strategy (DDP, ZeRO-2, ZeRO-3, LoRA, ZeRO-2 + LoRA) in 2 gloo
workers and ends with its JSON line: every peak and step time measured and positive, every ratio present. No
thresholds on the ratios (the tiny model's optimizer state is too small next to DeepSpeed's own buffers, and the
shared box is noisy); the analytic figures are checked against the formula."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO  # the repository root

pytest.importorskip("deepspeed")
pytest.importorskip("peft")
pytestmark = pytest.mark.timeout(900)  # first DeepSpeed start on a machine builds its CPU comm op

STRATEGIES = ("ddp", "zero2", "zero3", "lora", "zero2_lora")


def test_quick_benchmark_measures_every_strategy_and_prints_json():
    proc = subprocess.run([sys.executable, "benchmarks/train_memory.py", "--quick"], cwd=REPO, capture_output=True,
                          text=True, timeout=840, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["quick"] is True and summary["model"] == "tiny:smollm2" and summary["workers"] == 2
    for name in STRATEGIES:
        assert summary[f"{name}_peak_mb"] > 0, name
        assert summary[f"{name}_step_s"] > 0, name
        if name != "ddp":
            assert summary[f"{name}_vs_ddp_memory"] > 0 and summary[f"{name}_vs_ddp_step_time"] > 0, name
    assert summary["params"] > 0 and all(summary[f"{n}_train_peak_mb"] > 0 for n in STRATEGIES)
    # 7B under ZeRO-3 on 8 GPUs: 16 bytes a parameter spread over 8
    assert summary["analytic"]["7B_zero3_gb"] == pytest.approx(16 * 7.6e9 / 8 / 1e9, abs=0.01)
    assert summary["analytic"]["7B_ddp_gb"] == pytest.approx(16 * 7.6e9 / 1e9, abs=0.01)
