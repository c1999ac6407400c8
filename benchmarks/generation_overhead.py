"""Benchmark (issue 3): what the Ray Data + Serve generation pipeline adds on top of the engine.

The same problems, sampling settings and per-request seeds go through
  (a) direct: a plain in-process loop over `GenerationEngine.generate`, in static batches of the
      Serve deployment's `max_batch_size`, with the replica's torch thread count;
  (b) pipeline: `jobs.data.generate.generate_samples` (Ray Data -> CoTGenerator actors -> Serve teacher
      -> scored Parquet) against a teacher deployed by `jobs.teachers.reach_teachers`.
Ray start-up, the deployment and model loads are timed apart and counted on neither side; both
engines get one warm-up request before the clock starts. Prompts go through the teacher's own path
(OpenAI body -> `parse_chat_request` -> `template_messages` -> `engine.chat_prompt_ids`) and seeds
through `request_seed` + `choice_seeds`, so a sample gets the same tokens on both sides (checked:
`samples_with_equal_text`; a rare sample may still diverge where float rounding differs with the
batch it shares). Per-sample token counts are each side's own: the pipeline's come from its Parquet
`completion_tokens` column, so `samples_with_equal_token_count` also checks that column.
The pipeline also parses, verifies and scores every sample; `scoring_seconds_in_process` times that
work alone, to tell how much of the difference is real work rather than overhead. `serve_mean_batch`
(from the replica's batching counters) shows whether the pipeline keeps the engine's batches full.

    python benchmarks/generation_overhead.py --rows 32 --samples 2 --max-new-tokens 128
    python benchmarks/generation_overhead.py --quick     # tiny random model, a smoke test

Prints a table, then as the last line one JSON object (rows, direct_seconds, pipeline_seconds,
overhead_ratio = pipeline / direct, tokens, settings, startup_seconds, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from bench_common import chat_sequences, fill_defaults, free_loopback_port, ray_state_dir  # this folder is on sys.path

DEFAULTS = dict(model="builtin:smollm2-135m-instruct", rows=32, samples=2, max_new_tokens=128)
QUICK = dict(model="tiny:smollm2", rows=4, samples=2, max_new_tokens=16)
APP_NAME = "bench-teacher"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, help=f"problems (default {DEFAULTS['rows']}; --quick {QUICK['rows']})")
    p.add_argument("--samples", type=int, help="samples per problem, the request's n (default 2)")
    p.add_argument("--max-new-tokens", type=int, help="max new tokens per sample (default 128; --quick 16)")
    p.add_argument("--model", help=f"teacher model spec (default {DEFAULTS['model']}; --quick {QUICK['model']})")
    p.add_argument("--quick", action="store_true", help="tiny model and few rows: a smoke test")
    p.add_argument("--output-dir", help="where problems and Parquet outputs go (default: a temp dir, removed)")
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (default 0.7)")
    p.add_argument("--seed", type=int, default=7, help="base sampling seed (default 7)")
    p.add_argument("--max-batch-size", type=int, default=16, help="Serve max_batch_size = direct batch size")
    p.add_argument("--torch-threads", type=int, default=2, help="torch threads, replica and direct loop")
    p.add_argument("--concurrency", type=int, default=2, help="Ray Data caller actors")
    p.add_argument("--batch-size", type=int, default=4,
                   help="problems per Ray Data batch; a caller sends batch_size x samples sequences at once")  # fmt: skip
    args = p.parse_args(argv)
    fill_defaults(args, DEFAULTS, QUICK)
    for key in ("rows", "samples", "max_new_tokens", "max_batch_size", "torch_threads", "concurrency", "batch_size"):
        if getattr(args, key) < 1:
            p.error(f"--{key.replace('_', '-')} must be at least 1, got {getattr(args, key)}")
    return args




def job_config(args: argparse.Namespace, problems_file: Path, out_dir: Path, state_dir: Path):
    """The generate job both sides follow: one temperature, keep everything, loopback Serve."""
    from distill_ray.config import build_config

    return build_config({
        "job_type": "generate",
        "output_dir": str(out_dir),
        "dataset": {"instruction_path": str(problems_file), "id_field": "id"},
        "models": {"teacher": args.model},
        "inference": {
            "max_new_tokens": args.max_new_tokens, "temperature": args.temperature,
            "num_samples": args.samples, "seed": args.seed,
            "concurrency": args.concurrency, "batch_size": args.batch_size,
            "serve": {"host": "127.0.0.1", "port": free_loopback_port(), "max_batch_size": args.max_batch_size,
                      "torch_threads": args.torch_threads, "num_cpus": 0.5},
        },
        "distillation": {"keep": "all"},
        "ray": {"state_dir": str(state_dir)},
    })  # fmt: skip


def write_problems(path: Path, rows: int, seed: int) -> list[dict]:
    """Procedural arithmetic problems as JSON lines; returns them normalised as the job reads them."""
    from distill_ray.config import DatasetConfig
    from distill_ray.data.sources import normalize_row, procedural_arithmetic

    lines = [json.dumps(r) for r in procedural_arithmetic(rows, seed, split="train")]
    path.write_text("\n".join(lines) + "\n")
    cfg = DatasetConfig(id_field="id")
    return [normalize_row(json.loads(line), cfg) for line in lines]  # our own well-formed lines


# ---- the request every sample comes from: actors.generate.request_body, as the pipeline sends it ---




# ---- (a) direct ---------------------------------------------------------------------------------


def run_direct(engine, problems: list[dict], inference, batch_size: int) -> dict:
    """Prompt building + static batches of `batch_size` sequences, in order; returns timing and tokens."""
    from actors.generate import request_body

    started = time.perf_counter()
    keys, sequences = [], []
    for problem in problems:
        for temperature in inference.temperatures:
            for k, seq in enumerate(chat_sequences(engine, request_body(problem, temperature, inference))):
                keys.append((problem["id"], float(temperature), k))
                sequences.append(seq)
    results = []
    for start in range(0, len(sequences), batch_size):
        results.extend(engine.generate(sequences[start : start + batch_size]))
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "tokens": {key: r.completion_tokens for key, r in zip(keys, results)},
        "texts": {key: r.text for key, r in zip(keys, results)},
        "batches": -(-len(sequences) // batch_size),
    }


def write_direct_samples(path: Path, direct: dict) -> None:
    """The direct side's samples, keyed like the pipeline's Parquet rows, to compare them by eye."""
    with path.open("w") as fh:
        for (pid, temperature, k), text in direct["texts"].items():
            row = {"id": pid, "temperature": temperature, "sample_index": k,
                   "completion_tokens": direct["tokens"][(pid, temperature, k)], "response": text}  # fmt: skip
            fh.write(json.dumps(row) + "\n")


def scoring_seconds(problems: list[dict], direct: dict, inference, distillation) -> float:
    """CPU time the pipeline's scoring (parse, verify, rewards) takes for these samples, in-process.

    Not part of either side: it tells how much of the pipeline's extra time is its own real work.
    """
    from distill_ray.rewards.scoring import score_problem_samples

    started = time.perf_counter()
    for problem in problems:
        group = [
            {"id": problem["id"], "reference": problem["reference"], "response": direct["texts"][key],
             "completion_tokens": direct["tokens"][key]}
            for key in direct["texts"] if key[0] == problem["id"]
        ]  # fmt: skip
        score_problem_samples(group, distillation)
    return time.perf_counter() - started


# ---- (b) pipeline -------------------------------------------------------------------------------


def serve_stats(app_name: str) -> dict:
    from ray import serve

    return serve.get_app_handle(app_name).stats.remote().result(timeout_s=60)


def _key(row: dict) -> tuple:
    return (row["id"], float(row["temperature"]), int(row["sample_index"]))


def run_pipeline(job, stage, teacher) -> dict:
    """`generate_samples` once against the deployed teacher; returns timing, tokens and batch fill."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from jobs.data.generate import generate_samples

    shutil.rmtree(stage.output_dir, ignore_errors=True)  # a fresh run, never a resumed one
    before = serve_stats(teacher.endpoint.app_name)
    started = time.perf_counter()
    run = generate_samples(job, stage, [teacher], job.distillation, "generations", None)
    seconds = time.perf_counter() - started
    after = serve_stats(teacher.endpoint.app_name)
    table = pq.read_table(run.samples_dir)
    if "error" in table.column_names:  # older layouts kept failed requests as rows with an error
        table = table.filter(pc.is_null(table["error"]))
    rows = table.select(["id", "temperature", "sample_index", "completion_tokens", "response"]).to_pylist()
    batches = after["batches"] - before["batches"]
    sequences = after["sequences"] - before["sequences"]
    return {
        "seconds": seconds,
        "tokens": {_key(r): int(r["completion_tokens"]) for r in rows},
        "texts": {_key(r): r["response"] for r in rows},
        "batches": batches,
        "mean_batch": sequences / batches if batches else 0.0,
        "max_batch": after["max_batch"],
    }


