"""Benchmark: peak memory per worker and step time of DDP, ZeRO-2, ZeRO-3 and LoRA on this box, next to the
analytic per-GPU memory of a 1.5B and a 7B student under each strategy on 8 GPUs.

Where it sits: `training.strategy: ddp | deepspeed` (with `training.zero_stage`) and `training.lora` change what each
worker of the Ray Train loop holds. This script measures that on the CPU, in one run so the ratios share the box's
state, and prints what `distill_ray.training.memory` computes for real students on GPUs.

Measured part: for each strategy, 2 fresh worker processes (torch.multiprocessing, one gloo group on loopback, as in
tests/jobs/train/test_zero_strategy.py) each run the real `jobs.train.loop.TrainRun` with the SFT objective on
generated arithmetic rows: same model, rows, micro-batch, accumulation and step count for every strategy. Ray's
part in a worker is replaced as in that test (`ray.train.torch.prepare_model` by plain DDP, `ray.train.report` by a
no-op). No checkpoint is written. Figures per worker:

- peak MB: the growth of peak RSS over the process's baseline. The baseline is VmRSS once torch, DeepSpeed, peft,
  Ray Train and the loop are imported and the process group is up (so the import cost, the same everywhere, is left
  out). VmHWM is reset there through /proc/self/clear_refs, read once `TrainRun` is built (load peak: loading the
  model, the optimizer, DeepSpeed's engine), reset again and read after the last step (train peak: the steps,
  optimizer state allocated on the first one, activations, communication buckets). peak MB is the larger of the
  two; setup and end are VmRSS after building and after training, all as growth over the baseline.
- step s: mean wall time of the optimizer steps after the first (the first allocates optimizer state and buffers).

The table shows the mean over the 2 workers (and the larger of the two peaks), then the ratio to DDP. The CPU path
trains in fp32 (`training.mixed_precision: auto` is fp32 on CPU), so per parameter DDP holds 4 (weights) + 4
(gradients) + 8 (Adam moments) bytes plus DDP's gradient buckets, not the bf16 accounting of the analytic part.

Analytic part: `distill_ray.training.memory.student_table`: bf16 weights and gradients, fp32 master weights and
Adam moments (ZeRO paper, K = 12), LoRA r = 16 on every linear layer; activations excluded.

    python benchmarks/train_memory.py            # builtin:smollm2-135m-instruct, 6 steps (several minutes, 2 cores)
    python benchmarks/train_memory.py --quick    # tiny:smollm2, 2 steps, a smoke test

Prints the measured table, the analytic table, then as the last line one JSON object: per strategy
`<name>_peak_mb` and `<name>_step_s`, `<name>_vs_ddp_memory` and `<name>_vs_ddp_step_time`, the analytic rows, and
the run's settings.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for distill_ray and jobs

from bench_common import fill_defaults, status_bytes

log = logging.getLogger("train_memory")

FULL = {"model": "builtin:smollm2-135m-instruct", "steps": 6, "rows": 64, "batch": 2, "accumulation": 1,
        "max_length": 192}  # fmt: skip
QUICK = {"model": "tiny:smollm2", "steps": 2, "rows": 16, "batch": 2, "accumulation": 1, "max_length": 128}
WORKERS = 2
# name: training.* overrides. LoRA r = 16 on every linear layer (the analytic part assumes the same).
STRATEGIES = {
    "ddp": {},
    "zero2": {"strategy": "deepspeed", "zero_stage": 2},
    "zero3": {"strategy": "deepspeed", "zero_stage": 3},
    "lora": {"lora": {"r": 16, "target_modules": "all-linear", "dropout": 0.0}},
    "zero2_lora": {"strategy": "deepspeed", "zero_stage": 2,
                   "lora": {"r": 16, "target_modules": "all-linear", "dropout": 0.0}},
}  # fmt: skip


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _stand_in_prepare_model(model):
    import torch

    return torch.nn.parallel.DistributedDataParallel(model)


def _worker(rank: int, root: str, model_dir: str, name: str, args: dict) -> None:
    """One rank of strategy `name`: baseline, TrainRun for args['steps'] steps, figures to root/name.rank.json."""
    import gc

    import deepspeed  # noqa: F401  imported before the baseline, as every strategy's process does
    import peft  # noqa: F401
    import ray.train
    import ray.train.torch
    import torch
    import torch.distributed as dist

    from distill_ray.config import TrainingConfig
    from distill_ray.training.schedule import Phase
    from jobs.train.loop import TrainRun
    from jobs.train.sft import SFTObjective

    torch.set_num_threads(1)
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    os.environ["LOCAL_RANK"] = str(rank)
    dist.init_process_group("gloo", init_method=f"file://{root}/rendezvous-{name}", rank=rank, world_size=WORKERS)
    ray.train.report = lambda metrics, **_: None
    ray.train.torch.prepare_model = _stand_in_prepare_model
    try:
        t = TrainingConfig(max_steps=args["steps"], learning_rate=1e-4, lr_scheduler_type="constant",
                           num_workers=WORKERS, per_device_train_batch_size=args["batch"],
                           gradient_accumulation_steps=args["accumulation"], max_length=args["max_length"],
                           logging_steps=args["steps"], save_steps=args["steps"] + 1,
                           **STRATEGIES[name])  # fmt: skip
        out = f"{root}/{name}"
        config = {"objective": SFTObjective(model_dir, None, "{problem}", t),
                  "phases": [asdict(Phase("sft", f"{root}/sft.parquet", args["rows"], args["steps"]))],
                  "output_dir": out, "training": t, "fit_started": 0.0, "run_dir": out, "stage": "sft",
                  "student": model_dir}  # fmt: skip
        gc.collect()
        dist.barrier()
        baseline = status_bytes("VmRSS")
        reset = _reset_peak_rss()
        run = TrainRun(config, rank, WORKERS, torch.device("cpu"))
        setup_rss, load_peak = status_bytes("VmRSS"), status_bytes("VmHWM")
        reset = _reset_peak_rss() and reset  # from here VmHWM covers the training steps alone
        times: list[float] = []
        step = run._step

        def timed(*a, **k):
            start = time.perf_counter()
            step(*a, **k)
            times.append(time.perf_counter() - start)

        run._step = timed
        run.train()
        train_peak = status_bytes("VmHWM")
        # ZeRO-3 leaves each parameter a 0-element stand-in; ds_numel is its full size.
        sizes = [(getattr(p, "ds_numel", p.numel()), p.requires_grad) for p in run.model.parameters()]
        trainable, total = sum(n for n, g in sizes if g), sum(n for n, _ in sizes)
        mb = 2**20
        figures = {"baseline_mb": baseline / mb, "peak_mb": (max(load_peak, train_peak) - baseline) / mb,
                   "load_peak_mb": (load_peak - baseline) / mb, "train_peak_mb": (train_peak - baseline) / mb,
                   "setup_mb": (setup_rss - baseline) / mb, "end_mb": (status_bytes("VmRSS") - baseline) / 2**20,
                   "step_times": times, "hwm_reset": reset, "trainable_params": trainable, "params": total,
                   "losses": run.state["losses"]}  # fmt: skip
        Path(root, f"{name}.{rank}.json").write_text(json.dumps(figures))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def measure(args: argparse.Namespace, strategies: list[str]) -> dict[str, dict]:
    """{strategy: {peak_mb, step_s, ...}} over the 2 workers, each strategy in fresh processes."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch.multiprocessing as mp

    from distill_ray.models.loading import resolve_model

    model_dir = str(resolve_model(args.model))
    settings = {k: getattr(args, k) for k in FULL}
    results = {}
    with tempfile.TemporaryDirectory(prefix="train-memory-") as root:
        rows = [{"problem": f"What is {a} + {3 * a + 7}?",
                 "response": f"{a} + {3 * a + 7} = {4 * a + 7}. The answer is \\boxed{{{4 * a + 7}}}."}
                for a in range(args.rows)]  # fmt: skip
        pq.write_table(pa.Table.from_pylist(rows), Path(root, "sft.parquet"))
        for name in strategies:
            log.info("%s: %d workers, %d steps of %s", name, WORKERS, args.steps, args.model)
            started = time.time()
            mp.spawn(_worker, args=(root, model_dir, name, settings), nprocs=WORKERS, join=True)
            ranks = [json.loads(Path(root, f"{name}.{r}.json").read_text()) for r in range(WORKERS)]
            later = [s for r in ranks for s in r["step_times"][1:]] or [s for r in ranks for s in r["step_times"]]
            results[name] = {
                "peak_mb": sum(r["peak_mb"] for r in ranks) / WORKERS,
                "peak_mb_max": max(r["peak_mb"] for r in ranks),
                **{k: sum(r[k] for r in ranks) / WORKERS for k in ("load_peak_mb", "train_peak_mb", "setup_mb",
                                                                     "end_mb")},
                "step_s": sum(later) / len(later),
                "baseline_mb": sum(r["baseline_mb"] for r in ranks) / WORKERS,
                "trainable_params": ranks[0]["trainable_params"], "params": ranks[0]["params"],
                "final_loss": ranks[0]["losses"][-1], "hwm_reset": all(r["hwm_reset"] for r in ranks),
            }  # fmt: skip
            log.info("%s done in %.0f s: peak +%.0f MB, %.2f s/step", name, time.time() - started,
                     results[name]["peak_mb"], results[name]["step_s"])  # fmt: skip
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, 2 steps: a smoke test")
    parser.add_argument("--model", help="student spec (default builtin:smollm2-135m-instruct; --quick tiny:smollm2)")
    parser.add_argument("--steps", type=int, help="optimizer steps per strategy (the first is not timed)")
    parser.add_argument("--rows", type=int, help="generated SFT rows")
    parser.add_argument("--batch", type=int, help="per-worker micro-batch")
    parser.add_argument("--accumulation", type=int, help="micro-batches per optimizer step")
    parser.add_argument("--max-length", dest="max_length", type=int, help="token limit per row")
    parser.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated subset of "
                        + ", ".join(STRATEGIES))  # fmt: skip
    parser.add_argument("--gpus", type=int, default=8, help="GPU count of the analytic table")
    args = fill_defaults(parser.parse_args(argv), FULL, QUICK)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    strategies = [s for s in args.strategies.split(",") if s]
    unknown = set(strategies) - set(STRATEGIES)
    if unknown or "ddp" not in strategies:
        parser.error(f"--strategies: must include ddp and name only {', '.join(STRATEGIES)}")

    from distill_ray.training.memory import student_table

    results = measure(args, strategies)
    ddp = results["ddp"]
    print(f"\nMeasured: {WORKERS} gloo workers on this CPU, {args.model}, {args.steps} steps, micro-batch {args.batch}"
          f" x {args.accumulation}, max_length {args.max_length}, fp32")  # fmt: skip
    print(f"{'strategy':<12}{'trainable':>12}{'peak MB':>9}{'(max)':>7}{'load pk':>9}{'setup':>7}{'train pk':>9}"
          f"{'end':>7}{'step s':>8}{'mem/ddp':>9}{'time/ddp':>10}")  # fmt: skip
    summary: dict = {}
    for name, r in results.items():
        mem_ratio, time_ratio = r["peak_mb"] / ddp["peak_mb"], r["step_s"] / ddp["step_s"]
        print(f"{name:<12}{r['trainable_params']:>12,}{r['peak_mb']:>9.0f}{r['peak_mb_max']:>7.0f}"
              f"{r['load_peak_mb']:>9.0f}{r['setup_mb']:>7.0f}{r['train_peak_mb']:>9.0f}{r['end_mb']:>7.0f}"
              f"{r['step_s']:>8.3f}{mem_ratio:>9.2f}{time_ratio:>10.2f}")  # fmt: skip
        summary[f"{name}_peak_mb"] = round(r["peak_mb"], 1)
        summary[f"{name}_train_peak_mb"] = round(r["train_peak_mb"], 1)
        summary[f"{name}_step_s"] = round(r["step_s"], 4)
        if name != "ddp":
            summary[f"{name}_vs_ddp_memory"] = round(mem_ratio, 3)
            summary[f"{name}_vs_ddp_step_time"] = round(time_ratio, 3)
    table = student_table(args.gpus)
    print(f"\nAnalytic model-state memory per GPU on {args.gpus} GPUs (bf16 weights and gradients, fp32 master + "
          "Adam moments; LoRA r=16 all-linear; activations excluded), GB")  # fmt: skip
    print(f"{'student':<22}{'strategy':<12}{'weights':>9}{'grads':>9}{'optimizer':>11}{'total':>9}")
    for row in table:
        print(f"{row['student']:<22}{row['strategy']:<12}{row['weights_gb']:>9.2f}{row['gradients_gb']:>9.2f}"
              f"{row['optimizer_gb']:>11.2f}{row['total_gb']:>9.2f}")  # fmt: skip
    summary.update(model=args.model, steps=args.steps, workers=WORKERS, batch=args.batch,
                   accumulation=args.accumulation, max_length=args.max_length, quick=args.quick,
                   params=ddp["params"], hwm_reset=all(r["hwm_reset"] for r in results.values()),
                   peak_memory_measure="VmHWM growth over post-import VmRSS, mean of workers",
                   analytic={f"{r['student'].split()[0]}_{r['strategy']}_gb": round(r["total_gb"], 2)
                             for r in table})  # fmt: skip
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
