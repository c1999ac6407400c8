"""Benchmark (issue 5): reward-service throughput, one item per request vs batched requests.

Deploys the reward service (serve/reward.py: RV and CD reward models, the verifier, the ingress) on an
embedded Ray cluster and scores the same items twice over HTTP on loopback:
  (a) batch 1: one item per request, one request at a time (every model forward pass holds one item);
  (b) batched: `--request-items` items per request, `--concurrency` requests in flight (the model
      replicas' `@serve.batch` fills forward passes of up to `reward.serve.max_batch_size` items).
Both sides score every item with both reward models and the verifier, with the +RV+CD setting. Start-up
and one warm-up request are not timed. The reward models are `--base` with a random one-output head
unless `--rv-model` / `--cd-model` name trained ones (throughput does not depend on the head's weights).

    python benchmarks/reward_throughput.py                 # SmolLM2-135M cut to 4 layers, 64 items
    python benchmarks/reward_throughput.py --quick         # tiny random model, 16 items

Prints a table, then as the last line one JSON object (items, items_per_s_batch1, items_per_s_batched,
speedup = batched / batch 1, latency percentiles of batch 1, largest model batch seen, settings).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench_common import fill_defaults, free_loopback_port, ray_state_dir  # this folder is on sys.path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULTS = dict(base="builtin:smollm2-135m-instruct?layers=4", items=64)
QUICK = dict(base="tiny:smollm2", items=16)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", help=f"model spec the reward models are cut from (default {DEFAULTS['base']})")
    p.add_argument("--rv-model", help="a trained RV reward model folder (an rm job's model/)")
    p.add_argument("--cd-model", help="a trained CD reward model folder")
    p.add_argument("--items", type=int, help="items scored on each side (default 64; --quick 16)")
    p.add_argument("--request-items", type=int, default=16, help="items per request on the batched side")
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight on the batched side")
    p.add_argument("--max-batch-size", type=int, default=16, help="reward.serve.max_batch_size")
    p.add_argument("--torch-threads", type=int, default=1, help="torch threads per reward-model replica")
    p.add_argument("--quick", action="store_true", help="tiny model, few items: a smoke test")
    args = p.parse_args(argv)
    fill_defaults(args, DEFAULTS, QUICK)
    return args


def reward_model_from(base: str, target: str, out: Path) -> Path:
    """`base` with a one-output sequence-classification head, saved as the rm job saves one."""
    from transformers import AutoModelForSequenceClassification

    from distill_ray.models.loading import load_tokenizer, resolve_model
    from distill_ray.training.reward_data import reward_meta, write_reward_meta

    folder = resolve_model(base)
    tokenizer = load_tokenizer(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    write_reward_meta(out, reward_meta("pointwise", target, 0.0, 9.0, None, "{problem}", 512, base))
    return out


def make_items(n: int) -> list[dict]:
    items = []
    for i in range(n):
        a, b = 3 + i % 7, 11 + i % 13
        response = (f"<think>We need {a} times {b}. {a} times 10 is {a * 10}, and {a} times {b - 10} is "
                    f"{a * (b - 10)}. Adding them gives {a * b}.</think><answer>\\boxed{{{a * b + i % 2}}}</answer>")  # fmt: skip
        items.append({"prompt": f"What is {a} * {b}?", "response": response, "reference": str(a * b)})
    return items




def measure(args, model_dir: Path, state_dir: Path) -> dict:
    import httpx
    from ray import serve

    from cluster.embedded import ray_session
    from distill_ray.config import RayConfig
    from distill_ray.config.reward import RewardConfig

    rv = args.rv_model or reward_model_from(args.base, "rv", model_dir / "rv")
    cd = args.cd_model or reward_model_from(args.base, "cd", model_dir / "cd")
    items = make_items(args.items)
    with ray_session(RayConfig(state_dir=str(state_dir), num_cpus=os.cpu_count())):
        from serve.reward import deploy_reward

        started = time.perf_counter()
        cfg = RewardConfig(rv_model=str(rv), cd_model=str(cd), setting="rv_cd",
                           serve={"port": free_loopback_port(), "max_batch_size": args.max_batch_size,
                                  "torch_threads": args.torch_threads, "max_ongoing_requests": 64})  # fmt: skip
        endpoint = deploy_reward(cfg, app_name="bench-reward")
        url = endpoint.base_url + "/v1/rewards"
        startup = time.perf_counter() - started
        with httpx.Client(timeout=600) as http:

            def post(chunk: list[dict]) -> float:
                t0 = time.perf_counter()
                response = http.post(url, json={"items": chunk})
                response.raise_for_status()
                assert len(response.json()["results"]) == len(chunk)
                return time.perf_counter() - t0

            post(items[:2])  # warm-up: first forward passes, verifier worker start
            t0 = time.perf_counter()
            latencies = [post([item]) for item in items]
            batch1 = time.perf_counter() - t0
            chunks = [items[i : i + args.request_items] for i in range(0, len(items), args.request_items)]
            t0 = time.perf_counter()
            with ThreadPoolExecutor(args.concurrency) as pool:
                list(pool.map(post, chunks))
            batched = time.perf_counter() - t0
        stats = serve.get_deployment_handle("RewardModel-rv", app_name="bench-reward").stats.remote().result()
        serve.delete("bench-reward")
    ms = sorted(x * 1000 for x in latencies)
    return {
        "items": len(items), "base": None if args.rv_model else args.base,
        "items_per_s_batch1": round(len(items) / batch1, 2), "items_per_s_batched": round(len(items) / batched, 2),
        "speedup": round(batch1 / batched, 2), "batch1_seconds": round(batch1, 3), "batched_seconds": round(batched, 3),
        "batch1_p50_ms": round(statistics.median(ms), 1), "batch1_p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 1),
        "request_items": args.request_items, "concurrency": args.concurrency, "max_batch_size": args.max_batch_size,
        "rv_model_max_batch": stats["max_batch"], "rv_model_batches": stats["batches"],
        "torch_threads": args.torch_threads, "startup_seconds": round(startup, 1),
    }  # fmt: skip


def main(argv=None) -> int:
    args = parse_args(argv)
    model_dir = Path(tempfile.mkdtemp(prefix="dr-reward-bench-"))
    try:
        with ray_state_dir("rbench") as state_dir:
            result = measure(args, model_dir, state_dir)
    finally:
        shutil.rmtree(model_dir, ignore_errors=True)
    print(f"{'side':<10}{'items/s':>10}{'seconds':>10}")
    print(f"{'batch 1':<10}{result['items_per_s_batch1']:>10}{result['batch1_seconds']:>10}")
    print(f"{'batched':<10}{result['items_per_s_batched']:>10}{result['batched_seconds']:>10}")
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
