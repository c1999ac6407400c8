"""Benchmark: the teacher service scales out under load and back in when load drops, failing no request.

The teacher app (`serve.teacher.build_teacher_app`) autoscales on an embedded Ray cluster between
--min-replicas and --max-replicas. Closed-loop clients (threads, one httpx.Client each, loopback only)
post small chat completions to its OpenAI route in three phases:
  low   --low-clients for --baseline-seconds;
  high  --high-clients until the decoding deployment (`serve.teacher.TEACHER_DEPLOYMENT`) has held
        max_replicas RUNNING for --hold-seconds (or --high-seconds pass);
  down  --low-clients again, so requests are in flight while replicas drain and stop, until only
        min_replicas are left (none STOPPING) plus --tail-seconds (or --down-seconds pass).
A thread polls `ray.serve.status()` for the replica timeline. --max-seconds and --max-requests bound
the load; the script always stops by itself. Ray pushes load metrics every 10 s and averages them over
30 s by default, too slow for a short run: the benchmark sets ServeConfig's metrics_interval_s and
look_back_period_s to 0.5 s and 2 s, and turns the access log off (a line per request costs CPU here).

    python benchmarks/serve_load.py           # smollm2-135m-instruct, 1 -> 3 -> 1 replicas
    python benchmarks/serve_load.py --quick   # tiny random model, 1 -> 2 -> 1: a smoke test

Prints a table and the replica timeline, then as the last line one JSON object (requests, failed_requests,
max_replicas_seen, final_replicas, scale_up_seconds, scale_down_seconds, p50_ms, p95_ms, phases, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

from bench_common import fill_defaults, free_loopback_port, percentile, ray_state_dir  # this folder is on sys.path

DEFAULTS = dict(model="builtin:smollm2-135m-instruct", max_replicas=3, high_clients=12, baseline_seconds=5.0,
                hold_seconds=5.0, high_seconds=150.0, down_seconds=90.0, max_seconds=240.0,
                max_requests=50000)  # fmt: skip
QUICK = dict(model="tiny:smollm2", max_replicas=2, high_clients=6, baseline_seconds=3.0, hold_seconds=3.0,
             high_seconds=60.0, down_seconds=60.0, max_seconds=150.0, max_requests=20000)  # fmt: skip
# ServeConfig fields but max_replicas, with this benchmark's defaults (3 replicas x 0.4 CPU fit in 2 CPUs).
SERVICE = dict(min_replicas=1, target_ongoing_requests=2.0, upscale_delay_s=2.0, downscale_delay_s=6.0,
               metrics_interval_s=0.5, look_back_period_s=2.0, max_ongoing_requests=8, max_batch_size=4,
               batch_wait_timeout_s=0.05, num_cpus=0.4, torch_threads=1)  # fmt: skip
APP_NAME = "bench-load"
MAX_ERRORS_KEPT = 5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help=f"teacher model spec (default {DEFAULTS['model']}; --quick {QUICK['model']})")
    p.add_argument("--quick", action="store_true", help="tiny model, 2 replicas at most, short phases: a smoke test")
    p.add_argument("--low-clients", type=int, default=1, help="closed-loop clients in the low and down phases")
    p.add_argument("--high-clients", type=int, help="closed-loop clients in the high phase (default 12; --quick 6)")
    p.add_argument("--max-tokens", type=int, default=16, help="max_tokens of every request (default 16)")
    p.add_argument("--seed", type=int, default=7, help="base sampling seed; request k sends seed + k")
    p.add_argument("--request-timeout", type=float, default=120.0, help="per-request HTTP timeout, seconds")
    p.add_argument("--baseline-seconds", type=float, help="length of the low phase (default 5; --quick 3)")
    p.add_argument("--hold-seconds", type=float, help="how long max replicas must stay up before load drops")
    p.add_argument("--high-seconds", type=float, help="cap on the high phase (default 150; --quick 60)")
    p.add_argument("--down-seconds", type=float, help="cap on the down phase (default 90; --quick 60)")
    p.add_argument("--tail-seconds", type=float, default=2.0, help="low load kept after scale-in completes")
    p.add_argument("--max-seconds", type=float, help="cap on all load phases together (default 240; --quick 150)")
    p.add_argument("--max-requests", type=int, help="cap on requests sent (default 50000; --quick 20000)")
    p.add_argument("--poll-seconds", type=float, default=0.5, help="how often serve.status() is read")
    serve = p.add_argument_group("teacher service: ServeConfig fields (max replicas: 3; --quick 2)")
    for key, default in SERVICE.items():
        serve.add_argument(f"--{key.replace('_', '-')}", type=type(default), default=default,
                           help="default %(default)s")
    serve.add_argument("--max-replicas", type=int)
    serve.add_argument("--port", type=int, default=0, help="Serve proxy port on 127.0.0.1 (default: a free one)")
    args = p.parse_args(argv)
    fill_defaults(args, DEFAULTS, QUICK)
    for key in ("low_clients", "high_clients", "max_tokens", "max_requests", "max_replicas"):
        if getattr(args, key) < 1:
            p.error(f"--{key.replace('_', '-')} must be at least 1, got {getattr(args, key)}")
    if not 0 <= args.min_replicas < args.max_replicas:
        p.error(f"--min-replicas must be >= 0 and below --max-replicas ({args.max_replicas}), got {args.min_replicas}")
    if args.look_back_period_s <= args.metrics_interval_s:
        p.error("--look-back-period-s must be longer than --metrics-interval-s")
    if args.port == 0:
        args.port = free_loopback_port()
    return args




def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# ---- the service --------------------------------------------------------------------------------


def serve_config(args: argparse.Namespace):
    from distill_ray.config.serving import ServeConfig

    fields = {key: getattr(args, key) for key in (*SERVICE, "max_replicas", "port")}
    return ServeConfig(host="127.0.0.1", access_log=False, **fields)


def deploy(args: argparse.Namespace) -> tuple[str, str]:
    """Deploy the teacher at /bench-load; returns (base_url, served model name)."""
    from serve.teacher import deploy_teacher

    endpoint = deploy_teacher(args.model, serve_config(args), app_name=APP_NAME)
    if not endpoint.base_url.startswith("http://127.0.0.1:"):
        raise SystemExit(f"serve_load: Serve's proxy is at {endpoint.base_url}, not loopback; stop that Serve first")
    return endpoint.base_url, endpoint.served_name


def replica_counts(app_name: str, deployment: str) -> tuple[int, int]:
    """(RUNNING, all not yet STOPPED) replicas of one deployment, from Serve's status."""
    from ray import serve

    app = serve.status().applications.get(app_name)
    states = app.deployments.get(deployment).replica_states if app and deployment in app.deployments else {}
    running = sum(n for s, n in states.items() if s == "RUNNING")
    return running, sum(n for s, n in states.items() if s != "STOPPED")


