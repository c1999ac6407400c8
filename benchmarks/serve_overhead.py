"""Benchmark: what a Ray Serve handle call and an HTTP call add to one teacher generation.

The same chat request (fixed prompt, temperature 0, fixed seed, n=1, a few max_tokens) is timed
three ways, each at concurrency 1 and 8, `--requests` times per way and concurrency:
  direct: in-process, no Ray: a `GenerationEngine` built as the replica builds it, the body turned
          into a `GenRequest` as `TeacherDeployment.chat` does, then `engine.generate`. At
          concurrency 1 one request per call. At concurrency 8 it is defined as 8 requests run as
          ONE engine batch (what an ideal batcher achieves); each of them counts that call's time.
  handle: `endpoint.handle.chat.remote(body).result()` on the teacher deployed by `deploy_teacher`.
  http:   POST of the same body to `{base_url}/chat/completions` over loopback (httpx).
Handle and HTTP run closed loops: `concurrency` threads each send one request after another until
the fixed total is sent. Ray start-up, the deployment and the model loads are not timed; every way
gets one warm-up request first. The engine's work is the same every way, so the p50 ratios
(handle/direct, http/direct) and p50 differences (overhead ms per request) are Serve's cost. At
concurrency 1 that cost includes Serve's batch wait: a lone request waits up to `--batch-wait-ms`
for company before its batch runs (`--batch-wait-ms 0` shows the rest).

    python benchmarks/serve_overhead.py --requests 40 --max-tokens 16
    python benchmarks/serve_overhead.py --quick      # tiny random model, a smoke test

Prints a table, then as the last line one JSON object (direct/handle/http _p50_ms/_p95_ms, the
same with _c8, handle_over_direct, http_over_direct, *_overhead_ms, requests, failed_requests, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# this folder is on sys.path
from bench_common import chat_sequences, fill_defaults, free_loopback_port, percentile, ray_state_dir

DEFAULTS = dict(model="builtin:smollm2-135m-instruct", requests=40, max_tokens=16)
QUICK = dict(model="tiny:smollm2", requests=8, max_tokens=8)
APP_NAME = "bench-overhead"
WAYS = ("direct", "handle", "http")
CONCURRENCIES = (1, 8)
PROMPT = "Count from 1 to 40, separated by commas."  # long enough that greedy decoding rarely stops early


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help=f"teacher model spec (default {DEFAULTS['model']}; --quick {QUICK['model']})")
    p.add_argument("--requests", type=int, help="timed requests per way and concurrency (default 40; --quick 8)")
    p.add_argument("--max-tokens", type=int, help="max_tokens of the request (default 16; --quick 8)")
    p.add_argument("--torch-threads", type=int, default=1, help="torch threads, replica and direct engine")
    p.add_argument("--batch-wait-ms", type=float, default=50.0, help="Serve batch_wait_timeout in ms (default 50)")
    p.add_argument("--seed", type=int, default=7, help="the request's seed (default 7)")
    p.add_argument("--quick", action="store_true", help="tiny model and few requests: a smoke test")
    args = p.parse_args(argv)
    fill_defaults(args, DEFAULTS, QUICK)
    for key in ("requests", "max_tokens", "torch_threads"):
        if getattr(args, key) < 1:
            p.error(f"--{key.replace('_', '-')} must be at least 1, got {getattr(args, key)}")
    if args.batch_wait_ms < 0:
        p.error(f"--batch-wait-ms must be at least 0, got {args.batch_wait_ms}")
    return args




def chat_body(served_name: str, args: argparse.Namespace) -> dict:
    return {
        "model": served_name, "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": args.max_tokens, "temperature": 0, "seed": args.seed, "n": 1,
    }  # fmt: skip




# ---- the three ways: each returns (latencies in ms of the requests that succeeded, failures) -----


def run_direct(engine, body: dict, requests: int, concurrency: int) -> tuple[list[float], int]:
    """Batches of `concurrency` requests through the engine; a request's latency is its batch's time."""
    latencies, failures, left = [], 0, requests
    while left:
        size = min(concurrency, left)
        started = time.perf_counter()
        try:  # the body is parsed per request, as the replica does
            engine.generate([seq for _ in range(size) for seq in chat_sequences(engine, body)])
            latencies.extend([(time.perf_counter() - started) * 1000] * size)
        except Exception as exc:
            failures += size
            print(f"[bench] direct batch failed: {exc}", file=sys.stderr, flush=True)
        left -= size
    return latencies, failures


def closed_loop(send, requests: int, concurrency: int) -> tuple[list[float], int]:
    """`concurrency` threads each call `send()` one after another until `requests` calls are made."""
    latencies, failures, lock = [], [0], threading.Lock()
    tickets = iter(range(requests))

    def worker() -> None:
        while True:
            with lock:
                if next(tickets, None) is None:
                    return
            started = time.perf_counter()
            try:
                send()
                elapsed = (time.perf_counter() - started) * 1000
                with lock:
                    latencies.append(elapsed)
            except Exception as exc:
                with lock:
                    failures[0] += 1
                print(f"[bench] request failed: {exc}", file=sys.stderr, flush=True)

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="bench-client") as pool:
        for future in [pool.submit(worker) for _ in range(concurrency)]:
            future.result()
    return latencies, failures[0]


def completion_tokens(response: dict) -> int:
    """The answer's completion token count; raises if the answer is not a chat completion."""
    if not response.get("choices"):
        raise RuntimeError(f"not a chat completion: {str(response)[:200]}")
    return int(response["usage"]["completion_tokens"])


