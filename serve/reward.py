"""The reward service: distilled RV / CD reward models, the rule-based verifier and the format scorer as
one Ray Serve app, queried over HTTP by GRPO trainers (ours, or OpenRLHF's remote reward client).

Deployments, each with its own replicas and autoscaling (`reward.serve`):
- `RewardModel` (bound once per loaded model, RV and/or CD): a sequence-classification model from the
  `rm` job; single items are gathered by `@serve.batch` into one forward pass, and the head's output is
  mapped to [0, 1] exactly as in training (`distill_ray.training.reward_data`).
- `Verifier`: answer checking and the format score. The check runs in worker processes (their main
  thread, where math-verify's own `signal.alarm` limit works), off the replica's event loop, each item under
  its own deadline; a worker that misses it is replaced and that item alone counts as not verified. Both
  read the response as its whole assistant turn (`<think>` put back when the template opened it).
- `RewardService` (ingress): HTTP routes, request checks, fan-out to the others, the composite reward
  (`distill_ray.rewards.grpo`). Routes: `POST /v1/rewards`, `POST /get_reward`, `GET /health`
  (wire formats in `distill_ray.rewards.protocol`); with `reward.serve.api_key` set, every route but
  /health needs `Authorization: Bearer <key>`.
"""

# No `from __future__ import annotations`: Serve cloudpickles the FastAPI routes (see serve/teacher.py).

import asyncio
import multiprocessing
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from pebble import ProcessExpired, ProcessPool
from ray import serve
from ray.serve.handle import DeploymentHandle

from distill_ray.config.reward import RewardConfig
from distill_ray.config.serving import ServeConfig
from distill_ray.grading.grader import check_answer, warm_up
from distill_ray.models.openai_protocol import ProtocolError
from distill_ray.rewards.grpo import FORMAT_SCORERS, RewardWeights, score_item
from distill_ray.rewards.protocol import (
    openrlhf_response,
    parse_openrlhf_request,
    parse_rewards_request,
    rewards_response,
)
from serve.http import add_error_handlers, check_api_key, json_body, start_proxy

INGRESS_CPUS = 0.1  # the ingress only parses, fans out and adds up

app = FastAPI(title="distill-ray reward service", docs_url=None, redoc_url=None)
add_error_handlers(app, "reward")


@serve.deployment(name="RewardModel")
class RewardModelDeployment:
    """One distilled reward model: (problem, response) -> f in [0, 1], batched across requests."""

    def __init__(self, model_dir: str, serve_cfg: ServeConfig):
        import torch
        from transformers import AutoModelForSequenceClassification

        from distill_ray.models.loading import load_tokenizer
        from distill_ray.training.reward_data import read_reward_meta

        if serve_cfg.torch_threads:
            torch.set_num_threads(serve_cfg.torch_threads)
        self.meta = read_reward_meta(Path(model_dir))
        self.tokenizer = load_tokenizer(model_dir)
        self.model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1).eval()
        self.model.config.pad_token_id = self.tokenizer.pad_token_id  # the head reads the last real token
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reward-model")
        self._score_batch.set_max_batch_size(serve_cfg.max_batch_size)
        self._score_batch.set_batch_wait_timeout_s(serve_cfg.batch_wait_timeout_s)
        self._stats = {"batches": 0, "items": 0, "max_batch": 0}

    async def score(self, prompt: str, response: str) -> float:
        return await self._score_batch((prompt, response))

    async def stats(self) -> dict:
        return {**self._stats, "target": self.meta.get("target"), "objective": self.meta.get("objective")}

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def _score_batch(self, pairs: list) -> list:
        self._stats["batches"] += 1
        self._stats["items"] += len(pairs)
        self._stats["max_batch"] = max(self._stats["max_batch"], len(pairs))
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._forward, pairs)

    def _forward(self, pairs: list) -> list:
        import torch

        from distill_ray.training.reward_data import collate_scored, reward_in_unit_range, reward_input_ids

        spec = self.meta["input"]
        examples = [{"input_ids": reward_input_ids(self.tokenizer, prompt, response, spec["system_prompt"],
                                                   spec["user_template"], spec["max_length"]), "target": 0.0}
                    for prompt, response in pairs]  # fmt: skip
        batch = collate_scored(examples, self.tokenizer.pad_token_id)
        with torch.inference_mode():
            raw = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, 0]
        return [float(x) for x in reward_in_unit_range(raw)]


