"""Benchmark: generated tokens/s of the teacher's engines at 1, 8 and 32 concurrent sequences, with 1 and 8 samples
per prompt, all in one run on the same prompts and lengths.

Engines (in-process, no Ray; one torch thread unless --threads):
- `static`: today's `GenerationEngine.generate`, fed as Serve's batch queue feeds it: the sequences in arrival order,
  in static batches of `concurrency` (a batch runs until its longest row ends; every row pays its own prefill);
- `continuous`: `distill_ray.models.continuous.ContinuousBatcher` with `concurrency` slots (a sequence joins as
  soon as a slot frees, leaves when it ends; the n samples of a prompt share one prefill);
- `transformers_cb`: transformers' own continuous batching (`model.generate_batch`, paged attention) with
  `max_requests_per_batch = concurrency`. It takes one GenerationConfig for all requests, so every sequence gets
  the longest length cap and the same temperature; it counts the tokens it generated. --skip-transformers-cb
  leaves it out (it is slow on CPU).
vLLM is not measured: its wheels do not run on these CPUs (docs/engines.md).

Workload per (concurrency C, n): max(2C, 16) sequences = that many / n prompts x n seeded samples at temperature
0.8, each with its own max_new_tokens drawn from [--min-tokens, --max-tokens] (replies of mixed lengths, as a
teacher's are); eos also ends a row. tokens/s = completion tokens / wall seconds of the whole workload, the best of --repeats runs (the engines
take turns, so a load spike on the shared box does not favour one).

    python benchmarks/engine_throughput.py           # smollm2-135m-instruct
    python benchmarks/engine_throughput.py --quick   # tiny random model, short replies: a smoke test

Prints a table, then one JSON line with every cell and `speedup_vs_static_32` (continuous / static tokens/s at
32 concurrent sequences, n = 1) and `speedup_vs_static_32_n8`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import time

from bench_common import fill_defaults  # this folder is on sys.path

DEFAULTS = {"model": "builtin:smollm2-135m-instruct", "min_tokens": 16, "max_tokens": 96}
QUICK = {"model": "tiny:smollm2", "min_tokens": 4, "max_tokens": 16}
CONCURRENCY = (1, 8, 32)
SAMPLES = (1, 8)
PAGE = 64  # tokens per KV page of transformers' paged cache
TOPICS = ["the sum of 17 and 25", "why the sky is blue", "the prime numbers below 30", ("a proof that sqrt(2) is "
          "irrational"), "how a binary search works", "the area of a circle of radius 3", "what a derivative is",
          "the rules of chess in short"]  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help=f"model spec (default {DEFAULTS['model']}; --quick {QUICK['model']})")
    p.add_argument("--quick", action="store_true", help="tiny random model and short replies: a smoke test")
    p.add_argument("--min-tokens", type=int, help="shortest max_new_tokens drawn (default 16; --quick 4)")
    p.add_argument("--max-tokens", type=int, help="longest max_new_tokens drawn (default 96; --quick 16)")
    p.add_argument("--concurrency", type=int, nargs="+", default=list(CONCURRENCY), help="concurrent sequences")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1, as a replica has)")
    p.add_argument("--seed", type=int, default=5, help="seed of the lengths and of the samples")
    p.add_argument("--repeats", type=int, default=2, help="runs per engine and cell, best kept (default 2)")
    p.add_argument("--skip-transformers-cb", action="store_true", help="leave transformers' generate_batch out")
    args = p.parse_args(argv)
    fill_defaults(args, DEFAULTS, QUICK)
    if not 1 <= args.min_tokens <= args.max_tokens:
        p.error("need 1 <= --min-tokens <= --max-tokens")
    return args


def log(message: str) -> None:
    logging.getLogger("bench").info(message)


def workload(engine, concurrency: int, n: int, args) -> list:
    """The GenRequests of one cell: prompts x n seeded samples, mixed length caps, in arrival order."""
    from distill_ray.models.engine import GenRequest

    rng = random.Random(args.seed * 1000 + concurrency * 10 + n)
    total = max(2 * concurrency, 16)
    requests = []
    for p in range(total // n):
        topic = TOPICS[p % len(TOPICS)]
        prompt = engine.chat_prompt_ids([{"role": "user", "content": f"Explain {topic}. (#{p})"}])
        for s in range(n):
            requests.append(GenRequest(prompt_ids=prompt, max_new_tokens=rng.randint(args.min_tokens, args.max_tokens),
                                       temperature=0.8, seed=args.seed + 100 * p + s))  # fmt: skip
    return requests


def run_static(engine, requests: list, concurrency: int) -> int:
    return sum(r.completion_tokens for i in range(0, len(requests), concurrency)
               for r in engine.generate(requests[i : i + concurrency]))  # fmt: skip


def run_continuous(engine, requests: list, concurrency: int) -> int:
    from distill_ray.models.continuous import ContinuousBatcher

    return sum(r.completion_tokens for r in ContinuousBatcher(engine, max_slots=concurrency).generate(requests))


def run_transformers_cb(engine, requests: list, concurrency: int) -> int:
    from transformers import GenerationConfig
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    config = GenerationConfig(max_new_tokens=max(r.max_new_tokens for r in requests), do_sample=True, temperature=0.8,
                              eos_token_id=sorted(engine.eos_token_ids), pad_token_id=engine.pad_token_id)  # fmt: skip
    # A fixed number of KV pages: left to itself it sizes its paged cache from free memory (13 GB seen here).
    longest = max(len(r.prompt_ids) + r.max_new_tokens for r in requests)
    pages = concurrency * (longest // PAGE + 1) + 8
    cb = ContinuousBatchingConfig(max_requests_per_batch=concurrency, seed=requests[0].seed, page_size=PAGE,
                                  num_blocks=pages)  # fmt: skip
    out = engine.model.generate_batch(inputs=[r.prompt_ids for r in requests], generation_config=config,
                                      continuous_batching_config=cb, warmup=False)  # fmt: skip
    return sum(len(o.generated_tokens) for o in out.values())


def measure(args) -> dict:
    from distill_ray.models.engine import GenerationEngine
    from distill_ray.models.loading import resolve_model

    engine = GenerationEngine(resolve_model(args.model), torch_threads=args.threads)
    runners = {"static": run_static, "continuous": run_continuous}
    if not args.skip_transformers_cb:
        runners["transformers_cb"] = run_transformers_cb
    for name, runner in runners.items():  # warm-up, not counted: first calls pay one-time costs
        runner(engine, workload(engine, 2, 1, args)[:2], 2)
    cells = []
    for n in SAMPLES:
        for concurrency in args.concurrency:
            requests = workload(engine, concurrency, n, args)
            cell = {"concurrency": concurrency, "n": n, "sequences": len(requests)}
            for attempt in range(args.repeats):  # engines interleaved, best of: a load spike hits both alike
                for name, runner in runners.items():
                    started = time.perf_counter()
                    tokens = runner(engine, requests, concurrency)
                    seconds = time.perf_counter() - started
                    log(f"n={n} concurrency={concurrency} {name} #{attempt + 1}: {tokens} tokens in {seconds:.1f} s")
                    if name not in cell or seconds < cell[name]["seconds"]:
                        cell[name] = {"tokens": tokens, "seconds": round(seconds, 2),
                                      "tokens_per_s": round(tokens / seconds, 1)}  # fmt: skip
            cells.append(cell)
    return {"cells": cells, **speedups(cells), "settings": {**vars(args), "cpu_count": os.cpu_count()}}


def speedups(cells: list[dict]) -> dict:
    out = {}
    for cell in cells:
        suffix = "" if cell["n"] == 1 else f"_n{cell['n']}"
        ratio = cell["continuous"]["tokens_per_s"] / cell["static"]["tokens_per_s"]
        out[f"speedup_vs_static_{cell['concurrency']}{suffix}"] = round(ratio, 3)
    return out


def print_table(result: dict) -> None:
    engines = [k for k in ("static", "continuous", "transformers_cb") if k in result["cells"][0]]
    print(f"engine throughput: {result['settings']['model']}, tokens/s (completion tokens / wall seconds)")
    print(f"{'n':>3}{'conc':>6}{'seqs':>6}" + "".join(f"{e:>18}" for e in engines) + f"{'cont/static':>13}")
    for c in result["cells"]:
        ratio = c["continuous"]["tokens_per_s"] / c["static"]["tokens_per_s"]
        print(f"{c['n']:>3}{c['concurrency']:>6}{c['sequences']:>6}"
              + "".join(f"{c[e]['tokens_per_s']:>18.1f}" for e in engines) + f"{ratio:>13.2f}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[bench] %(message)s", stream=sys.stderr)
    result = measure(args)
    print_table(result)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
