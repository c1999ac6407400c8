"""benchmarks/service_soak.py --quick runs end to end, sends every malformed kind to both services, and its
checks hold: every malformed request got a 4xx, none a 5xx, every valid one a 200, no replica restarted. No
timing thresholds (the box is too noisy for them)."""

import json
import subprocess
import sys

import pytest
from conftest import REPO  # noqa: E402 - the repository root, wherever this file sits

pytestmark = pytest.mark.ray  # starts (and stops) its own embedded Ray in the subprocess


def test_quick_soak_checks_hold_and_it_prints_json():
    proc = subprocess.run([sys.executable, "benchmarks/service_soak.py", "--quick", "--seconds", "4", "--clients", "4"],
                          cwd=REPO, capture_output=True, text=True, timeout=400)  # fmt: skip
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    failed = [name for name, passed in result["checks"].items() if not passed]
    assert proc.returncode == 0 and result["ok"], (failed, proc.stderr[-2000:])
    assert len(result["checks"]) == 10
    for name in ("teacher", "reward"):
        service = result[name]
        assert service["valid"]["requests"] > 0 and service["valid"]["p99_ms"] >= service["valid"]["p50_ms"] > 0
        assert service["malformed"]["wrong API key"] == {"401": sum(service["malformed"]["wrong API key"].values())}
