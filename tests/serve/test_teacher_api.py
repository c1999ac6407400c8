"""The teacher Serve app (serve/teacher.py) through the official `openai` client and its handle.

One tiny-model deployment serves the whole module (deploys cost seconds on a 2-core box); a second,
key-protected app shares the same Serve instance to test authentication.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from distill_ray.config import ServeConfig

pytestmark = pytest.mark.ray

MODEL = "tiny:smollm2"
MSG = [{"role": "user", "content": "What is 2 + 3?"}]


@pytest.fixture(scope="module")
def teacher(ray_cluster, serve_port):
    from serve.teacher import deploy_teacher, undeploy

    cfg = ServeConfig(port=serve_port, max_batch_size=8, batch_wait_timeout_s=0.05, num_cpus=0.5)
    endpoint = deploy_teacher(MODEL, cfg, app_name="teacher-test")
    yield endpoint
    undeploy(endpoint.app_name)


@pytest.fixture(scope="module")
def client(teacher):
    return openai.OpenAI(base_url=teacher.base_url, api_key="unused", max_retries=0, timeout=120)


def chat(client, teacher, **kw):
    kw.setdefault("max_tokens", 8)
    return client.chat.completions.create(model=teacher.served_name, messages=MSG, **kw)


def test_endpoint_fields(teacher, serve_port):
    assert teacher.served_name == "tiny-smollm2"
    assert teacher.base_url == f"http://127.0.0.1:{serve_port}/teacher-test/v1"
    assert httpx.get(teacher.base_url.removesuffix("/v1") + "/health").json()["status"] == "ok"


def test_n_choices_and_usage(client, teacher):
    out = chat(client, teacher, n=3, temperature=1.0)
    assert out.object == "chat.completion" and out.model == teacher.served_name
    assert [c.index for c in out.choices] == [0, 1, 2]
    assert all(c.message.role == "assistant" and isinstance(c.message.content, str) for c in out.choices)
    assert out.usage.prompt_tokens > 0
    assert 3 <= out.usage.completion_tokens <= 3 * 8
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens
    # The 3 choices were decoded as one engine batch.
    assert teacher.handle.stats.remote().result()["max_batch"] >= 3


def test_greedy_is_deterministic(client, teacher):
    a = chat(client, teacher, temperature=0)
    b = chat(client, teacher, temperature=0)
    assert a.choices[0].message.content == b.choices[0].message.content


def test_seed_reproducible_and_per_choice(client, teacher):
    a = chat(client, teacher, n=2, temperature=1.0, seed=123, max_tokens=12)
    b = chat(client, teacher, n=2, temperature=1.0, seed=123, max_tokens=12)
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]
    # Choice 1 uses seed 124, so it equals choice 0 of a request seeded 124.
    c = chat(client, teacher, n=1, temperature=1.0, seed=124, max_tokens=12)
    assert c.choices[0].message.content == a.choices[1].message.content


def test_max_tokens_gives_length(client, teacher):
    out = chat(client, teacher, max_tokens=3, temperature=0)
    assert out.choices[0].finish_reason == "length"
    assert out.usage.completion_tokens == 3


def test_logprobs(client, teacher):
    out = chat(client, teacher, logprobs=True, top_logprobs=3, max_tokens=4, temperature=0)
    entries = out.choices[0].logprobs.content
    assert len(entries) == out.usage.completion_tokens
    # The entries' bytes are the reply's (a random tiny model may write invalid UTF-8, shown as U+FFFD).
    assert b"".join(bytes(e.bytes) for e in entries).decode("utf-8", "replace") == out.choices[0].message.content
    for entry in entries:
        assert entry.logprob <= 0
        if entry.bytes and not entry.token.startswith("bytes:"):  # a token of whole characters: its text's UTF-8
            assert entry.bytes == list(entry.token.encode())
        assert len(entry.top_logprobs) == 3
        # Greedy: the chosen token is the most likely one.
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob)


def test_completions_string_prompt(client, teacher):
    out = client.completions.create(model=teacher.served_name, prompt="Once upon a time", max_tokens=5, logprobs=2)
    assert out.object == "text_completion" and len(out.choices) == 1
    choice = out.choices[0]
    assert isinstance(choice.text, str) and choice.finish_reason in ("stop", "length")
    assert len(choice.logprobs.tokens) == out.usage.completion_tokens
    assert all(len(top) <= 2 for top in choice.logprobs.top_logprobs)


# ---- teacher scoring (issue 18 item 1): echo + max_tokens 0, prompt_logprobs, token-id prompts ----------


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    """The teacher's model in this process: the numbers the deployment must answer with."""
    from distill_ray.models.engine import GenerationEngine

    return GenerationEngine(tiny_model_dir, torch_threads=1)