class ReplicaWatcher(threading.Thread):
    """Polls serve.status() and keeps (t, running, total) samples, t in seconds since `t0`."""

    def __init__(self, t0: float, poll_seconds: float):
        from serve.teacher import TEACHER_DEPLOYMENT

        super().__init__(name="replica-watcher", daemon=True)
        self.t0, self.poll_seconds, self.deployment = t0, poll_seconds, TEACHER_DEPLOYMENT
        self.samples: list[tuple[float, int, int]] = []
        self.done = threading.Event()

    def sample(self) -> None:
        try:
            running, total = replica_counts(APP_NAME, self.deployment)
            self.samples.append((round(time.perf_counter() - self.t0, 2), running, total))
        except Exception as exc:  # a slow controller must not end the benchmark
            log(f"serve.status() failed: {exc}")

    def run(self) -> None:
        while not self.done.wait(self.poll_seconds):
            self.sample()

    def latest(self) -> tuple[int, int]:
        return self.samples[-1][1:] if self.samples else (0, 0)


# ---- the load -----------------------------------------------------------------------------------


def chat_body(served_name: str, max_tokens: int, seed: int) -> dict:
    return {"model": served_name, "messages": [{"role": "user", "content": "Name three prime numbers."}],
            "max_tokens": max_tokens, "temperature": 0.7, "seed": seed}  # fmt: skip