# ---- orchestration ------------------------------------------------------------------------------


def timed(label: str, startup: dict, fn):
    started = time.perf_counter()
    value = fn()
    startup[label] = round(time.perf_counter() - started, 2)
    print(f"[bench] {label}: {startup[label]:.1f}s", file=sys.stderr, flush=True)
    return value


def warm_body(problem: dict, inference) -> dict:
    from actors.generate import request_body

    body = request_body(problem, inference.temperatures[0], inference)
    return {**body, "n": 1, "max_tokens": min(8, inference.max_new_tokens)}


def measure(args: argparse.Namespace, out_dir: Path, state_dir: Path) -> dict:
    """Start Ray and the teacher, warm both engines, run direct then pipeline; Ray stops on the way out."""
    from actors.teacher_client import client_for
    from cluster.embedded import ray_session
    from distill_ray.models.engine import GenerationEngine
    from distill_ray.models.loading import resolve_model
    from distill_ray.models.teachers import model_teacher
    from jobs.stage import StageEnv
    from jobs.teachers import reach_teachers

    problems = write_problems(out_dir / "problems.jsonl", args.rows, args.seed)
    job = job_config(args, out_dir / "problems.jsonl", out_dir, state_dir)
    inference, startup = job.inference, {}
    model_dir = timed("model_resolve", startup, lambda: resolve_model(args.model))
    with ExitStack() as stack:
        ctx = timed("ray_init", startup, lambda: stack.enter_context(ray_session(job.ray)))
        (teacher,) = timed("serve_deploy", startup, lambda: stack.enter_context(
            reach_teachers([model_teacher(args.model, inference)], APP_NAME, inference.serve)))  # fmt: skip
        client = client_for(teacher.endpoint, inference.request_timeout_s)
        timed("serve_warmup", startup, lambda: client.chat(warm_body(problems[0], inference)))
        engine = timed("direct_engine_load", startup,
                       lambda: GenerationEngine(model_dir, torch_threads=args.torch_threads))  # fmt: skip
        timed("direct_warmup", startup,
              lambda: engine.generate(chat_sequences(engine, warm_body(problems[0], inference))))  # fmt: skip
        print(f"[bench] direct: {len(problems)} problems ...", file=sys.stderr, flush=True)
        direct = run_direct(engine, problems, inference, args.max_batch_size)
        write_direct_samples(out_dir / "direct_samples.jsonl", direct)
        scoring = scoring_seconds(problems, direct, inference, job.distillation)
        del engine  # the driver's copy of the model is not needed while the pipeline runs
        print(f"[bench] pipeline: {len(problems)} problems ...", file=sys.stderr, flush=True)
        stage = StageEnv("generate", out_dir / "pipeline", out_dir / "rejected", ctx)
        pipeline = run_pipeline(job, stage, teacher)
    return summarize(args, len(problems), direct, pipeline, scoring, startup)


