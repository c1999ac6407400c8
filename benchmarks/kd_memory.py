"""Benchmark: what storing a teacher's top-k (instead of dense logits) and the chunked top-k loss save.

Where it sits: white-box KD stores the teacher's top-k per response token (the logits extractor's
shards) and trains with `distill_ray.losses.topk_kd.chunked_topk_kd_loss`. This script measures
the two claims behind that design, at the default sizes batch 4 x length 2,048, vocab 49,152
(SmolLM2) and 151,936 (Qwen2.5), with a small hidden size (64) so it runs on a CPU:

1. Storage per token. Raw top-k format: int32 id + fp16 log-prob per entry = 6k bytes/token
   (what Parquet list<int32> / list<float16> columns hold before compression), versus dense fp16
   logits, 2V bytes/token. Also the real size of a Parquet shard (zstd and snappy) of synthetic
   but peaked teacher distributions (top-10 mass close to 1, as EasyDistill observes).
2. Peak memory of the loss forward + backward: chunked top-k KD (k = 20) versus a dense
   full-vocabulary KL (student logits [B, T, V] = hidden @ W^T, teacher logits [B, T, V] fp16).
   Each measurement runs in a fresh child process; the figure is the increment of peak RSS over
   the RSS after the inputs were allocated (peak RSS = VmHWM, reset through /proc/self/clear_refs
   just before the measured call; ru_maxrss is shown next to it, but it may also cover building
   the inputs, which the reset leaves out). A dense case too large for
   this box is measured at two smaller token counts and extrapolated linearly in the number of
   tokens (every [tokens, V] tensor scales that way); the JSON then says so.

    python benchmarks/kd_memory.py            # full sizes (a few minutes on 2 cores)
    python benchmarks/kd_memory.py --quick    # tiny token counts, a smoke test

Prints a table, then as the last line one JSON object (storage_ratio_k20_v151936,
peak_memory_ratio_v151936, dense_measured_tokens, dense_extrapolated, ... per vocab).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from bench_common import status_bytes  # this folder is on sys.path

FULL = dict(vocabs=(49152, 151936), batch=4, length=2048, hidden=64, ks=(10, 20, 64), loss_k=20,
            chunk_tokens=1024, parquet_tokens=8192)
# --quick keeps the large vocabulary (so its JSON has the same headline keys) but runs 128 tokens.
QUICK = dict(vocabs=(151936,), batch=2, length=64, hidden=32, ks=(10, 20, 64), loss_k=20,
             chunk_tokens=32, parquet_tokens=256)
TARGETS = {"storage_ratio_k20": 1000.0, "peak_memory_ratio_v151936": 0.1}
GIB = 1024**3
# A child may use at most this much beyond its baseline; the address-space limit set in the child
# turns an overrun into a MemoryError instead of the kernel's OOM killer on a shared machine.
CHILD_CAP_BYTES = 8 * GIB
# Conservative working-set model of the dense loss, in fp32 [tokens, V] tensors alive at its peak
# (logits, two log-softmaxes, the teacher upcast, KL temporaries and the backward's gradients).
DENSE_FP32_COPIES = 9


def mem_available_bytes() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("MemAvailable missing from /proc/meminfo")


def teacher_logits_block(n: int, vocab: int, generator):
    """Synthetic teacher logits [n, V]: a few "plausible" tokens per position far above a noisy floor.

    Real next-token distributions are peaked: a handful of tokens hold nearly all the mass. Here 8
    random tokens per position get logits log(V) + N(2, 2.5) over N(0, 1) noise, which gives a
    mean top-10 mass near 0.95 and a top-1 mass that varies from position to position.
    """
    import math

    import torch

    logits = torch.randn(n, vocab, generator=generator)
    heads = torch.randint(0, vocab, (n, 8), generator=generator)
    boost = math.log(vocab) + 2.0 + 2.5 * torch.randn(n, 8, generator=generator)
    return logits.scatter_(-1, heads, boost)


def teacher_topk(tokens: int, vocab: int, k: int, seed: int = 0, block: int = 256):
    """Stored-format teacher top-k for `tokens` positions: (ids int32 [N, k], log-probs fp16 [N, k])."""
    import torch

    g = torch.Generator().manual_seed(seed)
    ids, lps = [], []
    for start in range(0, tokens, block):
        logp = torch.log_softmax(teacher_logits_block(min(block, tokens - start), vocab, g), -1)
        top_lp, top_id = logp.topk(k, dim=-1)
        ids.append(top_id.int())
        lps.append(top_lp.half())
    return torch.cat(ids), torch.cat(lps)


def parquet_bytes_per_token(ids, lps, length: int, compression: str) -> float:
    """Write one row per sequence (list<list<int32>>, list<list<float16>>) and return file bytes / token."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    n, k = ids.shape
    seqs = n // length
    id_rows = ids[: seqs * length].reshape(seqs, length, k).tolist()
    lp_rows = lps[: seqs * length].reshape(seqs, length, k).numpy()
    table = pa.table({
        "topk_ids": pa.array(id_rows, type=pa.list_(pa.list_(pa.int32()))),
        "topk_logprobs": pa.array([[row for row in seq] for seq in lp_rows], type=pa.list_(pa.list_(pa.float16()))),
    })
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "shard.parquet")
        pq.write_table(table, path, compression=compression)
        return os.path.getsize(path) / (seqs * length)


