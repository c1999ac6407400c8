#!/usr/bin/env bash
# Sets up .venv (scripts/setup.sh) and runs the whole test suite on an embedded Ray cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The offline teacher is converted from GGUF once; doing it here keeps test timings honest.
.venv/bin/distill-ray models prepare builtin:smollm2-135m-instruct "builtin:smollm2-135m-instruct?layers=28&keep_last=2" tiny:smollm2 >/dev/null
# The layer contract of docs/architecture.md (pyproject.toml [tool.importlinter]): arrows only point down.
.venv/bin/lint-imports
# DeepSpeed builds its CPU communication op on first use (about a minute); keep the build for later runs.
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$PWD/.cache/torch_extensions}"
# --durations: the slowest tests at the end of every run (the suite has a 30-minute goal; start there).
exec .venv/bin/python -m pytest -q -p no:cacheprovider --durations=25 "$@"
