"""benchmarks/grader_throughput.py --quick runs and grades its corpus right: every kind of reply holds the
right answer except the truncated one, which has none. No timing thresholds (the box is too noisy)."""

import json
import subprocess
import sys

from conftest import REPO  # noqa: E402 - the repository root, wherever this file sits


def test_quick_benchmark_grades_every_kind_right_and_prints_json():
    proc = subprocess.run([sys.executable, "benchmarks/grader_throughput.py", "--quick"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["items"] == 200 and result["items_per_s"] > 0 and result["p99_ms"] >= result["p50_ms"] > 0
    shares = {kind: part["correct_share"] for kind, part in result["per_kind"].items()}
    assert shares.pop("truncated") == 0.0
    assert set(shares.values()) == {1.0}, shares
