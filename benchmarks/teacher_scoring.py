"""Benchmark (issue 18 item 6): teacher scoring throughput through the Serve teacher against the engine alone.

The same token-id sequences (fixed length, windows over chat-formatted arithmetic questions and answers, as a
student's prompt + rollout would be) are scored two ways, at each batch size B:
  direct: in-process `GenerationEngine.score(batch, k)` on batches of B sequences, with the replica's torch threads;
  serve:  one closed-loop HTTP client sending `/v1/completions` requests of B token-id prompts each, with
          `echo: true, max_tokens: 0, logprobs: k` (the legacy scoring form on-policy distillation uses), to a teacher
          deployed with `max_batch_size = B` (redeployed per B), so the replica scores each request's B prompts in
          one forward pass; the time includes building, sending and parsing the JSON.
Scored tokens are the positions that get a log-probability (length - 1 per sequence). Ray start-up, deployments
and model loads are not timed; each side gets one warm-up batch first. The serve side's numbers are checked
against the direct ones (`max_abs_logprob_diff`), and `serve_mean_batch` (the replica's counters) shows whether its
batches were full.

    python benchmarks/teacher_scoring.py                  # SmolLM2-135M, 128-token sequences, B = 1 and 8
    python benchmarks/teacher_scoring.py --quick          # tiny random model, a smoke test

Prints a table, then as the last line one JSON object (per batch size: direct/serve tokens/s and
serve_over_direct = serve tokens/s / direct tokens/s; settings and start-up seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from bench_common import fill_defaults, free_loopback_port, ray_state_dir  # this folder is on sys.path

DEFAULTS = dict(model="builtin:smollm2-135m-instruct", length=128, sequences=48)
QUICK = dict(model="tiny:smollm2", length=32, sequences=8)
APP_NAME = "bench-scoring"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help=f"teacher model spec (default {DEFAULTS['model']}; --quick {QUICK['model']})")
    p.add_argument("--length", type=int, help="tokens per sequence (default 128; --quick 32)")
    p.add_argument("--sequences", type=int, help="sequences scored per side and batch size (default 48; --quick 8)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8], help="batch sizes B (default 1 8)")
    p.add_argument("--top-logprobs", type=int, default=5, help="alternatives per token, the request's logprobs")
    p.add_argument("--torch-threads", type=int, default=2, help="torch threads, replica and direct engine")
    p.add_argument("--batch-wait-ms", type=float, default=50.0, help="Serve batch_wait_timeout in ms (default 50)")
    p.add_argument("--quick", action="store_true", help="tiny model and few sequences: a smoke test")
    args = p.parse_args(argv)
    fill_defaults(args, DEFAULTS, QUICK)
    for key, least in (("length", 2), ("sequences", 1), ("torch_threads", 1)):
        if getattr(args, key) < least:
            p.error(f"--{key.replace('_', '-')} must be at least {least}, got {getattr(args, key)}")
    if any(b < 1 for b in args.batch_sizes) or not 0 <= args.top_logprobs <= 20:
        p.error("--batch-sizes must be >= 1 and --top-logprobs in 0..20")
    return args


def student_sequences(engine, count: int, length: int) -> list[list[int]]:
    """`count` distinct windows of `length` token ids over chat-formatted arithmetic questions with worked answers."""
    from distill_ray.data.sources import procedural_arithmetic

    stream: list[int] = []
    for row in procedural_arithmetic(max(64, count * length // 40), seed=7):
        chat = engine.chat_prompt_ids([{"role": "user", "content": row["question"]}])
        worked = f"{row['question'].removeprefix('What is ').rstrip('?')} = {row['answer']}"
        answer = f"Let me work it out step by step. {worked}. The answer is {row['answer']}."
        stream += chat + engine.text_prompt_ids(answer)
    stride = max(1, (len(stream) - length) // count)
    return [stream[i * stride : i * stride + length] for i in range(count)]


def batches(sequences: list[list[int]], size: int) -> list[list[list[int]]]:
    return [sequences[i : i + size] for i in range(0, len(sequences), size)]


def scored_tokens(sequences: list[list[int]]) -> int:
    return sum(len(s) - 1 for s in sequences)


# ---- the two sides ----------------------------------------------------------------------------------------


def run_direct(engine, sequences: list[list[int]], size: int, k: int) -> tuple[float, list[list[float]]]:
    """Seconds to score every batch of `size` in-process, and the first batch's logprobs (to compare)."""
    started, first = time.perf_counter(), None
    for batch in batches(sequences, size):
        scored = engine.score(batch, k)
        first = first or [[e.logprob for e in row[1:]] for row in scored]
    return time.perf_counter() - started, first


def scoring_body(served_name: str, batch: list[list[int]], k: int) -> dict:
    return {"model": served_name, "prompt": batch, "echo": True, "max_tokens": 0, "logprobs": k}


def run_serve(client, url: str, served_name: str, sequences: list[list[int]], size: int, k: int):
    """Seconds for one client to score every batch of `size` over HTTP, one request per batch, and the first
    batch's logprobs."""
    started, first = time.perf_counter(), None
    for batch in batches(sequences, size):
        response = client.post(url, json=scoring_body(served_name, batch, k))
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:300]}")
        choices = response.json()["choices"]
        first = first or [c["logprobs"]["token_logprobs"][1:] for c in choices]
    return time.perf_counter() - started, first