def handle_sender(endpoint, body: dict):
    return lambda: completion_tokens(endpoint.handle.chat.remote(body).result(timeout_s=120))


def http_sender(client, url: str, body: dict):
    def send() -> int:
        response = client.post(url, json=body)
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
        return completion_tokens(response.json())

    return send


# ---- orchestration --------------------------------------------------------------------------------


def timed(label: str, startup: dict, fn):
    started = time.perf_counter()
    value = fn()
    startup[label] = round(time.perf_counter() - started, 2)
    print(f"[bench] {label}: {startup[label]:.1f}s", file=sys.stderr, flush=True)
    return value


def serve_config(args: argparse.Namespace):
    from distill_ray.config.serving import ServeConfig

    return ServeConfig(host="127.0.0.1", port=free_loopback_port(), max_batch_size=max(CONCURRENCIES),
                       batch_wait_timeout_s=args.batch_wait_ms / 1000, num_cpus=0.5,
                       torch_threads=args.torch_threads, min_replicas=1, max_replicas=1)  # fmt: skip


def measure(args: argparse.Namespace, state_dir: Path) -> dict:
    """Start Ray and the teacher, load the direct engine, warm each way, then time all ways per concurrency."""
    import httpx
    from ray import serve

    from cluster.embedded import ray_session
    from distill_ray.config import RayConfig
    from distill_ray.models.engine import GenerationEngine
    from distill_ray.models.loading import resolve_model
    from serve.teacher import deploy_teacher

    startup, tokens = {}, {}
    model_dir = timed("model_resolve", startup, lambda: resolve_model(args.model))
    with ray_session(RayConfig(state_dir=str(state_dir), num_cpus=2)):
        try:
            endpoint = timed("serve_deploy", startup, lambda: deploy_teacher(args.model, serve_config(args), APP_NAME))
            body = chat_body(endpoint.served_name, args)
            engine = timed("direct_engine_load", startup,
                           lambda: GenerationEngine(model_dir, torch_threads=args.torch_threads))  # fmt: skip
            with httpx.Client(timeout=120, trust_env=False, limits=httpx.Limits(max_connections=16)) as client:
                send = {"handle": handle_sender(endpoint, body),
                        "http": http_sender(client, f"{endpoint.base_url}/chat/completions", body)}  # fmt: skip
                tokens["direct"] = timed("direct_warmup", startup,
                                         lambda: engine.generate(chat_sequences(engine, body))[0].completion_tokens)
                tokens["handle"] = timed("handle_warmup", startup, send["handle"])
                tokens["http"] = timed("http_warmup", startup, send["http"])
                timings = time_all_ways(engine, body, send, args.requests)
        finally:
            try:
                serve.delete(APP_NAME)
            except Exception as exc:  # cleanup must not mask the real error; Ray's shutdown follows anyway
                print(f"[bench] could not delete the app: {exc}", file=sys.stderr, flush=True)
    return summarize(args, timings, tokens, startup)


def time_all_ways(engine, body: dict, send: dict, requests: int) -> dict:
    """{(way, concurrency): (latencies ms, failures, Serve's mean batch or None)}, ways interleaved per concurrency."""
    timings = {}
    for concurrency in CONCURRENCIES:
        for way in WAYS:
            print(f"[bench] {way} c{concurrency}: {requests} requests ...", file=sys.stderr, flush=True)
            before = replica_stats(APP_NAME)
            if way == "direct":
                latencies, failed = run_direct(engine, body, requests, concurrency)
            else:
                latencies, failed = closed_loop(send[way], requests, concurrency)
            timings[(way, concurrency)] = (latencies, failed, mean_batch(before, replica_stats(APP_NAME)))
    return timings