def summarize(args: argparse.Namespace, rows: int, direct: dict, pipeline: dict, scoring: float, startup: dict) -> dict:
    d_tokens, p_tokens = sum(direct["tokens"].values()), sum(pipeline["tokens"].values())
    d_secs, p_secs = direct["seconds"], pipeline["seconds"]
    same_tokens = sum(1 for key, n in direct["tokens"].items() if pipeline["tokens"].get(key) == n)
    same_text = sum(1 for key, text in direct["texts"].items() if pipeline["texts"].get(key) == text)
    return {
        "rows": rows,
        "direct_seconds": round(d_secs, 3),
        "pipeline_seconds": round(p_secs, 3),
        "overhead_ratio": round(p_secs / d_secs, 3),
        "direct_samples": len(direct["tokens"]),
        "pipeline_samples": len(pipeline["tokens"]),
        "direct_tokens": d_tokens,
        "pipeline_tokens": p_tokens,
        "samples_with_equal_token_count": same_tokens,
        "samples_with_equal_text": same_text,
        "direct_tokens_per_s": round(d_tokens / d_secs, 1),
        "pipeline_tokens_per_s": round(p_tokens / p_secs, 1),
        "direct_batches": direct["batches"],
        "direct_mean_batch": round(len(direct["tokens"]) / direct["batches"], 2),
        "serve_batches": pipeline["batches"],
        "serve_mean_batch": round(pipeline["mean_batch"], 2),
        "serve_max_batch": pipeline["max_batch"],
        "scoring_seconds_in_process": round(scoring, 2),
        "startup_seconds": startup,
        "settings": {
            "model": args.model, "samples": args.samples, "max_new_tokens": args.max_new_tokens,
            "temperature": args.temperature, "seed": args.seed, "max_batch_size": args.max_batch_size,
            "torch_threads": args.torch_threads, "concurrency": args.concurrency, "batch_size": args.batch_size,
            "cpu_count": os.cpu_count(),
        },
    }  # fmt: skip