def storage_rows(cfg: dict) -> list[dict]:
    """Bytes per token of stored top-k (raw and Parquet) versus dense fp16 logits, per vocab and k."""
    rows = []
    for vocab in cfg["vocabs"]:
        ids, lps = teacher_topk(cfg["parquet_tokens"], vocab, max(cfg["ks"]))
        for k in cfg["ks"]:
            mass = lps[:, :k].float().exp().sum(-1).mean().item()
            zstd = parquet_bytes_per_token(ids[:, :k], lps[:, :k], min(cfg["length"], len(ids)), "zstd")
            snappy = parquet_bytes_per_token(ids[:, :k], lps[:, :k], min(cfg["length"], len(ids)), "snappy")
            rows.append(dict(vocab=vocab, k=k, raw=6 * k, zstd=zstd, snappy=snappy, dense=2 * vocab, mass=mass))
    return rows


# ---------------------------------------------------------------- child: one measurement


def _child_inputs(spec: dict):
    import torch

    g = torch.Generator().manual_seed(1)
    b, t, h, v = spec["batch"], spec["length"], spec["hidden"], spec["vocab"]
    hidden = torch.randn(b, t, h, generator=g).requires_grad_(True)
    weight = (torch.randn(v, h, generator=g) / h**0.5).requires_grad_(True)
    mask = torch.ones(b, t, dtype=torch.bool)
    if spec["method"] == "topk":
        ids, lps = teacher_topk(b * t, v, spec["k"])
        teacher = (ids.long().reshape(b, t, -1), lps.reshape(b, t, -1))
    else:
        # Filled block by block so building the input never spikes above the measured computation.
        dense = torch.empty(b * t, v, dtype=torch.float16)
        for start in range(0, b * t, 256):
            stop = min(start + 256, b * t)
            dense[start:stop] = teacher_logits_block(stop - start, v, g).half()
        teacher = (dense.reshape(b, t, v),)
    return hidden, weight, mask, teacher