def student_ids(engine) -> list[int]:
    """A 'rollout' of token ids that a text round trip would change: `hello` spelt `h` + `ello`."""
    spelt = engine.tokenizer.convert_tokens_to_ids(["Ġh", "ello", "Ġworld", "!"])
    return engine.text_prompt_ids("Say hi:") + spelt


def test_scoring_with_the_official_client(client, teacher, engine):
    ids = student_ids(engine)
    assert engine.text_prompt_ids(engine.tokenizer.decode(ids)) != ids
    out = client.completions.create(model=teacher.served_name, prompt=[ids], echo=True, max_tokens=0, logprobs=5)
    (choice,) = out.choices
    assert choice.finish_reason == "length" and choice.text == "Say hi: hello world!"
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (len(ids), 0)
    logprobs = choice.logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == len(logprobs.text_offset) == len(ids)
    assert logprobs.token_logprobs[0] is None and logprobs.top_logprobs[0] is None
    (expected,) = engine.score([ids], 5)
    assert logprobs.tokens[1:] == [e.token for e in expected[1:]]  # the given ids, not a re-tokenisation
    assert logprobs.token_logprobs[1:] == pytest.approx([e.logprob for e in expected[1:]], abs=1e-5)
    for got, entry in zip(logprobs.top_logprobs[1:], expected[1:]):
        assert list(got) == [alt.token for alt in entry.top]
        assert list(got.values()) == pytest.approx([alt.logprob for alt in entry.top], abs=1e-5)
    assert logprobs.text_offset == [len(engine.token_bytes.join(ids[:t]).decode()) for t in range(len(ids))]


def test_prompt_logprobs_over_raw_http(teacher, engine):
    ids = student_ids(engine)
    body = {"model": teacher.served_name, "prompt": ids, "prompt_logprobs": 3, "max_tokens": 1, "temperature": 0}
    response = httpx.post(teacher.base_url + "/completions", json=body, timeout=120)
    assert response.status_code == 200
    (choice,) = response.json()["choices"]
    assert choice["logprobs"] is None and response.json()["usage"]["completion_tokens"] == 1
    prompt_logprobs = choice["prompt_logprobs"]
    assert len(prompt_logprobs) == len(ids) and prompt_logprobs[0] is None
    (expected,) = engine.score([ids], 3)
    for position, entry in zip(prompt_logprobs[1:], expected[1:]):
        keys = list(position)
        assert keys[0] == str(entry.token_id)  # the prompt token first, then the top 3
        top = {str(alt.token_id): (rank, alt.logprob) for rank, alt in enumerate(entry.top, start=1)}
        assert set(keys) == {str(entry.token_id), *top}
        for key, value in position.items():
            rank, logprob = top.get(key, (entry.rank, entry.logprob))
            assert value["rank"] == rank and value["logprob"] == pytest.approx(logprob, abs=1e-5)
            assert value["decoded_token"] == engine.token_bytes.name(int(key))


def test_echo_with_generation(client, teacher):
    out = client.completions.create(model=teacher.served_name, prompt="Once upon a time", echo=True, max_tokens=3,
                                    logprobs=1, temperature=0)  # fmt: skip
    (choice,) = out.choices
    assert choice.text.startswith("Once upon a time")
    assert len(choice.logprobs.tokens) == out.usage.prompt_tokens + out.usage.completion_tokens
    assert choice.logprobs.token_logprobs[0] is None and None not in choice.logprobs.token_logprobs[1:]


