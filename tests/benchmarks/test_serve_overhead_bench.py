"""benchmarks/serve_overhead.py --quick runs end to end and ends with its JSON summary line.

No timing thresholds: the shared 2-core box is too noisy for them; this only keeps the script alive
and its figures consistent with each other.
"""

import json
import subprocess
import sys

import pytest
from conftest import REPO  # noqa: E402 - the repository root, wherever this file sits

pytestmark = pytest.mark.ray  # starts (and stops) its own embedded Ray in the subprocess

WAYS = ("direct", "handle", "http")
SUFFIXES = ("", "_c8")


def test_quick_benchmark_prints_latencies_per_way_and_their_ratios_as_json():
    proc = subprocess.run(
        [sys.executable, "benchmarks/serve_overhead.py", "--quick"],
        cwd=REPO, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    latency_keys = [f"{way}_{p}_ms{s}" for s in SUFFIXES for way in WAYS for p in ("p50", "p95")]
    ratio_keys = [f"{way}_over_direct{s}" for s in SUFFIXES for way in ("handle", "http")]
    for key in [*latency_keys, *ratio_keys, "requests", "max_tokens", "torch_threads"]:
        assert result[key] > 0, key
    assert result["failed_requests"] == 0
    assert result["model"] == "tiny:smollm2" and "settings" in result
    for suffix in SUFFIXES:
        for way in WAYS:
            assert result[f"{way}_p95_ms{suffix}"] >= result[f"{way}_p50_ms{suffix}"], way + suffix
        direct = result[f"direct_p50_ms{suffix}"]
        for way in ("handle", "http"):
            expected = result[f"{way}_p50_ms{suffix}"] / direct
            assert result[f"{way}_over_direct{suffix}"] == pytest.approx(expected, rel=0.02), way + suffix
    # Greedy decoding of one prompt: every way's engine produces the same answer length.
    assert len(set(result["completion_tokens"].values())) == 1
