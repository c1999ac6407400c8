"""The reward service (serve/reward.py) over real HTTP: our /v1/rewards schema, OpenRLHF's /get_reward,
bad requests, the API key, and batching. One app (tiny RV and CD models, the verifier) serves the module."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from reward_fixtures import direct_scores

pytestmark = pytest.mark.ray

KEY = "reward-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
ITEMS = [
    {"prompt": "What is 2+2?", "response": "<think>2 and 2 make 4.</think><answer>\\boxed{4}</answer>", "reference": "4"},
    {"prompt": "What is 2+2?", "response": "I think it is \\boxed{5}.", "reference": 4},
    {"prompt": "Say hello.", "response": "hello"},
]


# Under math-verify's shortest alarm (signal.alarm takes whole seconds: 1 s), so an item that runs until an alarm stops
# it always misses this deadline. At a 1.0 s deadline the two raced: the slow item below ended at 1.001 s on a fast
# box and was not counted as a timeout. Normal items take 10 to 20 ms.
VERIFY_DEADLINE_S = 0.5


@pytest.fixture(scope="module")
def service(ray_cluster, serve_port, tiny_reward_models):
    from distill_ray.config.reward import RewardConfig
    from serve.reward import deploy_reward, undeploy_reward

    cfg = RewardConfig(rv_model=str(tiny_reward_models["rv"]), cd_model=str(tiny_reward_models["cd"]), setting="rv_cd",
                       rv_interval=(0.3, 0.4), cd_interval=(0.6, 0.7), lambda_rv=2.0, lambda_cd=0.5, w_format=0.5,
                       verify_timeout_s=VERIFY_DEADLINE_S, verifier_processes=2,
                       serve={"port": serve_port, "api_key": KEY, "max_batch_size": 16, "batch_wait_timeout_s": 0.05})  # fmt: skip
    endpoint = deploy_reward(cfg, app_name="reward-test")
    yield endpoint, cfg
    undeploy_reward(endpoint.app_name)


def post(service, path, body, headers=AUTH, **kw):
    endpoint, _ = service
    return httpx.post(endpoint.base_url + path, json=body, headers=headers, timeout=120, **kw)


def test_rewards_schema_and_composite(service, tiny_reward_models):
    from distill_ray.rewards.grpo import interval_penalty

    _, cfg = service
    response = post(service, "/v1/rewards", {"items": ITEMS})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["setting"] == "rv_cd" and body["terms"] == ["rv", "cd"]
    results = body["results"]
    assert [r["correct"] for r in results] == [True, False, None]
    assert [r["format"] for r in results] == [1.0, 0.0, 0.0]
    assert [r["accuracy"] for r in results] == [1.0, 0.0, 0.0]
    # The service's model outputs equal the models run here one item at a time (batching and padding change nothing).
    pairs = [(i["prompt"], i["response"]) for i in ITEMS]
    for name in ("rv", "cd"):
        assert [r[name] for r in results] == pytest.approx(direct_scores(tiny_reward_models[name], pairs), abs=1e-5)
    for r in results:
        assert r["r_rv"] == pytest.approx(interval_penalty(r["rv"], 0.3, 0.4))
        assert r["r_cd"] == pytest.approx(interval_penalty(r["cd"], 0.6, 0.7))
        expected = 0.5 * r["format"] + 1.0 * r["accuracy"] + 2.0 * r["r_rv"] + 0.5 * r["r_cd"]
        assert r["reward"] == pytest.approx(expected)
    assert any(r["r_rv"] < 0 or r["r_cd"] < 0 for r in results)  # the intervals were set to bite


def test_setting_per_request(service):
    vanilla = post(service, "/v1/rewards", {"items": ITEMS, "setting": "vanilla"}).json()
    assert vanilla["terms"] == []
    assert [r["reward"] for r in vanilla["results"]] == pytest.approx([0.5 * 1 + 1, 0.0, 0.0])
    only_cd = post(service, "/v1/rewards", {"items": ITEMS, "setting": "cd"}).json()["results"]
    assert [r["reward"] for r in only_cd] == pytest.approx(
        [0.5 * r["format"] + r["accuracy"] + 0.5 * r["r_cd"] for r in only_cd])


def test_openrlhf_get_reward_payload(service):
    # OpenRLHF's remote reward client sends the decoded full sequences, the prompts and the labels.
    prompts = [item["prompt"] for item in ITEMS]
    payload = {"query": [p + item["response"] + "<|im_end|>" for p, item in zip(prompts, ITEMS)], "prompts": prompts,
               "labels": [item.get("reference") for item in ITEMS]}  # fmt: skip
    response = post(service, "/get_reward", payload)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"rewards", "scores", "extra_logs"}
    ours = post(service, "/v1/rewards", {"items": ITEMS}).json()["results"]
    assert body["rewards"] == pytest.approx([r["reward"] for r in ours])  # the prompt prefix and <|im_end|> were cut
    assert body["scores"] == [1.0, 0.0, 0.0]
    assert body["extra_logs"]["rv"] == pytest.approx([r["rv"] for r in ours])
    assert body["extra_logs"]["format"] == [1.0, 0.0, 0.0]


@pytest.mark.parametrize("path, body, status, words", [
    ("/v1/rewards", b"{not json", 400, "not valid JSON"),
    ("/v1/rewards", {"items": []}, 400, "'items' must be a non-empty list"),
    ("/v1/rewards", {"items": [{"prompt": "p"}]}, 400, "items[0].response must be a string"),
    ("/v1/rewards", {"items": ["text"]}, 400, "items[0] must be an object"),
    ("/v1/rewards", {"items": [{"prompt": "p", "response": "r", "reference": [1]}]}, 400, "items[0].reference"),
    ("/v1/rewards", {"items": [{"prompt": "p", "response": "r"}], "setting": "best"}, 400, "setting must be one of"),
    ("/v1/rewards", {"items": [{"prompt": "p", "response": "r"}] * 600}, 413, "at most 512"),
    ("/get_reward", {"query": ["a", "b"], "prompts": ["a"], "labels": ["1", "2"]}, 400, "'prompts' must be a list as long"),
    ("/get_reward", {"prompts": ["a"]}, 400, "'query' must be a non-empty list"),
    ("/get_reward", [1, 2], 400, "must be a JSON object"),
])  # fmt: skip
def test_malformed_requests_get_4xx_with_a_message(service, path, body, status, words):
    endpoint, _ = service
    kw = {"content": body} if isinstance(body, bytes) else {"json": body}
    response = httpx.post(endpoint.base_url + path, headers=AUTH, timeout=60, **kw)
    assert response.status_code == status, response.text
    assert words in response.json()["error"]["message"]


def test_service_survives_bad_requests(service):
    for body in ({"items": "x"}, {"items": [{"prompt": 1, "response": 2}]}, None):
        assert post(service, "/v1/rewards", body).status_code == 400
    assert post(service, "/v1/rewards", {"items": ITEMS[:1]}).json()["results"][0]["correct"] is True


def test_api_key_enforced_health_open(service):
    endpoint, _ = service
    assert post(service, "/v1/rewards", {"items": ITEMS}, headers={}).status_code == 401
    assert post(service, "/get_reward", {"query": ["x"]}, headers={"Authorization": "Bearer wrong"}).status_code == 401
    health = httpx.get(endpoint.base_url + "/health", timeout=30).json()
    assert health == {"status": "ok", "models": ["cd", "rv"], "setting": "rv_cd"}


def test_concurrent_requests_are_scored_in_model_batches(service):
    from ray import serve

    items = [{"prompt": f"What is {i}+1?", "response": f"\\boxed{{{i + 1}}}", "reference": i + 1} for i in range(8)]
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda chunk: post(service, "/v1/rewards", {"items": chunk}),
                                [items[i : i + 2] for i in range(0, 8, 2)]))  # fmt: skip
    assert all(a.status_code == 200 for a in answers)
    assert all(r["correct"] is True for a in answers for r in a.json()["results"])
    stats = serve.get_deployment_handle("RewardModel-rv", app_name="reward-test").stats.remote().result()
    assert stats["max_batch"] > 1, stats  # items of one request at least were scored in one forward pass


def test_one_slow_item_costs_only_itself(service):
    # Issue 14 item 13: a pathological expression (minutes of exact evaluation) among normal items, from two
    # concurrent requests: only that item runs out of its deadline (VERIFY_DEADLINE_S); every other item is verified.
    from ray import serve

    verifier = serve.get_deployment_handle("Verifier", app_name="reward-test")
    before = verifier.stats.remote().result()
    normal = [{"prompt": f"What is {i}*3?", "response": f"\\boxed{{{3 * i}}}", "reference": 3 * i} for i in range(6)]
    slow = {"prompt": "p", "response": "\\boxed{\\sin(10^{10^{9}})}", "reference": "1"}
    first, second = normal[:3] + [slow] + normal[3:4], normal[4:] + normal[:2]
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda items: post(service, "/v1/rewards", {"items": items, "setting": "vanilla"}),
                                [first, second]))  # fmt: skip
    results = [[r["correct"] for r in a.json()["results"]] for a in answers]
    assert results == [[True, True, True, False, True], [True, True, True, True]]
    after = verifier.stats.remote().result()
    assert after["timeouts"] - before["timeouts"] == 1
    assert post(service, "/v1/rewards", {"items": normal[:2]}).json()["results"][1]["correct"] is True  # replaced


def test_think_opened_by_the_template(service):
    # Issue 14 item 7: the template wrote `<think>`, so the completion holds only the closing tag.
    completion = "Adding 6 and 6 gives 12.\n</think>\n<answer>\\boxed{12}</answer>"
    templated = "<|im_start|>user\nWhat is 6+6?<|im_end|>\n<|im_start|>assistant\n<think>\n"
    items = [{"prompt": templated, "response": completion, "reference": "12"},  # read off the prompt
             {"prompt": "What is 6+6?", "response": completion, "reference": "12"},  # nothing says it was opened
             {"prompt": "What is 6+6?", "response": completion, "reference": "12", "think_opened": True}]
    results = post(service, "/v1/rewards", {"items": items, "setting": "vanilla"}).json()["results"]
    assert [r["format"] for r in results] == [1.0, 0.0, 1.0]
    draft = {"prompt": templated, "response": "It may be \\boxed{12}, let me check", "reference": "12"}
    assert post(service, "/v1/rewards", {"items": [draft]}).json()["results"][0]["correct"] is False  # unclosed think


def test_get_reward_with_pads_and_end_of_turn(service):
    # Issue 14 item 8: OpenRLHF decodes with special tokens kept: left pads, prompt, response, eos, right pads.
    prompt = "<|im_start|>user\nWhat is 2+2? Use <think> and <answer> tags.<|im_end|>\n<|im_start|>assistant\n"
    query = "<|endoftext|>" * 3 + prompt + ITEMS[0]["response"] + "<|im_end|>" + "<|endoftext|>" * 5
    body = post(service, "/get_reward", {"query": [query], "prompts": [prompt], "labels": ["4"]}).json()
    assert body["extra_logs"]["format"] == [1.0] and body["scores"] == [1.0]