def test_concurrent_scoring_requests_share_a_forward_pass(client, teacher, engine):
    before = teacher.handle.stats.remote().result()
    prompts = [student_ids(engine)[: 6 + i] for i in range(6)]

    def score(ids):
        return client.completions.create(model=teacher.served_name, prompt=ids, echo=True, max_tokens=0, logprobs=0)

    with ThreadPoolExecutor(max_workers=6) as pool:
        outs = list(pool.map(score, prompts))
    assert [len(o.choices[0].logprobs.tokens) for o in outs] == [len(p) for p in prompts]
    after = teacher.handle.stats.remote().result()
    assert after["scored_sequences"] - before["scored_sequences"] == 6
    assert after["score_batches"] - before["score_batches"] < 6 and after["max_score_batch"] >= 2


@pytest.mark.parametrize(
    "fields, param",
    [
        ({"prompt": [1, 10**6], "echo": True, "max_tokens": 0}, "prompt"),  # outside the vocabulary
        ({"prompt": [[1, 2], []], "echo": True, "max_tokens": 0}, "prompt"),
        ({"prompt": [1] * 2049, "echo": True, "max_tokens": 0, "logprobs": 1}, "prompt"),  # context is 2048
        ({"prompt": [1, 2], "max_tokens": 0}, "max_tokens"),  # nothing to do
        ({"prompt": [1, 2], "prompt_logprobs": 21}, "prompt_logprobs"),
    ],
)
def test_bad_scoring_requests_are_400(teacher, fields, param):
    response = httpx.post(teacher.base_url + "/completions", json={"model": teacher.served_name, **fields}, timeout=60)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def test_models_lists_served_name(client, teacher):
    assert [m.id for m in client.models.list().data] == [teacher.served_name]


@pytest.mark.parametrize("kw", [{"n": 0}, {"temperature": -1}, {"messages": []}, {"top_logprobs": 2},
                                {"stream": True, "n": 0}, {"stream": True, "max_tokens": -1}])  # fmt: skip
def test_bad_requests_are_400(client, teacher, kw):
    kw = {"model": teacher.served_name, "messages": MSG, "max_tokens": 4, **kw}
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(**kw)
    assert info.value.status_code == 400
    assert info.value.body["message"]  # OpenAI error shape, parsed by the client


# ---- streaming (issue 16 item 3) ---------------------------------------------------------------------------


def test_chat_stream_matches_the_whole_answer(client, teacher):
    kw = {"n": 2, "temperature": 1.0, "seed": 5, "max_tokens": 12, "logprobs": True, "top_logprobs": 2}
    whole = chat(client, teacher, **kw)
    chunks = list(chat(client, teacher, stream=True, stream_options={"include_usage": True}, **kw))
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    for choice in whole.choices:
        mine = [c.choices[0] for c in chunks if c.choices and c.choices[0].index == choice.index]
        assert mine[0].delta.role == "assistant"
        assert "".join(c.delta.content or "" for c in mine) == choice.message.content
        assert [c.finish_reason for c in mine][-1] == choice.finish_reason
        assert [e for c in mine[1:] for e in c.logprobs.content] == choice.logprobs.content
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    assert all(c.usage is None for c in chunks[:-1])


def test_completions_stream_matches_the_whole_answer(client, teacher):
    kw = {"model": teacher.served_name, "prompt": "Once upon a time", "max_tokens": 10, "temperature": 1.0, "seed": 9}
    whole = client.completions.create(**kw)
    chunks = list(client.completions.create(stream=True, **kw))
    assert all(c.object == "text_completion" for c in chunks) and len(chunks) > 1
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason


def test_stream_is_server_sent_events_ending_with_done(teacher):
    body = {"model": teacher.served_name, "messages": MSG, "max_tokens": 4, "stream": True}
    with httpx.stream("POST", teacher.base_url + "/chat/completions", json=body, timeout=120) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in events) and events[-1] == "data: [DONE]"
    bad = {**body, "messages": [{"role": "wizard", "content": "x"}]}  # found before the stream starts: plain 400
    response = httpx.post(teacher.base_url + "/chat/completions", json=bad, timeout=60)
    assert response.status_code == 400 and response.json()["error"]["param"] == "messages[0].role"


def test_malformed_json_is_400(teacher):
    r = httpx.post(teacher.base_url + "/chat/completions", content=b"{not json", timeout=60)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


