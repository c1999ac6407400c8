"""Fault test: a reward-service replica killed (SIGKILL) under load. Serve replaces it, the clients retry the
requests it was holding, and every request ends with its full, correct scores: none lost, none altered.

Loopback only, bounded: 3 clients, at most LOAD_S seconds of traffic, then everything stops by itself."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from conftest import ray_worker_pids, sigkill_ray_worker

pytestmark = pytest.mark.ray
log = logging.getLogger(__name__)

APP = "reward-faults"
CLIENTS = 3
LOAD_S = 90.0  # the whole load phase's bound; it ends earlier once enough requests followed the kill
AFTER_KILL = 6  # requests each client must finish after the kill (so some ran on the replacement)
ITEMS = [
    {"prompt": "What is 2+2?", "response": "<think>2 and 2 make 4.</think><answer>\\boxed{4}</answer>", "reference": "4"},
    {"prompt": "What is 3+5?", "response": "It is \\boxed{9}.", "reference": "8"},
]


@pytest.fixture(scope="module")
def service(ray_cluster, serve_port, tiny_reward_models):
    from distill_ray.config.reward import RewardConfig
    from serve.reward import deploy_reward, undeploy_reward

    cfg = RewardConfig(rv_model=str(tiny_reward_models["rv"]), setting="rv", verify_timeout_s=5.0,
                       verifier_processes=1, serve={"port": serve_port, "max_batch_size": 8})  # fmt: skip
    endpoint = deploy_reward(cfg, app_name=APP)
    yield endpoint
    undeploy_reward(APP)


def _replica_title(deployment: str) -> str:
    return f"ServeReplica:{APP}:{deployment}"


@pytest.mark.parametrize("deployment", ["RewardModel-rv", "RewardService"])
def test_killed_replica_under_load_is_replaced_and_no_score_is_lost(service, deployment):
    from actors.reward_client import RewardClient

    expected = RewardClient(service.base_url).rewards(ITEMS)
    assert [r["correct"] for r in expected] == [True, False] and all(r["rv"] is not None for r in expected)

    done: list[list] = [[] for _ in range(CLIENTS)]  # per client: (finished after the kill?, results)
    errors: list[BaseException] = []
    killed = threading.Event()
    stop_at = time.time() + LOAD_S
    clients = [RewardClient(service.base_url, timeout_s=60, max_retries=12) for _ in range(CLIENTS)]

    def load(i: int) -> None:
        try:
            while time.time() < stop_at and sum(after for after, _ in done[i]) < AFTER_KILL:
                was_killed = killed.is_set()  # the kill happened before this request was sent
                done[i].append((was_killed, clients[i].rewards(ITEMS)))
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)

    threads = [threading.Thread(target=load, args=(i,), daemon=True) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    while sum(len(d) for d in done) < 2 * CLIENTS:  # the load is running
        assert time.time() < stop_at and not errors, errors
        time.sleep(0.05)
    victim = sigkill_ray_worker(_replica_title(deployment))
    killed.set()
    for t in threads:
        t.join(timeout=max(1.0, stop_at - time.time() + 5))
    for c in clients:
        c.close()

    assert not errors, f"a request failed after the kill: {errors[0]!r}"
    finished = [results for d in done for _, results in d]
    after = [results for d in done for was_killed, results in d if was_killed]
    assert len(after) >= CLIENTS * AFTER_KILL, f"only {len(after)} requests finished after the kill"
    for results in finished:
        assert results == expected  # every score there, and the same as before the kill
    replacement = ray_worker_pids(_replica_title(deployment))
    assert len(replacement) == 1 and replacement[0] != victim, (victim, replacement)
    retried = sum(c.calls for c in clients) - len(finished)  # attempts beyond one per request
    log.info("%s killed: %d requests, %d after the kill, %d retried", deployment, len(finished), len(after), retried)