def print_table(r: dict) -> None:
    s = r["settings"]
    print(f"generation overhead: {r['rows']} problems x {s['samples']} samples, max_new_tokens {s['max_new_tokens']}, "
          f"model {s['model']}, batch {s['max_batch_size']}, torch threads {s['torch_threads']}")
    print("startup, not counted: " + ", ".join(f"{k} {v:.1f}s" for k, v in r["startup_seconds"].items()))
    print(f"{'side':<10}{'seconds':>9}{'samples':>9}{'tokens':>9}{'tokens/s':>10}{'batches':>9}{'mean batch':>12}")
    for side, batches, mean in (("direct", "direct_batches", "direct_mean_batch"),
                                ("pipeline", "serve_batches", "serve_mean_batch")):  # fmt: skip
        print(f"{side:<10}{r[side + '_seconds']:>9.1f}{r[side + '_samples']:>9}{r[side + '_tokens']:>9}"
              f"{r[side + '_tokens_per_s']:>10.1f}{r[batches]:>9}{r[mean]:>12.2f}")
    ratio = r["overhead_ratio"]
    print(f"pipeline / direct = {ratio:.3f} ({(ratio - 1) * 100:+.1f}%); "
          f"{r['samples_with_equal_text']}/{r['direct_samples']} samples with the same text on both sides; "
          f"scoring alone (in-process) {r['scoring_seconds_in_process']:.1f}s", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    owned = args.output_dir is None
    out_dir = Path(tempfile.mkdtemp(prefix="dr-gen-overhead-")) if owned else Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        with ray_state_dir("bench") as state_dir:
            result = measure(args, out_dir, state_dir)
    finally:
        if owned:
            shutil.rmtree(out_dir, ignore_errors=True)
    print_table(result)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