def test_wrong_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-nope", messages=MSG, max_tokens=2)
    assert info.value.body["code"] == "model_not_found"


def test_no_model_field_is_accepted(teacher):
    r = httpx.post(teacher.base_url + "/chat/completions", json={"messages": MSG, "max_tokens": 2}, timeout=60)
    assert r.status_code == 200 and r.json()["model"] == teacher.served_name


def test_concurrent_requests(client, teacher):
    def one(i):
        return chat(client, teacher, temperature=0.7, seed=i, max_tokens=6)

    with ThreadPoolExecutor(max_workers=8) as pool:
        outs = list(pool.map(one, range(8)))
    assert all(len(o.choices) == 1 and o.usage.completion_tokens >= 1 for o in outs)


def test_handle_chat_same_shape(teacher, client):
    body = {"model": teacher.served_name, "messages": MSG, "max_tokens": 4, "temperature": 0, "n": 2}
    out = teacher.handle.chat.remote(body).result()
    assert out["object"] == "chat.completion" and len(out["choices"]) == 2
    assert set(out["choices"][0]) == {"index", "message", "finish_reason", "logprobs", "completion_tokens"}
    assert set(out["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}
    assert sum(c["completion_tokens"] for c in out["choices"]) == out["usage"]["completion_tokens"]
    http = client.chat.completions.create(**body)
    assert out["choices"][0]["message"]["content"] == http.choices[0].message.content
    # the official client keeps the per-choice length (the generator reads it via model_dump)
    assert http.model_dump()["choices"][0]["completion_tokens"] == out["choices"][0]["completion_tokens"]
    from distill_ray.models.openai_protocol import ProtocolError

    with pytest.raises(ProtocolError, match="n"):
        teacher.handle.chat.remote({**body, "n": 0}).result()


def test_api_key_required(ray_cluster, serve_port, teacher):
    from serve.teacher import deploy_teacher, undeploy

    cfg = ServeConfig(port=serve_port, api_key="s3cret", num_cpus=0.25)
    secured = deploy_teacher(MODEL, cfg, app_name="teacher-auth", served_name="locked")
    try:
        assert secured.base_url.endswith("/teacher-auth/v1") and secured.api_key == "s3cret"
        bad = openai.OpenAI(base_url=secured.base_url, api_key="wrong", max_retries=0, timeout=120)
        with pytest.raises(openai.AuthenticationError):
            bad.chat.completions.create(model="locked", messages=MSG, max_tokens=2)
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
        with pytest.raises(openai.AuthenticationError):
            bad.chat.completions.create(model="locked", messages=MSG, max_tokens=2, stream=True)
        assert httpx.get(secured.base_url.removesuffix("/v1") + "/health").status_code == 200
        good = openai.OpenAI(base_url=secured.base_url, api_key="s3cret", max_retries=0, timeout=120)
        out = good.chat.completions.create(model="locked", messages=MSG, max_tokens=2)
        assert out.model == "locked" and len(out.choices) == 1
        # The first app in the same Serve instance stays open.
        open_client = openai.OpenAI(base_url=teacher.base_url, api_key="anything", max_retries=0)
        assert open_client.models.list().data[0].id == teacher.served_name
    finally:
        undeploy("teacher-auth")


def test_health_answers_during_generation(teacher):
    import threading
    import time

    base = teacher.base_url.removesuffix("/v1")
    before = teacher.handle.stats.remote().result()["batches"]
    body = {"messages": MSG, "max_tokens": 1500, "temperature": 0, "n": 4}
    long_call = threading.Thread(
        target=httpx.post, args=(teacher.base_url + "/chat/completions",), kwargs={"json": body, "timeout": 300}
    )
    long_call.start()
    while teacher.handle.stats.remote().result()["batches"] == before:  # wait until its batch runs
        time.sleep(0.02)
    start = time.monotonic()
    assert httpx.get(base + "/health", timeout=30).status_code == 200
    health_s = time.monotonic() - start
    still_generating = long_call.is_alive()
    long_call.join()
    print(f"health answered in {health_s:.3f}s; generation still running: {still_generating}")
    assert still_generating and health_s < 1.0
