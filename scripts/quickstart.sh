#!/usr/bin/env bash
# Sets up .venv (scripts/setup.sh) and runs recipes/quickstart.yaml on the embedded Ray cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/distill-ray run recipes/quickstart.yaml "$@"