@serve.deployment(name="Verifier")
class VerifierDeployment:
    """Rule-based answer check (in worker processes, a deadline per item) and the format score.

    Each item is one task of a pebble ProcessPool (a process pool with per-task timeouts): the check runs
    in a worker's main thread, where math-verify's own `signal.alarm` limits work, and the deadline counts
    from when a worker starts the item, not from when the request came in. An item that runs over (C code
    that no alarm interrupts, e.g. sympy on a pathological expression) counts as not verified, and pebble
    replaces only the worker that ran it: the other items of its request, and other requests' items on this
    replica, keep their workers and their own deadlines. The stdlib Pool has no per-task timeout and can
    only be replaced whole, which fails every in-flight item with the late one.
    """

    def __init__(self, processes: int, timeout_s: float, format_name: str):
        self.timeout_s = timeout_s
        self.format_score = FORMAT_SCORERS[format_name]
        # spawn, not fork: the replica process runs threads (Ray's), which fork would copy mid-state.
        self._pool = ProcessPool(max_workers=processes, initializer=warm_up,
                                 context=multiprocessing.get_context("spawn"))  # fmt: skip
        self._stats = {"checked": 0, "timeouts": 0, "crashes": 0}

    async def check(self, items: list) -> list:
        """[(assistant turn, reference)] -> [{"correct": bool | None, "format": float}], in order."""
        return list(await asyncio.gather(*(self._check_one(text, ref) for text, ref in items)))

    async def _check_one(self, text: str, reference) -> dict:
        correct = None
        if reference is not None:
            # math-verify stops each of its calls after a third of the item's deadline; the deadline itself
            # covers what no alarm can stop.
            task = self._pool.schedule(check_answer, (text, reference, self.timeout_s / 3), timeout=self.timeout_s)
            try:
                correct = bool(await asyncio.wrap_future(task))
            except TimeoutError:
                self._stats["timeouts"] += 1
                correct = False
            except ProcessExpired:  # the worker died under the item (e.g. out of memory); pebble starts another
                self._stats["crashes"] += 1
                correct = False
        self._stats["checked"] += 1
        return {"correct": correct, "format": self.format_score(text)}

    async def stats(self) -> dict:
        return dict(self._stats)

    def __del__(self):
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.stop()


@serve.deployment(name="RewardService")
@serve.ingress(app)
class RewardService:
    """The HTTP face: checks requests, asks the verifier and reward models, adds the reward up."""

    def __init__(self, rv: DeploymentHandle, cd: DeploymentHandle, verifier: DeploymentHandle, cfg: RewardConfig):
        self.models = {name: handle for name, handle in (("rv", rv), ("cd", cd)) if handle is not None}
        self.verifier = verifier
        self.cfg = cfg
        self.weights = RewardWeights.from_config(cfg)

    @app.get("/health")
    async def http_health(self) -> dict:
        return {"status": "ok", "models": sorted(self.models), "setting": self.cfg.setting}

    @app.post("/v1/rewards")
    async def http_rewards(self, request: Request) -> dict:
        check_api_key(request, self.cfg.serve.api_key)
        items, setting = parse_rewards_request(await json_body(request), self.cfg.max_items)
        setting = setting or self.cfg.setting
        return rewards_response(await self.score(items, setting), setting)

    @app.post("/get_reward")
    async def http_get_reward(self, request: Request) -> dict:
        check_api_key(request, self.cfg.serve.api_key)
        items = parse_openrlhf_request(await json_body(request), self.cfg.max_items)
        return openrlhf_response(await self.score(items, self.cfg.setting))

    async def score(self, items: list, setting: str) -> list:
        """Every item's reward and parts (handle-callable; raises ProtocolError for an unservable setting)."""
        terms = self.cfg.terms(setting)
        missing = [t for t in terms if t not in self.models]
        if missing:
            raise ProtocolError(f"setting '{setting}' needs a {missing[0].upper()} reward model; this service "
                                f"has {sorted(self.models) or 'none'}", param="setting")  # fmt: skip
        turns = [it.assistant_turn(self.cfg.think_opened) for it in items]
        checks = self.verifier.check.remote([(turn, it.reference) for turn, it in zip(turns, items)])
        # One call per item and model: the model replicas batch them (with other requests' items).
        scores = {name: [handle.score.remote(it.prompt, it.response) for it in items]
                  for name, handle in self.models.items()}  # fmt: skip
        checked = await checks
        values = {name: await asyncio.gather(*calls) for name, calls in scores.items()}
        return [score_item(c["format"], c["correct"], values["rv"][i] if "rv" in values else None,
                           values["cd"][i] if "cd" in values else None, terms, self.weights)
                for i, c in enumerate(checked)]  # fmt: skip


def build_reward_app(cfg: RewardConfig) -> serve.Application:
    """The reward app: a RewardModel deployment per configured model, the Verifier, the ingress."""
    s = cfg.serve
    options = s.deployment_options()
    models = {}
    for name in ("rv", "cd"):
        folder = getattr(cfg, f"{name}_model")
        if folder:
            deployment = RewardModelDeployment.options(name=f"RewardModel-{name}", **options)
            models[name] = deployment.bind(str(Path(folder).resolve()), s)
    verifier = VerifierDeployment.options(**options).bind(cfg.verifier_processes, cfg.verify_timeout_s, cfg.format)
    ingress = RewardService.options(**{**options, "ray_actor_options": {"num_cpus": INGRESS_CPUS}})
    return ingress.bind(models.get("rv"), models.get("cd"), verifier, cfg)


@dataclass
class RewardEndpoint:
    """Where the reward service answers: base URL (+ /v1/rewards, /get_reward, /health) and the ingress handle."""

    app_name: str
    base_url: str
    handle: DeploymentHandle
    api_key: str | None


def deploy_reward(cfg: RewardConfig, app_name: str = "reward") -> RewardEndpoint:
    """Deploy (or redeploy) the reward app at `/{app_name}` and wait until it is running."""
    cfg.check_model_folders()
    host, port = start_proxy(cfg.serve)
    handle = serve.run(build_reward_app(cfg), name=app_name, route_prefix=f"/{app_name}")
    return RewardEndpoint(app_name, f"http://{host}:{port}/{app_name}", handle, cfg.serve.api_key)


def undeploy_reward(app_name: str = "reward") -> None:
    """Delete the app (its replicas and verifier processes stop); Serve itself keeps running."""
    serve.delete(app_name)