class ClosedLoopClients:
    """Client threads that each send one request at a time; only the first `active` of them send."""

    def __init__(self, args: argparse.Namespace, url: str, served_name: str, t0: float):
        self.args, self.url, self.served_name, self.t0 = args, url, served_name, t0
        self.active, self.phase = 0, "low"
        self.records: list[tuple[str, float, float, bool]] = []  # (phase, t start, latency ms, ok)
        self.errors: list[str] = []
        self.stop = threading.Event()
        self._lock, self._sent = threading.Lock(), 0
        count = max(args.low_clients, args.high_clients)
        self.threads = [threading.Thread(target=self._loop, args=(i,), daemon=True) for i in range(count)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=self.args.request_timeout + 5)

    def _next_seed(self) -> int | None:
        with self._lock:
            if self._sent >= self.args.max_requests:
                self.stop.set()
                return None
            self._sent += 1
            return self.args.seed + self._sent

    def _loop(self, index: int) -> None:
        import httpx

        # trust_env=False: no proxy settings from the environment; every request stays on loopback.
        with httpx.Client(timeout=self.args.request_timeout, trust_env=False) as client:
            while not self.stop.is_set():
                if index >= self.active:
                    time.sleep(0.05)
                    continue
                seed = self._next_seed()
                if seed is not None:
                    self._send(client, seed)

    def _send(self, client, seed: int) -> None:
        phase, started = self.phase, time.perf_counter()
        try:
            resp = client.post(self.url, json=chat_body(self.served_name, self.args.max_tokens, seed))
            ok = resp.status_code == 200 and bool(resp.json().get("choices"))
            error = None if ok else f"HTTP {resp.status_code}: {resp.text[:200]}"
        except Exception as exc:
            ok, error = False, f"{type(exc).__name__}: {exc}"[:200]
        latency_ms = (time.perf_counter() - started) * 1000
        with self._lock:
            self.records.append((phase, round(started - self.t0, 3), latency_ms, ok))
            if error and len(self.errors) < MAX_ERRORS_KEPT:
                self.errors.append(error)


def run_phases(args, clients: ClosedLoopClients, watcher: ReplicaWatcher, t0: float) -> dict:
    """Drive low -> high -> down; returns each phase's [start, end] in seconds since t0 and why load stopped."""
    deadline = t0 + args.max_seconds
    marks, stopped_by = {}, "phases done"

    def wait(done, cap_s: float) -> bool:
        """Until `done()` or cap_s; False when a global bound ended the load."""
        end = min(time.perf_counter() + cap_s, deadline)
        while not done() and time.perf_counter() < end and not clients.stop.is_set():
            time.sleep(0.1)
        return not clients.stop.is_set() and time.perf_counter() < deadline

    held_since: list[float | None] = [None]

    def held_at_max() -> bool:
        if watcher.latest()[0] < args.max_replicas:
            held_since[0] = None
            return False
        held_since[0] = held_since[0] or time.perf_counter()
        return time.perf_counter() - held_since[0] >= args.hold_seconds

    def scaled_in() -> bool:
        return watcher.latest() == (args.min_replicas, args.min_replicas)

    steps = (("low", args.low_clients, lambda: False, args.baseline_seconds),
             ("high", args.high_clients, held_at_max, args.high_seconds),
             ("down", args.low_clients, scaled_in, args.down_seconds))  # fmt: skip
    for phase, n_clients, done, cap in steps:
        start = time.perf_counter()
        clients.phase, clients.active = phase, n_clients
        log(f"phase {phase}: {n_clients} clients, replicas running {watcher.latest()[0]}")
        going = wait(done, cap)
        if going and phase == "down" and scaled_in():
            going = wait(lambda: False, args.tail_seconds)
        marks[phase] = [round(start - t0, 2), round(time.perf_counter() - t0, 2)]
        if not going:
            stopped_by = "max-requests" if clients.stop.is_set() else "max-seconds"
            break
    clients.active = 0
    return {"marks": marks, "stopped_by": stopped_by}


