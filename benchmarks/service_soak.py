"""Benchmark: the teacher and then the reward service under a steady load with malformed requests mixed in.

On an embedded Ray cluster (loopback only), each service in turn gets --clients closed-loop clients (threads,
one httpx.Client each) for --seconds. A share (--malformed-share) of the requests is malformed, cycling through
a fixed catalogue of faults (body not JSON, a missing or mistyped field, a value out of range, an unknown model
or setting, a prompt longer than the context, too many items, a wrong API key); the rest are valid requests.
Both services run with an API key, so the valid requests also prove the key is accepted and the wrong one is not.

It reports, per service: requests sent, answers by class (2xx, 4xx, 5xx, transport error), what each malformed
kind got, and the p50 / p99 latency of the valid requests; and it checks that every malformed request got a
4xx, no request got a 5xx or a transport error, every valid request got a 200, and no replica restarted (the
PIDs of the app's replica processes are the same before and after). The load always stops by itself: at
--seconds, or at --max-requests per service.

    python benchmarks/service_soak.py           # smollm2-135m-instruct teacher, 32 clients x 60 s per service
    python benchmarks/service_soak.py --quick   # tiny random model, 8 clients x 8 s per service: a smoke test

Prints a table per service, then as the last line one JSON object: {"teacher": {...}, "reward": {...},
"checks": {...}, "ok": bool, "settings": {...}}. Exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from bench_common import fill_defaults, free_loopback_port, percentile, ray_state_dir  # this folder is on sys.path

DEFAULTS = dict(model="builtin:smollm2-135m-instruct", clients=32, seconds=60.0, max_requests=20000)
QUICK = dict(model="tiny:smollm2", clients=8, seconds=8.0, max_requests=2000)
KEY = "soak-key"
TEACHER_APP, REWARD_APP = "soak-teacher", "soak-reward"
MAX_REWARD_ITEMS = 16

# One request: (body bytes, extra headers). Each malformed kind names the fault it carries.
Request = tuple[bytes, dict]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help=f"teacher model spec (default {DEFAULTS['model']}; --quick {QUICK['model']})")
    p.add_argument("--quick", action="store_true", help="tiny model, 8 clients, 8 s per service: a smoke test")
    p.add_argument("--clients", type=int, help="concurrent closed-loop clients per service (default 32; --quick 8)")
    p.add_argument("--seconds", type=float, help="load time per service (default 60; --quick 8)")
    p.add_argument("--max-requests", type=int, help="cap on requests per service (default 20000; --quick 2000)")
    p.add_argument("--malformed-share", type=float, default=0.2, help="share of malformed requests (default 0.2)")
    p.add_argument("--max-tokens", type=int, default=8, help="max_tokens of the valid teacher requests (default 8)")
    p.add_argument("--request-timeout", type=float, default=120.0, help="per-request HTTP timeout, seconds")
    p.add_argument("--seed", type=int, default=11, help="seed of the valid/malformed draw and of sampling")
    p.add_argument("--port", type=int, default=0, help="Serve proxy port on 127.0.0.1 (default: a free one)")
    args = p.parse_args(argv)
    fill_defaults(args, DEFAULTS, QUICK)
    if args.clients < 1 or args.max_requests < 1 or args.seconds <= 0:
        p.error("--clients and --max-requests must be at least 1 and --seconds positive")
    if not 0 <= args.malformed_share <= 1:
        p.error(f"--malformed-share must be within [0, 1], got {args.malformed_share}")
    if args.port == 0:
        args.port = free_loopback_port()
    return args


def log(message: str) -> None:
    logging.getLogger("soak").info(message)


# ---- what is sent --------------------------------------------------------------------------------


def _json(body) -> bytes:
    return json.dumps(body).encode()


def teacher_requests(served_name: str, max_tokens: int, context_tokens: int) -> tuple[Callable[[int], Request],
                                                                                       dict[str, Request]]:  # fmt: skip
    """The valid chat request (by seed) and the malformed ones, by kind."""

    def chat(**over) -> dict:
        return {"model": served_name, "messages": [{"role": "user", "content": "Name three prime numbers."}],
                "max_tokens": max_tokens, "temperature": 0.7, **over}  # fmt: skip

    def valid(seed: int) -> Request:
        return _json(chat(seed=seed)), {}

    too_long = " ".join(["seven"] * (context_tokens + 64))  # each word is at least one token
    bad = {
        "body not JSON": (b'{"model": "x", "messages": [', {}),
        "body a JSON list": (_json([chat()]), {}),
        "no messages": (_json({"model": served_name, "max_tokens": max_tokens}), {}),
        "message without content": (_json(chat(messages=[{"role": "user"}])), {}),
        "unknown role": (_json(chat(messages=[{"role": "wizard", "content": "hi"}])), {}),
        "max_tokens a string": (_json(chat(max_tokens="many")), {}),
        "negative temperature": (_json(chat(temperature=-1)), {}),
        "n = 0": (_json(chat(n=0)), {}),
        "top_logprobs = 99": (_json(chat(logprobs=True, top_logprobs=99)), {}),
        "unknown model": (_json(chat(model="no-such-model")), {}),
        "prompt over the context": (_json(chat(messages=[{"role": "user", "content": too_long}])), {}),
        "wrong API key": (_json(chat()), {"Authorization": "Bearer not-the-key"}),
    }
    return valid, bad


def reward_requests() -> tuple[Callable[[int], Request], dict[str, Request]]:
    """The valid /v1/rewards request (4 items) and the malformed ones, by kind."""

    def items(n: int, seed: int = 0) -> list[dict]:
        return [{"prompt": f"What is {a}+{a}?", "reference": str(2 * a),
                 "response": f"<think>{a} twice is {2 * a}.</think><answer>\\boxed{{{2 * a + (a % 2)}}}</answer>"}
                for a in range(seed, seed + n)]  # fmt: skip

    def valid(seed: int) -> Request:
        return _json({"items": items(4, seed % 100)}), {}

    bad = {
        "body not JSON": (b'{"items": [', {}),
        "no items": (_json({"setting": "vanilla"}), {}),
        "items not a list": (_json({"items": "all of them"}), {}),
        "response not a string": (_json({"items": [{"prompt": "p", "response": 7}]}), {}),
        "item without prompt": (_json({"items": [{"response": "r"}]}), {}),
        "unknown setting": (_json({"items": items(1), "setting": "best"}), {}),
        "too many items": (_json({"items": items(MAX_REWARD_ITEMS + 1)}), {}),
        "wrong API key": (_json({"items": items(1)}), {"Authorization": "Bearer not-the-key"}),
    }
    return valid, bad


# ---- the load -------------------------------------------------------------------------------------


class Soak:
    """Closed-loop clients posting to one URL: each request is malformed with probability `share` (the kinds in
    turn, so a short run still sends every kind), else valid. Records (kind, status, latency ms, error)."""

    def __init__(self, args, url: str, valid: Callable[[int], Request], bad: dict[str, Request]):
        self.args, self.url, self.valid, self.bad = args, url, valid, bad
        self.records: list[tuple[str, int | None, float, str | None]] = []
        self._lock, self._sent = threading.Lock(), 0
        self._kinds = itertools.cycle(sorted(bad))
        self._deadline = time.perf_counter() + args.seconds

    def run(self) -> float:
        started = time.perf_counter()
        threads = [threading.Thread(target=self._loop, args=(i,), daemon=True) for i in range(self.args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=self.args.seconds + self.args.request_timeout + 10)
        return time.perf_counter() - started

    def _next(self, rng: random.Random) -> tuple[str, Request] | None:
        with self._lock:
            if self._sent >= self.args.max_requests or time.perf_counter() >= self._deadline:
                return None
            self._sent += 1
            if rng.random() < self.args.malformed_share:
                kind = next(self._kinds)
                return kind, self.bad[kind]
            return "valid", self.valid(self.args.seed + self._sent)

    def _loop(self, index: int) -> None:
        import httpx

        rng = random.Random(self.args.seed * 1000 + index)
        headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
        # trust_env=False: no proxy from the environment; every request stays on loopback.
        with httpx.Client(timeout=self.args.request_timeout, trust_env=False) as client:
            while (item := self._next(rng)) is not None:
                kind, (body, extra) = item
                start = time.perf_counter()
                try:
                    status, error = client.post(self.url, content=body, headers={**headers, **extra}).status_code, None
                except Exception as exc:  # noqa: BLE001 - a transport error is a result here, counted by class
                    status, error = None, type(exc).__name__
                with self._lock:
                    self.records.append((kind, status, (time.perf_counter() - start) * 1000, error))


# ---- replicas --------------------------------------------------------------------------------------


def replica_pids(app: str) -> dict[int, str]:
    """PID -> process title of every Serve replica of `app` on this machine (Ray titles a replica's process
    `ray::ServeReplica:<app>:<deployment>`). A replaced replica shows up as a new PID."""
    found = {}
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            title = cmdline.read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:  # exited while we looked
            continue
        if title.startswith(f"ray::ServeReplica:{app}:"):
            found[int(cmdline.parent.name)] = title.split(".", 1)[0].removeprefix("ray::")
    return found


# ---- figures ------------------------------------------------------------------------------------------


def answer_class(status: int | None, error: str | None) -> str:
    if status is None:
        return f"transport:{error}"
    return f"{status // 100}xx"


def service_figures(records: list[tuple], seconds: float, before: dict, after: dict) -> dict:
    valid = [r for r in records if r[0] == "valid"]
    latencies = [r[2] for r in valid if r[1] == 200]
    malformed: dict[str, Counter] = {}
    for kind, status, _, error in records:
        if kind != "valid":
            malformed.setdefault(kind, Counter())[str(status) if status is not None else f"transport:{error}"] += 1
    return {
        "seconds": round(seconds, 2),
        "requests": len(records),
        "requests_per_s": round(len(records) / max(seconds, 1e-9), 2),
        "by_class": dict(Counter(answer_class(s, e) for _, s, _, e in records)),
        "valid": {"requests": len(valid), "ok": sum(1 for r in valid if r[1] == 200),
                  **{f"p{q}_ms": None if (v := percentile(latencies, q)) is None else round(v, 1) for q in (50, 99)}},
        "malformed": {kind: dict(counts) for kind, counts in sorted(malformed.items())},
        "replicas_before": sorted(before.values()),
        "replicas_restarted": sorted(title for pid, title in before.items() if pid not in after),
    }  # fmt: skip


def checks(figures: dict, kinds: dict[str, list[str]]) -> dict[str, bool]:
    out = {}
    for name, f in figures.items():
        statuses = [s for counts in f["malformed"].values() for s in counts]
        out[f"{name}: every malformed request got a 4xx"] = all(s.isdigit() and s.startswith("4") for s in statuses)
        out[f"{name}: every malformed kind was sent"] = sorted(f["malformed"]) == sorted(kinds[name])
        out[f"{name}: no 5xx and no transport error"] = set(f["by_class"]) <= {"2xx", "4xx"}
        out[f"{name}: every valid request got a 200"] = f["valid"]["ok"] == f["valid"]["requests"] > 0
        out[f"{name}: no replica restarted"] = not f["replicas_restarted"] and bool(f["replicas_before"])
    return out


def print_table(name: str, f: dict) -> None:
    v = f["valid"]
    fmt = lambda x: "-" if x is None else f"{x:.0f}"  # noqa: E731 - a one-line formatter
    print(f"{name}: {f['requests']} requests in {f['seconds']:.1f} s ({f['requests_per_s']:.1f}/s); answers "
          + ", ".join(f"{k} {n}" for k, n in sorted(f["by_class"].items()))
          + f"; valid {v['ok']}/{v['requests']} ok, p50 {fmt(v['p50_ms'])} ms, p99 {fmt(v['p99_ms'])} ms; "
          f"replicas {len(f['replicas_before'])}, restarted {len(f['replicas_restarted'])}")
    for kind, counts in f["malformed"].items():
        print(f"  {kind:<26}" + ", ".join(f"{status} x{n}" for status, n in sorted(counts.items())))


# ---- orchestration ------------------------------------------------------------------------------------


def soak_service(args, app: str, url: str, valid, bad) -> dict:
    import httpx

    body, extra = valid(args.seed)
    warm = httpx.post(url, content=body, headers={"Authorization": f"Bearer {KEY}", **extra},
                      timeout=args.request_timeout, trust_env=False)  # fmt: skip
    warm.raise_for_status()  # not counted: the first request pays one-time costs
    before = replica_pids(app)
    log(f"{app}: {args.clients} clients for {args.seconds:g} s, replicas {sorted(before.values())}")
    soak = Soak(args, url, valid, bad)
    seconds = soak.run()
    return service_figures(soak.records, seconds, before, replica_pids(app))


def measure(args: argparse.Namespace, state_dir: Path) -> dict:
    from ray import serve
    from transformers import AutoConfig

    from cluster.embedded import ray_session
    from distill_ray.config import RayConfig
    from distill_ray.config.reward import RewardConfig
    from distill_ray.config.serving import ServeConfig
    from distill_ray.models.loading import resolve_model
    from serve.reward import deploy_reward
    from serve.teacher import deploy_teacher

    figures, kinds = {}, {}
    with ray_session(RayConfig(state_dir=str(state_dir), num_cpus=2)):
        # One replica each, no autoscaling: a restart can only be a crash. Access logs off (a line per request).
        fixed = dict(host="127.0.0.1", port=args.port, api_key=KEY, min_replicas=1, max_replicas=1,
                     access_log=False, max_ongoing_requests=max(8, args.clients), torch_threads=1)  # fmt: skip
        try:
            teacher = deploy_teacher(args.model, ServeConfig(num_cpus=0.5, **fixed), app_name=TEACHER_APP)
            context = AutoConfig.from_pretrained(resolve_model(args.model)).max_position_embeddings
            valid, bad = teacher_requests(teacher.served_name, args.max_tokens, context)
            kinds["teacher"] = sorted(bad)
            figures["teacher"] = soak_service(args, TEACHER_APP, f"{teacher.base_url}/chat/completions", valid, bad)
            serve.delete(TEACHER_APP)
            reward_cfg = RewardConfig(setting="vanilla", max_items=MAX_REWARD_ITEMS, verifier_processes=1,
                                      serve={**fixed, "num_cpus": 0.5})  # fmt: skip
            reward = deploy_reward(reward_cfg, app_name=REWARD_APP)
            valid, bad = reward_requests()
            kinds["reward"] = sorted(bad)
            figures["reward"] = soak_service(args, REWARD_APP, f"{reward.base_url}/v1/rewards", valid, bad)
        finally:
            for app in (TEACHER_APP, REWARD_APP):
                try:
                    serve.delete(app)
                except Exception as exc:  # noqa: BLE001 - Ray's shutdown below removes it anyway
                    log(f"deleting {app} failed: {exc}")
    result = {**figures, "checks": checks(figures, kinds)}
    result["ok"] = all(result["checks"].values())
    result["settings"] = {**vars(args), "cpu_count": os.cpu_count()}
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[soak] %(message)s", stream=sys.stderr)
    with ray_state_dir("soak") as state_dir:
        result = measure(args, state_dir)
    for name in ("teacher", "reward"):
        print_table(name, result[name])
    for check, passed in result["checks"].items():
        print(f"{'ok  ' if passed else 'FAIL'} {check}")
    print(json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
