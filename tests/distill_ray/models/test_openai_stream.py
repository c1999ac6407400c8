"""Streamed answers (distill_ray/models/openai_stream.py) against the whole answers, on the tiny engine (no Ray).

The engine's `on_token` hook feeds `ReplyDeltas`; the chunks of every choice must concatenate to the whole answer's
text and logprobs, whatever stops it (length, a stop string, an end token) and whatever bytes the random tiny model
writes (it often writes part of a character).
"""

from __future__ import annotations

import pytest
from openai.types import Completion
from openai.types.chat import ChatCompletionChunk

from distill_ray.models.engine import GenerationEngine, GenRequest
from distill_ray.models.loading import resolve_model
from distill_ray.models.openai_completions import completion_response, parse_completion_request, prompt_echo
from distill_ray.models.openai_protocol import chat_response
from distill_ray.models.openai_stream import ChatStream, CompletionStream, Delta, ReplyDeltas


@pytest.fixture(scope="module")
def tiny():
    return GenerationEngine(resolve_model("tiny:smollm2"), torch_threads=2)


def streamed(engine: GenerationEngine, requests: list[GenRequest], stream) -> tuple[list, list[dict]]:
    """Generate `requests` as one batch with the hook on; the results and every chunk `stream` made of them."""
    events = []
    for index, req in enumerate(requests):
        req.on_token = lambda token, entry, index=index: events.append((index, token, entry))
    results = engine.generate(requests)
    replies = [ReplyDeltas(engine.token_bytes, req.stop, engine.eos_token_ids) for req in requests]
    chunks = list(stream.opening())
    for index, token, entry in events:
        delta = replies[index].push(token, entry)
        chunk = stream.delta(index, delta) if delta is not None else None
        chunks += [chunk] if chunk is not None else []
    chunks += [stream.result(i, r) for i, r in enumerate(results)]
    return results, chunks + stream.closing()


def test_chat_chunks_concatenate_to_the_whole_answer(tiny):
    prompt = tiny.chat_prompt_ids([{"role": "user", "content": "Tell me a story about a dragon."}])
    free = tiny.generate([GenRequest(prompt, max_new_tokens=30, temperature=1.0, seed=7)])[0]
    # A stop string first met in the middle: text from it on must never stream.
    middle = len(free.text) // 2
    stop = next(
        free.text[i : i + 3] for i in range(middle, len(free.text)) if free.text.find(free.text[i : i + 3]) == i
    )
    requests = [
        GenRequest(prompt, max_new_tokens=30, temperature=1.0, seed=7, stop=[stop], logprobs=True, top_logprobs=2),
        GenRequest(prompt, max_new_tokens=30, temperature=1.0, seed=8, logprobs=True, top_logprobs=2),
        GenRequest(prompt, max_new_tokens=3, temperature=0, logprobs=True, top_logprobs=2),
    ]
    stream = ChatStream("tiny", 3, len(prompt), include_usage=True, logprobs=True)
    results, chunks = streamed(tiny, requests, stream)
    assert results[0].finish_reason == "stop" and results[2].finish_reason == "length"
    parsed = [ChatCompletionChunk.model_validate(c) for c in chunks]  # the client's own type
    assert all(p.object == "chat.completion.chunk" and p.id == parsed[0].id for p in parsed)
    whole = chat_response(results, "tiny", len(prompt))
    for index, choice in enumerate(whole["choices"]):
        mine = [p.choices[0] for p in parsed if p.choices and p.choices[0].index == index]
        assert mine[0].delta.role == "assistant" and mine[0].delta.content == ""
        assert len(mine) > min(3, choice["completion_tokens"]), "a choice of several tokens streams in several chunks"
        assert "".join(c.delta.content for c in mine) == choice["message"]["content"]
        assert [c.finish_reason for c in mine] == [None] * (len(mine) - 1) + [choice["finish_reason"]]
        entries = [e.model_dump() for c in mine[1:] for e in c.logprobs.content]
        assert entries == choice["logprobs"]["content"]
    assert [p.usage for p in parsed[:-1]] == [None] * (len(parsed) - 1)
    assert parsed[-1].choices == [] and chunks[-1]["usage"] == whole["usage"]


def test_completion_chunks_with_echo_match_the_whole_answer(tiny):
    req = parse_completion_request({"prompt": ["Once upon a time", "Hello"], "n": 2, "echo": True, "logprobs": 2,
                                    "prompt_logprobs": 1, "max_tokens": 12, "seed": 3, "stream": True})  # fmt: skip
    prompt_ids = [tiny.text_prompt_ids(p) for p in req.prompts]
    scores = tiny.score(prompt_ids, 2)
    echoes = [prompt_echo(ids, s, tiny.token_bytes, req) for ids, s in zip(prompt_ids, scores)]
    requests = [GenRequest(ids, 12, 1.0, seed=seed, logprobs=True, top_logprobs=2)
                for ids in prompt_ids for seed in req.choice_seeds()]  # fmt: skip
    stream = CompletionStream("tiny", 2, echoes, sum(map(len, prompt_ids)), include_usage=False, logprobs=True)
    results, chunks = streamed(tiny, requests, stream)
    whole = completion_response([results[:2], results[2:]], "tiny", [len(i) for i in prompt_ids], echoes=echoes)
    parsed = [Completion.construct(**c) for c in chunks]  # as the client parses them: nulls kept, no validation
    assert all(p.object == "text_completion" and p.usage is None for p in parsed)
    for choice in whole["choices"]:
        mine = [c for p in parsed for c in p.choices if c.index == choice["index"]]
        assert "".join(c.text for c in mine) == choice["text"]
        assert mine[0].prompt_logprobs == choice["prompt_logprobs"]
        for key in ("tokens", "token_logprobs", "top_logprobs", "text_offset"):
            assert [v for c in mine for v in getattr(c.logprobs, key)] == choice["logprobs"][key], key
        assert mine[-1].finish_reason == choice["finish_reason"]


def test_reply_deltas_hold_back_what_may_still_change(tiny):
    token_bytes = tiny.token_bytes
    ids = {text: tiny.tokenizer.convert_tokens_to_ids(text) for text in ("a", "b", "c")}
    deltas = ReplyDeltas(token_bytes, ["bc"], end_ids={0})
    assert deltas.push(ids["a"]) == Delta("a")
    assert deltas.push(ids["b"]) is None  # "b" may open the stop string "bc"
    assert deltas.push(ids["c"]) is None  # it did: nothing after "a" is reply text
    end = ReplyDeltas(token_bytes, [], end_ids={0})
    assert end.push(ids["a"]) == Delta("a") and end.push(0) is None and end.push(ids["b"]) is None
    # A character split over two tokens is given once it is whole.
    first, second = _byte_tokens(tiny, "é".encode())
    split = ReplyDeltas(token_bytes, [], end_ids={0})
    assert split.push(first) is None
    assert split.push(second) == Delta("é")


def _byte_tokens(engine: GenerationEngine, raw: bytes) -> list[int]:
    """Token ids whose exact bytes are each one byte of `raw` (byte-level BPE has one per byte)."""
    by_bytes = {engine.token_bytes.raw(i): i for i in range(engine.vocab_size) if len(engine.token_bytes.raw(i)) == 1}
    return [by_bytes[bytes([b])] for b in raw]