# ---- figures (plain data in, plain data out) -----------------------------------------------------




def latency_figures(latencies: list[float]) -> dict:
    return {f"p{q}_ms": None if (v := percentile(latencies, q)) is None else round(v, 1) for q in (50, 95, 99)}


def seconds_until(samples: list[tuple], since: float | None, reached) -> float | None:
    """Seconds from `since` to the first sample (t, running, total) from then on with `reached(running, total)`."""
    if since is None:
        return None
    t = next((t for t, running, total in samples if t >= since and reached(running, total)), None)
    return None if t is None else round(t - since, 2)


def replicas_at(samples: list[tuple], t: float | None, default: int) -> tuple[int, int]:
    before = [s[1:] for s in samples if t is not None and s[0] <= t]
    return before[-1] if before else (default, default)


def compress_timeline(samples: list[tuple]) -> list[list]:
    """[t, running] at the first sample and wherever the running count changes."""
    out: list[list] = []
    for t, running, _ in samples:
        if not out or out[-1][1] != running:
            out.append([t, running])
    return out


def scaling_figures(samples: list[tuple], marks: dict, min_replicas: int, max_replicas: int) -> dict:
    up_at = marks.get("high", [None])[0]
    down_at = marks.get("down", [None])[0]
    (at_up, total_up), (at_down, _) = replicas_at(samples, up_at, min_replicas), replicas_at(samples, down_at, 0)
    return {
        "running_at_step_up": at_up,
        # Decided: a replica was added (STARTING); up: it runs. The gap is a replica's start-up.
        "scale_up_decided_seconds": seconds_until(samples, up_at, lambda r, t: t > total_up),
        "scale_up_seconds": seconds_until(samples, up_at, lambda r, t: r > at_up),
        "scale_to_max_seconds": seconds_until(samples, up_at, lambda r, t: r >= max_replicas),
        "running_at_step_down": at_down,
        # Nothing to scale in when no replica was added: then the time is null, not zero.
        "scale_down_seconds": seconds_until(samples, down_at, lambda r, t: r <= min_replicas)
        if at_down > min_replicas else None,
    }


def request_figures(rows: list[tuple], seconds: float) -> dict:
    """Counts, throughput and latency percentiles of (phase, t, latency ms, ok) rows spread over `seconds`."""
    return {"seconds": round(seconds, 2), "requests": len(rows),
            "failed_requests": sum(1 for r in rows if not r[3]),
            "throughput_rps": round(len(rows) / max(seconds, 1e-9), 2),
            **latency_figures([r[2] for r in rows])}  # fmt: skip


def summarize(args, records: list[tuple], errors: list[str], samples: list[tuple], run: dict,
              final_replicas: int, startup: dict) -> dict:  # fmt: skip
    marks = run["marks"]
    phases = {name: request_figures([r for r in records if r[0] == name], end - start)
              for name, (start, end) in marks.items()}  # fmt: skip
    overall = request_figures(records, sum(p["seconds"] for p in phases.values()))
    return {
        **overall,
        "first_errors": errors,
        "max_replicas_seen": max((s[1] for s in samples), default=0),
        "final_replicas": final_replicas,
        **scaling_figures(samples, marks, args.min_replicas, args.max_replicas),
        "phases": phases,
        "phase_marks": marks,
        "stopped_by": run["stopped_by"],
        "replica_timeline": compress_timeline(samples),
        "startup_seconds": startup,
        "settings": {**vars(args), "cpu_count": os.cpu_count()},
    }


