"""Tests for distill_ray.models.engine: the static-batch transformers generation engine (no Ray).

Most tests use the tiny random SmolLM2-tokenizer Llama (fast). Its tied embeddings make greedy
decoding repeat the last prompt token, so left-padding correctness is also checked through logprob
values (which depend on attention over the whole prompt) and once on the real 135M model.
"""

from __future__ import annotations

import math

import pytest
import torch

from distill_ray.models.engine import GenerationEngine, GenRequest
from distill_ray.models.loading import resolve_model

CHATS = [
    [{"role": "user", "content": "hi"}],
    [{"role": "user", "content": "Tell me a long story about a dragon and a knight, please."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}],
]


@pytest.fixture(scope="module")
def tiny():
    return GenerationEngine(resolve_model("tiny:smollm2"), torch_threads=2)


@pytest.fixture(scope="module")
def prompts(tiny):
    return [tiny.chat_prompt_ids(chat) for chat in CHATS]


def _hf_greedy(engine: GenerationEngine, prompt: list[int], max_new_tokens: int) -> list[int]:
    ids = torch.tensor([prompt])
    with torch.inference_mode():
        out = engine.model.generate(
            ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=max_new_tokens
        )
    return out[0, len(prompt) :].tolist()


def test_prompt_helpers(tiny):
    ids = tiny.chat_prompt_ids(CHATS[0])
    text = tiny.tokenizer.decode(ids)
    assert text.startswith("<|im_start|>") and text.endswith("<|im_start|>assistant\n")
    assert tiny.text_prompt_ids("hello world") == tiny.tokenizer("hello world")["input_ids"]
    assert tiny.model_name.startswith("tiny-smollm2")


def test_greedy_batch_matches_single_and_hf(tiny, prompts):
    reqs = [GenRequest(p, max_new_tokens=8, temperature=0, logprobs=True, top_logprobs=3) for p in prompts]
    batched = tiny.generate(reqs)
    for req, got in zip(reqs, batched):
        alone = tiny.generate([req])[0]
        assert got.token_ids == alone.token_ids == _hf_greedy(tiny, req.prompt_ids, 8)
        assert got.prompt_tokens == len(req.prompt_ids)
        # Logprob values depend on attending over the whole (padded) prompt.
        for a, b in zip(got.logprobs, alone.logprobs):
            assert a.logprob == pytest.approx(b.logprob, abs=1e-4)


def test_greedy_real_model_batch_matches_single_and_hf():
    engine = GenerationEngine(resolve_model("builtin:smollm2-135m-instruct"))
    prompts = [engine.chat_prompt_ids(chat) for chat in CHATS[1:]]
    reqs = [GenRequest(p, max_new_tokens=16, temperature=0) for p in prompts]
    batched = engine.generate(reqs)
    for req, got in zip(reqs, batched):
        assert got.token_ids == engine.generate([req])[0].token_ids == _hf_greedy(engine, req.prompt_ids, 16)
        assert got.text.strip()
    # The story runs to the limit while the short arithmetic answer ends on <|im_end|> early, so the
    # batch keeps decoding with one finished row; eos is kept in token_ids but not in text.
    story, answer = batched
    assert story.finish_reason == "length" and story.completion_tokens == 16
    assert answer.finish_reason == "stop" and "4" in answer.text
    assert answer.token_ids[-1] in engine.eos_token_ids and "<|im_end|>" not in answer.text
    assert answer.completion_tokens == len(answer.token_ids) < 16


def test_seed_reproducible_across_batches(tiny, prompts):
    target = GenRequest(prompts[0], max_new_tokens=12, temperature=1.0, top_p=0.9, seed=1234)
    alone = tiny.generate([target])[0]
    mates = [
        GenRequest(prompts[1], max_new_tokens=5, temperature=1.0, seed=7),
        GenRequest(prompts[2], max_new_tokens=20, temperature=0),
    ]
    batched = tiny.generate([mates[0], target, mates[1]])[1]
    assert batched.token_ids == alone.token_ids
    other = tiny.generate([GenRequest(prompts[0], max_new_tokens=12, temperature=1.0, seed=99)])[0]
    assert other.token_ids != alone.token_ids


