"""The teacher's transformers engine on a CUDA GPU (skipped without one; run on a GPU machine).

What the GPU lane checks: `device: auto` picks cuda and bfloat16; greedy decoding on cuda in float32 gives the
same tokens as on CPU; a mixed batch (greedy + seeded sampling, stop strings, log-probs) runs in bfloat16 and a
seed reproduces its tokens. `DISTILL_RAY_GPU_TEST_MODEL` may name a local model folder (a GPU box without the
packaged model); the default is the tiny test model.
"""

from __future__ import annotations

import os
import time

import pytest
import torch

from distill_ray.models.engine import GenerationEngine, GenRequest, pick_device
from distill_ray.models.loading import resolve_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def model_dir():
    return os.environ.get("DISTILL_RAY_GPU_TEST_MODEL") or str(resolve_model("tiny:smollm2"))


def _requests(engine: GenerationEngine, n: int, **kw) -> list[GenRequest]:
    prompts = [engine.text_prompt_ids(f"Question {i}: what is {i} + {i}?") for i in range(n)]
    return [GenRequest(prompt_ids=p, max_new_tokens=24, **kw) for p in prompts]


def test_auto_device_is_cuda_in_bfloat16():
    assert pick_device() == ("cuda", "bfloat16")
    assert pick_device("auto", "float32") == ("cuda", "float32")


def test_greedy_tokens_on_cuda_equal_cpu(model_dir):
    cpu = GenerationEngine(model_dir, device="cpu", dtype="float32")
    gpu = GenerationEngine(model_dir, device="cuda", dtype="float32")
    reqs = _requests(cpu, 4, temperature=0.0)
    assert next(gpu.model.parameters()).device.type == "cuda"
    assert [r.token_ids for r in gpu.generate(reqs)] == [r.token_ids for r in cpu.generate(reqs)]


def test_mixed_batch_in_bfloat16_and_seeds_reproduce(model_dir):
    engine = GenerationEngine(model_dir, *pick_device())
    assert next(engine.model.parameters()).dtype == torch.bfloat16
    reqs = _requests(engine, 8, temperature=0.8, top_p=0.9, seed=11, logprobs=True, top_logprobs=2)
    reqs[0].temperature, reqs[1].stop = 0.0, ["\n"]
    started = time.perf_counter()
    first = engine.generate(reqs)
    seconds = time.perf_counter() - started
    again = engine.generate(reqs)
    assert [r.token_ids for r in first] == [r.token_ids for r in again]
    for result in first:
        assert 1 <= result.completion_tokens <= 24 and len(result.logprobs) == result.completion_tokens
    tokens = sum(r.completion_tokens for r in first)
    print(f"cuda bfloat16: 8 sequences, {tokens} tokens in {seconds:.3f} s ({tokens / seconds:.0f} tokens/s)")
