"""benchmarks/generation_overhead.py --quick runs end to end and ends with its JSON summary line.

No timing thresholds: the shared 2-core box is too noisy for them; this only keeps the script alive.
"""

import json
import subprocess
import sys

import pytest
from conftest import REPO  # noqa: E402 - the repository root, wherever this file sits

pytestmark = pytest.mark.ray  # starts (and stops) its own embedded Ray in the subprocess


def test_quick_benchmark_prints_both_timings_and_their_ratio_as_json():
    proc = subprocess.run(
        [sys.executable, "benchmarks/generation_overhead.py", "--quick"],
        cwd=REPO, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    result = json.loads(last)
    for key in ("rows", "direct_seconds", "pipeline_seconds", "overhead_ratio", "direct_tokens", "pipeline_tokens"):
        assert result[key] > 0, key
    assert result["rows"] == 4
    # --quick is 4 problems x 2 samples; both sides sample every one of them.
    assert result["direct_samples"] == result["pipeline_samples"] == 8
    assert result["overhead_ratio"] == pytest.approx(result["pipeline_seconds"] / result["direct_seconds"], rel=0.02)
    assert "startup_seconds" in result and "settings" in result
