"""Benchmark: the engine's batched per-row-generator draw (`distill_ray.models.sampling.draw_tokens`) against one
`torch.multinomial` call per row, the way the engine drew before, in one run.

1. The draw alone: milliseconds per decode step to pick one token for each of R rows over the model's vocabulary,
   at R = 8, 16, 32 and 64 rows (softmax of random logits at temperature 0.8).
2. The engine: tokens/s of `ContinuousBatcher` with --slots slots on --prompts arithmetic prompts x --samples
   seeded samples at temperature 0.8 (up to --max-tokens each), once with each draw (the engine's `draw_tokens`
   is swapped for the per-row loop for the baseline). The two draws pick different tokens from the same seeds, so
   the replies differ: compare tokens/s, not token counts.

    python benchmarks/sampling_speed.py            # smollm2-135m-instruct, 2 torch threads
    python benchmarks/sampling_speed.py --quick    # tiny random model: a smoke test

Prints a table, then one JSON line: `draw_ms` per rows, `draw_speedup_16` (loop / batched at 16 rows), and the
engine's `tokens_per_second` per draw with `engine_speedup` (batched / loop).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from bench_common import chat_sequences, fill_defaults  # this folder is on sys.path

DEFAULTS = {"model": "builtin:smollm2-135m-instruct", "prompts": 16, "samples": 4, "max_tokens": 96}
QUICK = {"model": "tiny:smollm2", "prompts": 4, "samples": 2, "max_tokens": 8}
ROWS = (8, 16, 32, 64)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help=f"model spec (default {DEFAULTS['model']}; --quick {QUICK['model']})")
    p.add_argument("--quick", action="store_true", help="tiny random model, few short replies: a smoke test")
    p.add_argument("--prompts", type=int, help=f"arithmetic prompts (default {DEFAULTS['prompts']})")
    p.add_argument("--samples", type=int, help=f"seeded samples per prompt (default {DEFAULTS['samples']})")
    p.add_argument("--max-tokens", type=int, help=f"max new tokens per sample (default {DEFAULTS['max_tokens']})")
    p.add_argument("--slots", type=int, default=32, help="the engine's slots (default 32)")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    p.add_argument("--repeats", type=int, default=20, help="timed draws per row count (default 20)")
    return fill_defaults(p.parse_args(argv), DEFAULTS, QUICK)


def per_row_multinomial(probs, generators) -> list[int]:
    """The engine's draw before `draw_tokens`: one torch.multinomial call per row, each with its own generator."""
    import torch

    return [int(torch.multinomial(probs[j], 1, generator=g)) for j, g in enumerate(generators)]


def time_draws(draw, vocab: int, rows: int, repeats: int) -> float:
    """Milliseconds per call of `draw` on `rows` rows of a `vocab`-wide distribution (best of `repeats`)."""
    import torch

    probs = torch.softmax(torch.randn(rows, vocab, generator=torch.Generator().manual_seed(rows)) / 0.8, dim=-1)
    generators = [torch.Generator().manual_seed(r) for r in range(rows)]
    draw(probs, generators)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        draw(probs, generators)
        best = min(best, time.perf_counter() - start)
    return best * 1000


def engine_tokens_per_second(engine, requests, slots: int, draw) -> tuple[float, int]:
    from distill_ray.models import engine as engine_module
    from distill_ray.models.continuous import ContinuousBatcher

    saved, engine_module.draw_tokens = engine_module.draw_tokens, draw
    try:
        start = time.perf_counter()
        results = ContinuousBatcher(engine, max_slots=slots).generate(requests)
        seconds = time.perf_counter() - start
    finally:
        engine_module.draw_tokens = saved
    tokens = sum(r.completion_tokens for r in results)
    return tokens / seconds, tokens


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from distill_ray.data.sources import procedural_arithmetic
    from distill_ray.models.engine import GenerationEngine
    from distill_ray.models.loading import resolve_model
    from distill_ray.models.sampling import draw_tokens

    engine = GenerationEngine(resolve_model(args.model), torch_threads=args.threads)
    draws = {"per_row_multinomial": per_row_multinomial, "batched_race": draw_tokens}
    draw_ms = {name: {rows: round(time_draws(draw, engine.vocab_size, rows, args.repeats), 3) for rows in ROWS}
               for name, draw in draws.items()}  # fmt: skip
    problems = procedural_arithmetic(args.prompts, seed=1, max_operand=30, split="train")
    # The teacher's own path from an OpenAI chat body to seeded sequences (n samples of a prompt share it).
    bodies = [{"messages": [{"role": "user", "content": p["question"]}], "n": args.samples, "temperature": 0.8,
               "max_tokens": args.max_tokens, "seed": 1000 * i} for i, p in enumerate(problems)]  # fmt: skip
    requests = [seq for body in bodies for seq in chat_sequences(engine, body)]
    engine.generate(requests[:1])  # warm-up, so neither draw pays the first forward's start-up
    engine_tps, engine_tokens = {}, {}
    for name, draw in draws.items():
        tps, tokens = engine_tokens_per_second(engine, requests, args.slots, draw)
        engine_tps[name], engine_tokens[name] = round(tps, 1), tokens

    print(f"draw per decode step, ms (vocabulary {engine.vocab_size}, {args.threads} threads)")
    print(f"{'rows':>6} {'multinomial per row':>20} {'batched race':>13} {'ratio':>7}")
    for rows in ROWS:
        loop, batched = draw_ms["per_row_multinomial"][rows], draw_ms["batched_race"][rows]
        print(f"{rows:>6} {loop:>20.2f} {batched:>13.2f} {loop / batched:>7.2f}")
    print(f"engine, {len(requests)} sequences, {args.slots} slots: " + ", ".join(
        f"{name} {engine_tps[name]} tokens/s ({engine_tokens[name]} tokens)" for name in draws))  # fmt: skip
    summary = {
        "model": args.model, "threads": args.threads, "vocab": engine.vocab_size, "draw_ms": draw_ms,
        "draw_speedup_16": round(draw_ms["per_row_multinomial"][16] / draw_ms["batched_race"][16], 2),
        "sequences": len(requests), "slots": args.slots, "tokens_per_second": engine_tps, "tokens": engine_tokens,
        "engine_speedup": round(engine_tps["batched_race"] / engine_tps["per_row_multinomial"], 3),
    }  # fmt: skip
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
