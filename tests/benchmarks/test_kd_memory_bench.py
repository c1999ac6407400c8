"""Smoke test: `benchmarks/kd_memory.py --quick` runs and ends with its JSON summary line."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO  # noqa: E402

BENCH = REPO / "benchmarks" / "kd_memory.py"


def test_quick_benchmark_prints_json_summary_last():
    proc = subprocess.run([sys.executable, str(BENCH), "--quick", "--threads", "1"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("storage_ratio_k20_v151936", "peak_memory_ratio_v151936", "dense_measured_tokens",
                "dense_extrapolated", "targets", "targets_met", "peak_memory_measure"):
        assert key in summary, key
    assert summary["quick"] is True
    # Storage figures are arithmetic on the format, not timings: 2V bytes over 6k bytes.
    assert summary["storage_ratio_k20_v151936"] == round(2 * 151936 / (6 * 20), 1)
    assert summary["peak_memory_ratio_v151936"] > 0