def run_child(spec: dict) -> dict:
    """Measure one loss forward + backward in this (fresh) process and return the figures."""
    import torch

    from distill_ray.losses.topk_kd import chunked_topk_kd_loss, dense_kl_loss

    torch.set_num_threads(spec["threads"])
    hidden, weight, mask, teacher = _child_inputs(spec)
    vm_size = status_bytes("VmSize")
    resource.setrlimit(resource.RLIMIT_AS, (vm_size + CHILD_CAP_BYTES, resource.RLIM_INFINITY))
    baseline = status_bytes("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak-RSS mark (VmHWM) to the current RSS
        hwm_reset = True
    except OSError:
        hwm_reset = False
    start = time.perf_counter()
    if spec["method"] == "topk":
        ids, lps = teacher
        loss, _ = chunked_topk_kd_loss(hidden, weight, ids, lps, mask, chunk_tokens=spec["chunk_tokens"])
    else:
        loss = dense_kl_loss(hidden @ weight.T, teacher[0], mask)
    loss.backward()
    seconds = time.perf_counter() - start
    peak = status_bytes("VmHWM")
    ru_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return dict(tokens=spec["batch"] * spec["length"], baseline_bytes=baseline, peak_bytes=peak,
                increment_bytes=peak - baseline, ru_maxrss_bytes=ru_maxrss, hwm_reset=hwm_reset,
                seconds=seconds, loss=float(loss.detach()))


def measure(spec: dict) -> dict:
    """Run one measurement in a fresh interpreter (so no earlier allocation inflates its peak)."""
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)],
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"measurement {spec} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _shape_for(tokens: int, length: int) -> tuple[int, int]:
    return (tokens // length, length) if tokens >= length else (1, tokens)


def dense_peak(cfg: dict, vocab: int, budget: int, threads: int) -> dict:
    """Dense-KL peak increment at the full token count, measured there or extrapolated from two smaller counts."""
    full_tokens = cfg["batch"] * cfg["length"]
    per_token = DENSE_FP32_COPIES * 4 * vocab
    base = dict(method="dense", vocab=vocab, hidden=cfg["hidden"], threads=threads)
    if full_tokens * per_token <= budget:
        got = measure({**base, "batch": cfg["batch"], "length": cfg["length"]})
        return dict(increment=got["increment_bytes"], measured=[got], extrapolated=False)
    # Largest power-of-two token count whose estimated peak fits, and half of it for the slope.
    big = 1 << max(0, (budget // per_token).bit_length() - 1)
    if big < 2:
        raise RuntimeError(f"not enough free memory to measure the dense loss at V={vocab}")
    points = []
    for tokens in (big // 2, big):
        b, t = _shape_for(tokens, cfg["length"])
        points.append(measure({**base, "batch": b, "length": t}))
    (n0, m0), (n1, m1) = ((p["tokens"], p["increment_bytes"]) for p in points)
    slope = (m1 - m0) / (n1 - n0)
    return dict(increment=m1 + slope * (full_tokens - n1), measured=points, extrapolated=True)


def memory_rows(cfg: dict, threads: int) -> list[dict]:
    budget = min(int(CHILD_CAP_BYTES * 0.75), int(0.35 * mem_available_bytes()))
    rows = []
    for vocab in cfg["vocabs"]:
        topk = measure(dict(method="topk", vocab=vocab, batch=cfg["batch"], length=cfg["length"],
                            hidden=cfg["hidden"], k=cfg["loss_k"], chunk_tokens=cfg["chunk_tokens"],
                            threads=threads))
        dense = dense_peak(cfg, vocab, budget, threads)
        rows.append(dict(vocab=vocab, topk=topk, dense=dense, budget=budget))
    return rows


# ---------------------------------------------------------------- report


def summary(cfg: dict, quick: bool, storage: list[dict], memory: list[dict]) -> dict:
    """The JSON object: storage and peak-memory figures per vocab, and whether the targets are met."""
    out: dict = dict(
        quick=quick, batch=cfg["batch"], length=cfg["length"], hidden=cfg["hidden"], loss_k=cfg["loss_k"],
        chunk_tokens=cfg["chunk_tokens"],
        storage_format="raw: int32 id + fp16 logprob = 6k bytes/token; dense: fp16 logits = 2V bytes/token",
        peak_memory_measure="increment: peak RSS (VmHWM reset before the call) minus RSS after inputs allocated",
    )
    for r in storage:
        key = f"k{r['k']}_v{r['vocab']}"
        out[f"storage_bytes_per_token_raw_{key}"] = r["raw"]
        out[f"storage_bytes_per_token_parquet_zstd_{key}"] = round(r["zstd"], 2)
        out[f"storage_bytes_per_token_parquet_snappy_{key}"] = round(r["snappy"], 2)
        out[f"storage_ratio_{key}"] = round(r["dense"] / r["raw"], 1)
        out[f"storage_ratio_parquet_zstd_{key}"] = round(r["dense"] / r["zstd"], 1)
        out[f"teacher_topk_mass_{key}"] = round(r["mass"], 4)
    for r in memory:
        v, topk, dense = r["vocab"], r["topk"], r["dense"]
        out[f"dense_bytes_per_token_v{v}"] = 2 * v
        out[f"topk_peak_increment_bytes_v{v}"] = topk["increment_bytes"]
        out[f"dense_peak_increment_bytes_v{v}"] = int(dense["increment"])
        out[f"dense_measured_tokens_v{v}"] = [p["tokens"] for p in dense["measured"]]
        out[f"dense_extrapolated_v{v}"] = dense["extrapolated"]
        out[f"peak_memory_ratio_v{v}"] = round(topk["increment_bytes"] / dense["increment"], 4)
        # The dense teacher logits themselves must also sit in memory; the stored top-k hardly counts.
        tokens = cfg["batch"] * cfg["length"]
        with_inputs = (topk["increment_bytes"] + 6 * cfg["loss_k"] * tokens) / (dense["increment"] + 2 * v * tokens)
        out[f"peak_memory_ratio_with_teacher_inputs_v{v}"] = round(with_inputs, 4)
        out[f"topk_seconds_v{v}"] = round(topk["seconds"], 2)
    last = memory[-1]
    out["dense_measured_tokens"] = out[f"dense_measured_tokens_v{last['vocab']}"]
    out["dense_extrapolated"] = out[f"dense_extrapolated_v{last['vocab']}"]
    out["targets"] = {"storage_ratio_k20_v151936": f">= {TARGETS['storage_ratio_k20']:g}",
                      "peak_memory_ratio_v151936": f"<= {TARGETS['peak_memory_ratio_v151936']:g}"}
    out["targets_met"] = {
        "storage_ratio_k20_v151936": out.get("storage_ratio_k20_v151936", 0) >= TARGETS["storage_ratio_k20"],
        "peak_memory_ratio_v151936": out.get("peak_memory_ratio_v151936", 1) <= TARGETS["peak_memory_ratio_v151936"],
    }
    return out


def print_tables(cfg: dict, storage: list[dict], memory: list[dict]) -> None:
    mib = 1024**2
    tokens = cfg["batch"] * cfg["length"]
    print(f"KD memory benchmark: batch {cfg['batch']} x length {cfg['length']} = {tokens} tokens, "
          f"hidden {cfg['hidden']}, loss k = {cfg['loss_k']}, chunk_tokens = {cfg['chunk_tokens']}")
    print(f"Targets: storage ratio >= {TARGETS['storage_ratio_k20']:g} at k=20 (V=151,936); "
          f"peak-memory ratio <= {TARGETS['peak_memory_ratio_v151936']:g} at V=151,936")
    print("\n1. Stored bytes per token (raw = int32 id + fp16 logprob per entry; dense = fp16 logits)")
    print(f"{'vocab':>8} {'k':>4} {'raw':>6} {'parquet zstd':>13} {'parquet snappy':>15} {'dense':>8} "
          f"{'ratio raw':>10} {'ratio zstd':>11} {'top-k mass':>11}")
    for r in storage:
        print(f"{r['vocab']:>8} {r['k']:>4} {r['raw']:>6} {r['zstd']:>13.1f} {r['snappy']:>15.1f} {r['dense']:>8} "
              f"{r['dense'] / r['raw']:>10.1f} {r['dense'] / r['zstd']:>11.1f} {r['mass']:>11.3f}")
    print("\n2. Loss forward + backward, peak RSS increment over the inputs (fresh process each)")
    print(f"{'vocab':>8} {'loss':>18} {'tokens run':>11} {'increment MiB':>14} {'peak RSS MiB':>13} "
          f"{'ru_maxrss MiB':>14} {'seconds':>8}")
    for r in memory:
        runs = [("chunked top-k KD", r["topk"])] + [("dense KL", p) for p in r["dense"]["measured"]]
        for name, p in runs:
            print(f"{r['vocab']:>8} {name:>18} {p['tokens']:>11} {p['increment_bytes'] / mib:>14.0f} "
                  f"{p['peak_bytes'] / mib:>13.0f} {p['ru_maxrss_bytes'] / mib:>14.0f} {p['seconds']:>8.2f}")
        how = "extrapolated linearly from the runs above" if r["dense"]["extrapolated"] else "measured"
        print(f"{'':>8} dense KL at {tokens} tokens: {r['dense']['increment'] / mib:.0f} MiB ({how}); "
              f"top-k / dense = {r['topk']['increment_bytes'] / r['dense']['increment']:.4f}")
    print()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny token counts: a smoke test")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="torch threads per child")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(run_child(json.loads(args.child))))
        return
    cfg = QUICK if args.quick else FULL
    if mem_available_bytes() < 2 * GIB:
        sys.exit("kd_memory: less than 2 GiB of memory available; not measuring")
    storage = storage_rows(cfg)
    memory = memory_rows(cfg, args.threads)
    print_tables(cfg, storage, memory)
    print(json.dumps(summary(cfg, args.quick, storage, memory)))


if __name__ == "__main__":
    main()