def print_table(r: dict) -> None:
    s = r["settings"]
    print(f"serve load: {s['model']}, replicas {s['min_replicas']}..{s['max_replicas']}, "
          f"target {s['target_ongoing_requests']} ongoing/replica, clients {s['low_clients']} -> "
          f"{s['high_clients']} -> {s['low_clients']}, max_tokens {s['max_tokens']}, load stopped: {r['stopped_by']}")
    print(f"{'phase':<7}{'from s':>8}{'secs':>7}{'requests':>10}{'failed':>8}{'req/s':>8}"
          f"{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}")
    fmt = lambda v: "-" if v is None else f"{v:.0f}"  # noqa: E731
    rows = [(name, r["phase_marks"][name][0], p) for name, p in r["phases"].items()] + [("all", 0.0, r)]
    for name, start, p in rows:
        print(f"{name:<7}{start:>8.1f}{p['seconds']:>7.1f}{p['requests']:>10}{p['failed_requests']:>8}"
              f"{p['throughput_rps']:>8.1f}{fmt(p['p50_ms']):>9}{fmt(p['p95_ms']):>9}{fmt(p['p99_ms']):>9}")
    keys = ("scale_up_decided_seconds", "scale_up_seconds", "scale_to_max_seconds", "scale_down_seconds")
    up_added, up_running, up_max, down = ("n/a" if r[k] is None else f"{r[k]:.1f}s" for k in keys)
    print(f"scale out: replica added after {up_added}, running after {up_running}, {s['max_replicas']} running after "
          f"{up_max}; scale in to {s['min_replicas']} after {down}"
          + ("  (n/a: did not happen within the caps)" if None in (r[k] for k in keys) else ""))
    print(f"replicas: max seen {r['max_replicas_seen']}, at the end {r['final_replicas']}; "
          f"failed requests {r['failed_requests']}" + (f", first: {r['first_errors'][0]}" if r["first_errors"] else ""))
    print("timeline (s, running): " + "  ".join(f"{t:.1f}:{n}" for t, n in r["replica_timeline"]), flush=True)


# ---- orchestration ------------------------------------------------------------------------------


def measure(args: argparse.Namespace, state_dir: Path) -> dict:
    """Ray, the teacher, one warm-up request, the three phases; the app and Ray go away on the way out."""
    import httpx
    from ray import serve

    from cluster.embedded import ray_session
    from distill_ray.config import RayConfig
    from serve.teacher import TEACHER_DEPLOYMENT

    startup = {}
    started = time.perf_counter()
    with ray_session(RayConfig(state_dir=str(state_dir), num_cpus=2)):
        startup["ray_init"] = round(time.perf_counter() - started, 1)
        try:
            base_url, served_name = deploy(args)
            startup["serve_deploy"] = round(time.perf_counter() - started - startup["ray_init"], 1)
            log(f"teacher at {base_url} after {startup}")
            url = f"{base_url}/chat/completions"
            with httpx.Client(trust_env=False, timeout=args.request_timeout) as warm:  # not counted
                warm.post(url, json=chat_body(served_name, args.max_tokens, args.seed)).raise_for_status()
            t0 = time.perf_counter()
            watcher = ReplicaWatcher(t0, args.poll_seconds)
            clients = ClosedLoopClients(args, url, served_name, t0)
            watcher.sample()
            watcher.start()
            clients.start()
            try:
                run = run_phases(args, clients, watcher, t0)
            finally:
                clients.close()
                watcher.done.set()
                watcher.join(timeout=10)
            final_replicas = replica_counts(APP_NAME, TEACHER_DEPLOYMENT)[0]
        finally:
            try:
                serve.delete(APP_NAME)
            except Exception as exc:  # Ray's shutdown below removes it anyway
                log(f"deleting the app failed: {exc}")
    return summarize(args, clients.records, clients.errors, watcher.samples, run, final_replicas, startup)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with ray_state_dir("bench-load") as state_dir:
        result = measure(args, state_dir)
    print_table(result)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
