"""ContinuousBatcher (distill_ray/models/continuous.py) against the static engine it schedules: the same tokens,
text, finish reasons and logprobs on the same seeds; rows that join mid-run and leave at once; one prefill for the
n samples of a prompt; bad requests failing alone; calls run between steps."""

from __future__ import annotations

import time

import pytest

from distill_ray.models.continuous import ContinuousBatcher, supports
from distill_ray.models.engine import GenerationEngine, GenRequest
from distill_ray.models.loading import resolve_model

QUESTIONS = ["What is 2 + 3?", "Name a prime number above 40.", "Spell the word 'cat' backwards, please, slowly."]


@pytest.fixture(scope="module")
def engine():
    return GenerationEngine(resolve_model("tiny:smollm2"), torch_threads=2)


@pytest.fixture(scope="module")
def prompts(engine):
    return [engine.chat_prompt_ids([{"role": "user", "content": q}]) for q in QUESTIONS]


def _mixed(prompts) -> list[GenRequest]:
    """Greedy and seeded rows, several lengths, logprobs with alternatives, a stop string, shared prompts."""
    out = []
    for i, prompt in enumerate(prompts):
        for s in range(3):
            out.append(GenRequest(prompt_ids=prompt, max_new_tokens=3 + 6 * ((i + s) % 3), seed=10 * i + s,
                                  temperature=0.0 if s == 0 else 0.9, top_p=0.95 if s == 2 else 1.0,
                                  logprobs=True, top_logprobs=2, stop=["e"] if (i, s) == (1, 1) else []))  # fmt: skip
    return out


def _assert_same(results, expected):
    for got, want in zip(results, expected, strict=True):
        assert got.token_ids == want.token_ids
        assert (got.text, got.finish_reason, got.completion_tokens) == (want.text, want.finish_reason,
                                                                        want.completion_tokens)  # fmt: skip
        assert (got.logprobs is None) == (want.logprobs is None)
        for a, b in zip(got.logprobs or [], want.logprobs or [], strict=True):
            assert a.logprob == pytest.approx(b.logprob, abs=1e-5) and a.bytes == b.bytes
            assert [t.token_id for t in a.top] == [t.token_id for t in b.top]


def test_the_tiny_model_qualifies(engine):
    assert supports(engine)


def test_same_results_as_the_static_engine_row_by_row(engine, prompts):
    requests = _mixed(prompts)
    expected = [engine.generate([r])[0] for r in requests]  # each alone: no batch mates at all
    batcher = ContinuousBatcher(engine, max_slots=4)  # fewer slots than rows: rows join as others leave
    _assert_same(batcher.generate(requests), expected)
    stats = batcher.stats
    assert stats["max_running"] == 4 and stats["tokens"] == sum(r.completion_tokens for r in expected)
    assert any(r.finish_reason == "stop" for r in expected)  # the stop string was exercised


def test_rows_leave_at_once_and_waiting_rows_take_their_slots(engine, prompts):
    # One long row and six short ones on 2 slots: a static batch of 2 runs to its longer row; here the short rows
    # pass through the second slot while the long one runs, so the steps are about the long row's length.
    long = GenRequest(prompt_ids=prompts[0], max_new_tokens=30, temperature=0.0)
    short = [GenRequest(prompt_ids=prompts[1 + i % 2], max_new_tokens=4, temperature=0.0) for i in range(6)]
    expected = [engine.generate([r])[0] for r in [long, *short]]
    assert all(r.finish_reason == "length" for r in expected)  # the random tiny model never ends early
    batcher = ContinuousBatcher(engine, max_slots=2)
    _assert_same(batcher.generate([long, *short]), expected)
    assert batcher.stats["steps"] <= 30  # static batches of 2 would need 30 + 3 * 4 steps
    assert batcher.stats["max_running"] == 2


def test_n_samples_of_one_prompt_share_one_prefill(engine, prompts):
    samples = [GenRequest(prompt_ids=prompts[2], max_new_tokens=6, temperature=1.0, seed=s) for s in range(5)]
    batcher = ContinuousBatcher(engine, max_slots=8)
    results = batcher.generate(samples)
    assert batcher.stats["prefills"] == 1 and batcher.stats["prefilled_prompts"] == 1
    assert batcher.stats["shared_prefills"] == 4
    _assert_same(results, [engine.generate([r])[0] for r in samples])
    assert len({tuple(r.token_ids) for r in results}) > 1  # the copies really sample on their own seeds


def test_a_seeded_row_reproduces_whoever_joins_around_it(engine, prompts):
    row = GenRequest(prompt_ids=prompts[1], max_new_tokens=12, temperature=0.8, seed=1234, logprobs=True)
    alone = engine.generate([row])[0]
    batcher = ContinuousBatcher(engine, max_slots=6)
    batcher.start()
    try:
        early = [batcher.submit(GenRequest(prompt_ids=p, max_new_tokens=20, temperature=1.0, seed=7)) for p in prompts]
        time.sleep(0.05)  # the row joins a batch already decoding, at another cache length
        target = batcher.submit(row)
        late = [batcher.submit(GenRequest(prompt_ids=p, max_new_tokens=3, temperature=0.5, seed=9)) for p in prompts]
        _assert_same([target.result(timeout=120)], [alone])
        assert all(f.result(timeout=120).completion_tokens > 0 for f in early + late)
    finally:
        batcher.stop()


def test_a_bad_request_fails_alone(engine, prompts):
    batcher = ContinuousBatcher(engine, max_slots=4)
    with pytest.raises(ValueError, match="max_new_tokens"):
        batcher.generate([GenRequest(prompt_ids=prompts[0], max_new_tokens=0)])
    batcher.start()
    try:
        good = batcher.submit(GenRequest(prompt_ids=prompts[0], max_new_tokens=3, temperature=0.0))
        bad = batcher.submit(GenRequest(prompt_ids=[engine.vocab_size + 5], max_new_tokens=3))
        with pytest.raises(ValueError, match="outside the vocabulary"):
            bad.result(timeout=1)
        assert good.result(timeout=60).completion_tokens == 3
    finally:
        batcher.stop()


def test_calls_run_on_the_loop_between_steps(engine, prompts):
    sequence = prompts[0] + [engine.pad_token_id]
    direct = engine.score([sequence], top_logprobs=1)
    batcher = ContinuousBatcher(engine, max_slots=2)
    batcher.start()
    try:
        running = batcher.submit(GenRequest(prompt_ids=prompts[1], max_new_tokens=25, temperature=0.0))
        scored = batcher.call(lambda: engine.score([sequence], top_logprobs=1)).result(timeout=60)
        failed = batcher.call(lambda: engine.score([[]]))
        with pytest.raises(ValueError, match="empty"):
            failed.result(timeout=60)
        assert running.result(timeout=120).completion_tokens == 25
    finally:
        batcher.stop()
    assert [e.logprob if e else None for e in scored[0]] == pytest.approx([e.logprob if e else None for e in direct[0]])