def test_max_new_tokens_gives_length(tiny, prompts):
    res = tiny.generate([GenRequest(prompts[0], max_new_tokens=5, temperature=1.0, seed=0)])[0]
    assert res.finish_reason == "length"
    assert len(res.token_ids) == res.completion_tokens == 5
    assert res.logprobs is None


def test_stop_string_truncates(tiny, prompts):
    base = GenRequest(prompts[1], max_new_tokens=24, temperature=1.0, seed=5)
    full = tiny.generate([base])[0]
    stop = full.text[len(full.text) // 2 :][:3]
    assert stop.strip(), "sampled text should be non-blank in its middle"
    stopped = GenRequest(prompts[1], max_new_tokens=24, temperature=1.0, seed=5, stop=["@@never@@", stop])
    res = tiny.generate([stopped])[0]
    assert res.finish_reason == "stop"
    assert res.text == full.text[: full.text.index(stop)]
    assert res.token_ids == full.token_ids[: len(res.token_ids)] and len(res.token_ids) < len(full.token_ids)


def test_eos_finishes_row(tiny, prompts, monkeypatch):
    free = tiny.generate([GenRequest(prompts[0], max_new_tokens=6, temperature=1.0, seed=3)])[0]
    # Declare the third sampled token an eos token: the row must end right there.
    monkeypatch.setattr(tiny, "eos_token_ids", {free.token_ids[2]})
    res = tiny.generate([GenRequest(prompts[0], max_new_tokens=6, temperature=1.0, seed=3)])[0]
    assert res.finish_reason == "stop"
    assert res.token_ids == free.token_ids[:3] and res.completion_tokens == 3
    assert res.text == tiny.tokenizer.decode(free.token_ids[:2], skip_special_tokens=True)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_logprobs_shape_and_values(tiny, prompts, temperature):
    req = GenRequest(prompts[2], max_new_tokens=6, temperature=temperature, seed=11, logprobs=True, top_logprobs=5)
    res = tiny.generate([req])[0]
    assert len(res.logprobs) == res.completion_tokens == len(res.token_ids)
    for entry, token_id in zip(res.logprobs, res.token_ids):
        assert entry.token == tiny.token_bytes.name(token_id)
        assert len(entry.top) == 5
        values = [alt.logprob for alt in entry.top]
        assert values == sorted(values, reverse=True)
        assert all(math.exp(v) <= 1.0 for v in values + [entry.logprob])
        if temperature == 0:
            assert entry.logprob == pytest.approx(values[0], abs=1e-6) and entry.token == entry.top[0].token
    # The bytes rule itself is tested in test_logprob_bytes.py; here only that it holds on a free sample.
    assert b"".join(e.bytes for e in res.logprobs).decode("utf-8", "replace") == res.text
    no_top = tiny.generate([GenRequest(prompts[2], max_new_tokens=2, temperature=0, logprobs=True)])[0]
    assert [e.top for e in no_top.logprobs] == [[], []]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"prompt_ids": []}, "empty"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"top_logprobs": 21, "logprobs": True}, "top_logprobs"),
        ({"top_logprobs": 2}, "needs logprobs"),
        ({"prompt_ids": [42] * 2049}, "context"),
        ({"temperature": -0.5}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"prompt_ids": [10**6]}, "vocabulary"),
        ({"stop": [""]}, "stop"),
    ],
)
def test_rejects_bad_requests(tiny, kwargs, message):
    fields = {"prompt_ids": [1, 2, 3], **kwargs}
    with pytest.raises(ValueError, match=message):
        tiny.generate([GenRequest(prompt_ids=[5, 6]), GenRequest(**fields)])
