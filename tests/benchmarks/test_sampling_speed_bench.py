"""benchmarks/sampling_speed.py --quick runs and prints its JSON line with every draw timed and both engine runs
counted. No timing thresholds (the shared box is too noisy for them)."""

import json
import subprocess
import sys

from conftest import REPO  # noqa: E402 - the repository root, wherever this file sits


def test_quick_benchmark_times_both_draws():
    command = [sys.executable, "benchmarks/sampling_speed.py", "--quick", "--repeats", "2", "--slots", "4"]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in ("per_row_multinomial", "batched_race"):
        assert set(result["draw_ms"][name]) == {"8", "16", "32", "64"}
        assert all(ms > 0 for ms in result["draw_ms"][name].values())
        assert result["tokens"][name] > 0 and result["tokens_per_second"][name] > 0
    assert result["sequences"] == 8 and result["draw_speedup_16"] > 0 and result["engine_speedup"] > 0
