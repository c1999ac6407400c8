"""benchmarks/serve_load.py --quick scales the teacher 1 -> 2 -> 1 replicas under load and fails no request.

No timing thresholds: the shared 2-core box is too noisy for them; only that scaling happened both ways.
"""

import json
import subprocess
import sys

import pytest
from conftest import REPO  # noqa: E402 - the repository root, wherever this file sits

pytestmark = pytest.mark.ray  # starts (and stops) its own embedded Ray in the subprocess


def test_quick_load_scales_out_and_back_in_without_failed_requests():
    proc = subprocess.run(
        # phases no longer than the scaling needs: 1 -> 2 replicas, held 1 s, back to 1 after 3 s of low load
        [sys.executable, "benchmarks/serve_load.py", "--quick", "--baseline-seconds", "1", "--hold-seconds", "1",
         "--downscale-delay-s", "3"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["failed_requests"] == 0, result["first_errors"]
    assert result["requests"] > 0
    assert result["max_replicas_seen"] == 2, result["replica_timeline"]  # scaled out to --quick's max
    assert result["final_replicas"] == 1, result["replica_timeline"]  # and back in to min
    for key in ("scale_up_seconds", "scale_down_seconds"):
        assert isinstance(result[key], (int, float)) and result[key] > 0, (key, result[key])
    assert result["p95_ms"] >= result["p50_ms"] > 0
    assert set(result["phases"]) == {"low", "high", "down"}