def replica_stats(app_name: str) -> dict | None:
    """The decoding replica's batching counters, if it exposes them (best effort: None if not)."""
    try:
        from ray import serve

        from serve.teacher import TEACHER_DEPLOYMENT

        return serve.get_deployment_handle(TEACHER_DEPLOYMENT, app_name).stats.remote().result(timeout_s=30)
    except Exception:
        return None


def mean_batch(before: dict | None, after: dict | None) -> float | None:
    if not before or not after or after["batches"] == before["batches"]:
        return None
    return round((after["sequences"] - before["sequences"]) / (after["batches"] - before["batches"]), 2)


# ---- results --------------------------------------------------------------------------------------




def ratio(num: float | None, den: float | None) -> float | None:
    return round(num / den, 3) if num is not None and den else None


def difference(a: float | None, b: float | None) -> float | None:
    return round(a - b, 2) if a is not None and b is not None else None


def summarize(args: argparse.Namespace, timings: dict, tokens: dict, startup: dict) -> dict:
    result: dict = {}
    for concurrency in CONCURRENCIES:
        suffix = "" if concurrency == 1 else f"_c{concurrency}"
        p50 = {}
        for way in WAYS:
            latencies, _, batch = timings[(way, concurrency)]
            p50[way] = percentile(latencies, 50)
            p95 = percentile(latencies, 95)
            result[f"{way}_p50_ms{suffix}"] = round(p50[way], 2) if p50[way] is not None else None
            result[f"{way}_p95_ms{suffix}"] = round(p95, 2) if p95 is not None else None
            if way != "direct":
                result[f"{way}_mean_batch{suffix}"] = batch
        for way in ("handle", "http"):
            result[f"{way}_over_direct{suffix}"] = ratio(p50[way], p50["direct"])
            result[f"{way}_overhead_ms{suffix}"] = difference(p50[way], p50["direct"])
    return {
        **result,
        "requests": args.requests,
        "requests_total": sum(len(lat) + failed for lat, failed, _ in timings.values()),
        "failed_requests": sum(failed for _, failed, _ in timings.values()),
        "model": args.model,
        "max_tokens": args.max_tokens,
        "torch_threads": args.torch_threads,
        "completion_tokens": tokens,
        "startup_seconds": startup,
        "settings": {
            "prompt": PROMPT, "temperature": 0, "seed": args.seed, "n": 1, "concurrencies": list(CONCURRENCIES),
            "max_batch_size": max(CONCURRENCIES), "batch_wait_ms": args.batch_wait_ms, "num_cpus_replica": 0.5,
            "ray_num_cpus": 2, "cpu_count": os.cpu_count(),
        },
    }  # fmt: skip


def fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def print_table(r: dict) -> None:
    s = r["settings"]
    print(f"serve overhead: {r['requests']} requests per way and concurrency, model {r['model']}, "
          f"max_tokens {r['max_tokens']}, torch threads {r['torch_threads']}, batch wait {s['batch_wait_ms']:g} ms")
    print("startup, not counted: " + ", ".join(f"{k} {v:.1f}s" for k, v in r["startup_seconds"].items()))
    print("completion tokens (warm-up): " + ", ".join(f"{k} {v}" for k, v in r["completion_tokens"].items()))
    print(f"{'way':<8}{'conc':>5}{'p50 ms':>10}{'p95 ms':>10}{'x direct':>10}{'+ms/req':>10}{'mean batch':>12}")
    for concurrency in CONCURRENCIES:
        suffix = "" if concurrency == 1 else f"_c{concurrency}"
        for way in WAYS:
            over = r.get(f"{way}_over_direct{suffix}", 1.0 if way == "direct" else None)
            extra = r.get(f"{way}_overhead_ms{suffix}", 0.0 if way == "direct" else None)
            batch = r.get(f"{way}_mean_batch{suffix}", concurrency if way == "direct" else None)
            print(f"{way:<8}{concurrency:>5}{fmt(r[f'{way}_p50_ms{suffix}'], '.2f'):>10}"
                  f"{fmt(r[f'{way}_p95_ms{suffix}'], '.2f'):>10}{fmt(over, '.3f'):>10}{fmt(extra, '+.2f'):>10}"
                  f"{fmt(batch, '.2f'):>12}")
    print(f"at concurrency 1 Serve's overhead includes up to {s['batch_wait_ms']:g} ms of batch wait; "
          f"failed requests: {r['failed_requests']} of {r['requests_total']}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with ray_state_dir("bench-ovh") as state_dir:
        result = measure(args, state_dir)
    print_table(result)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
