"""benchmarks/engine_throughput.py --quick runs and prints its JSON line; the static and continuous engines decode
the same seeded sequences, so each cell's token counts must agree exactly. No timing thresholds (the shared box is
too noisy for them)."""

import json
import subprocess
import sys

from conftest import REPO  # noqa: E402 - the repository root, wherever this file sits


def test_quick_benchmark_both_engines_decode_the_same_tokens():
    command = [sys.executable, "benchmarks/engine_throughput.py", "--quick", "--skip-transformers-cb",
               "--concurrency", "2", "8", "--repeats", "1"]  # fmt: skip
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [(c["n"], c["concurrency"]) for c in result["cells"]] == [(1, 2), (1, 8), (8, 2), (8, 8)]
    for cell in result["cells"]:
        assert cell["static"]["tokens"] == cell["continuous"]["tokens"] > 0, cell
        assert cell["continuous"]["tokens_per_s"] > 0
    assert result["speedup_vs_static_8_n8"] > 0 and "transformers_cb" not in result["cells"][0]