def max_difference(a: list[list[float]], b: list[list[float]]) -> float:
    return max(abs(x - y) for row_a, row_b in zip(a, b, strict=True) for x, y in zip(row_a, row_b, strict=True))


# ---- orchestration ----------------------------------------------------------------------------------------


def timed(label: str, startup: dict, fn):
    started = time.perf_counter()
    value = fn()
    startup[label] = round(time.perf_counter() - started, 2) + startup.get(label, 0)
    print(f"[bench] {label}: {time.perf_counter() - started:.1f}s", file=sys.stderr, flush=True)
    return value


def serve_config(args: argparse.Namespace, size: int):
    from distill_ray.config.serving import ServeConfig

    return ServeConfig(host="127.0.0.1", port=args.port, max_batch_size=size, num_cpus=0.5, min_replicas=1,
                       max_replicas=1, batch_wait_timeout_s=args.batch_wait_ms / 1000,
                       torch_threads=args.torch_threads)  # fmt: skip


def measure_size(args, engine, sequences: list[list[int]], size: int, client, startup: dict) -> dict:
    """Deploy the teacher for batch size `size`, warm both sides, time direct then serve."""
    from serve.teacher import deploy_teacher

    endpoint = timed("serve_deploy", startup, lambda: deploy_teacher(args.model, serve_config(args, size), APP_NAME))
    url, name, k = f"{endpoint.base_url}/completions", endpoint.served_name, args.top_logprobs
    warm = sequences[:size]
    timed("direct_warmup", startup, lambda: run_direct(engine, warm, size, k))
    timed("serve_warmup", startup, lambda: run_serve(client, url, name, warm, size, k))
    print(f"[bench] B={size}: {len(sequences)} sequences each side ...", file=sys.stderr, flush=True)
    direct_s, direct_first = run_direct(engine, sequences, size, k)
    before = endpoint.handle.stats.remote().result(timeout_s=60)
    serve_s, serve_first = run_serve(client, url, name, sequences, size, k)
    after = endpoint.handle.stats.remote().result(timeout_s=60)
    tokens = scored_tokens(sequences)
    batches_run = after["score_batches"] - before["score_batches"]
    return {
        "batch_size": size,
        "direct_seconds": round(direct_s, 3),
        "serve_seconds": round(serve_s, 3),
        "direct_tokens_per_s": round(tokens / direct_s, 1),
        "serve_tokens_per_s": round(tokens / serve_s, 1),
        "serve_over_direct": round(direct_s / serve_s, 3),
        "serve_mean_batch": round((after["scored_sequences"] - before["scored_sequences"]) / batches_run, 2),
        "max_abs_logprob_diff": max_difference(direct_first, serve_first),
    }


def measure(args: argparse.Namespace, state_dir: Path) -> dict:
    import httpx
    from ray import serve

    from cluster.embedded import ray_session
    from distill_ray.config import RayConfig
    from distill_ray.models.engine import GenerationEngine
    from distill_ray.models.loading import resolve_model

    startup: dict = {}
    model_dir = timed("model_resolve", startup, lambda: resolve_model(args.model))
    engine = timed("direct_engine_load", startup, lambda: GenerationEngine(model_dir, torch_threads=args.torch_threads))
    sequences = student_sequences(engine, args.sequences, args.length)
    args.port = free_loopback_port()
    rows = []
    with ray_session(RayConfig(state_dir=str(state_dir), num_cpus=2)):
        try:
            with httpx.Client(timeout=300, trust_env=False) as client:
                rows = [measure_size(args, engine, sequences, size, client, startup) for size in args.batch_sizes]
        finally:
            try:
                serve.delete(APP_NAME)
            except Exception as exc:  # cleanup must not mask the real error; Ray's shutdown follows anyway
                print(f"[bench] could not delete the app: {exc}", file=sys.stderr, flush=True)
    return {
        "by_batch_size": rows,
        "scored_tokens_per_side": scored_tokens(sequences),
        "startup_seconds": startup,
        "settings": {
            "model": args.model, "sequences": args.sequences, "length": args.length,
            "top_logprobs": args.top_logprobs, "torch_threads": args.torch_threads,
            "batch_wait_ms": args.batch_wait_ms, "num_cpus_replica": 0.5, "ray_num_cpus": 2,
            "cpu_count": os.cpu_count(),
        },
    }  # fmt: skip


def print_table(r: dict) -> None:
    s = r["settings"]
    print(f"teacher scoring: {s['sequences']} sequences of {s['length']} tokens per side and batch size, "
          f"model {s['model']}, logprobs {s['top_logprobs']}, torch threads {s['torch_threads']}")  # fmt: skip
    print("startup, not counted: " + ", ".join(f"{k} {v:.1f}s" for k, v in r["startup_seconds"].items()))
    print(f"{'B':>3}{'direct tok/s':>14}{'serve tok/s':>13}{'serve/direct':>14}{'mean batch':>12}{'max |diff|':>12}")
    for row in r["by_batch_size"]:
        direct, served, ratio = row["direct_tokens_per_s"], row["serve_tokens_per_s"], row["serve_over_direct"]
        print(f"{row['batch_size']:>3}{direct:>14.1f}{served:>13.1f}{ratio:>14.3f}"
              f"{row['serve_mean_batch']:>12.2f}{row['max_abs_logprob_diff']:>12.2e}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with ray_state_dir("bench-scoring") as state_dir:
        result = measure(args, state_dir)
    print_table(result)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
