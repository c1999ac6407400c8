"""Connecting to Ray: a real cluster (`ray.address` or $RAY_ADDRESS) or an embedded local one.

The embedded cluster keeps everything under one state folder (`ray.state_dir`): Ray's temp/session
files in `tmp/` and Ray Train's storage in `storage/`, so nothing lands in /tmp/ray or ~/ray_results.
Token authentication stays at Ray's default (on). By default it listens on loopback only (`ray.listen`).

Signals: `ray.init` takes SIGTERM over (a Python handler, then a C++ crash handler that aborts the driver,
exit 134, leaving Ray's agents behind); `ray_session` puts back the handlers its caller had, so a caller
that turns SIGINT/SIGTERM into an exception (`jobs/signals.py`) unwinds through the shutdown below.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from distill_ray.config import RayConfig
from distill_ray.errors import ConfigError
from distill_ray.log import QUIET_WORKER_HOOK, quiet_ray_driver, quiet_run

# Ray's session dir adds ~70 characters of sockets/... below temp; Unix socket paths max out at 107.
MAX_STATE_DIR_CHARS = 35
LOOPBACK = "127.0.0.1"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# The driver's environment while an embedded cluster runs (a value the user set wins). Ray Train's preemption watcher
# is an actor per training run that polls whether the autoscaler is draining the run's nodes: one local node is never
# drained, and Ray 2.60 prints a core_worker warning on the console each time it starts the watcher (its constructor
# arguments sit in the object store while it may restart). On a cluster (`ray.address`) it stays on.
EMBEDDED_DRIVER_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}


@dataclass(frozen=True)
class RayContext:
    """What jobs need to know about the cluster they run on."""

    embedded: bool
    storage_path: str  # Ray Train RunConfig.storage_path
    address: str | None
    logs_dir: str | None = None  # the embedded cluster's log folder (Ray's `<session>/logs`); None on a cluster


def state_paths(ray_cfg: RayConfig) -> tuple[Path, Path]:
    state = Path(ray_cfg.state_dir).expanduser().resolve()
    if len(str(state)) > MAX_STATE_DIR_CHARS:
        raise ConfigError(
            "ray.state_dir",
            f"'{state}' is {len(str(state))} characters; keep it at most {MAX_STATE_DIR_CHARS} "
            "(Ray's socket paths below it must stay under 107)",
        )
    return state / "tmp", state / "storage"


def embedded_init_kwargs(ray_cfg: RayConfig) -> dict:
    tmp, _ = state_paths(ray_cfg)
    tmp.mkdir(parents=True, exist_ok=True)
    loopback = ray_cfg.listen == "loopback"
    kwargs = dict(
        num_cpus=ray_cfg.num_cpus,
        include_dashboard=ray_cfg.include_dashboard,
        _metrics_export_port=ray_cfg.metrics_export_port,
        dashboard_host=LOOPBACK if loopback else "0.0.0.0",
        _temp_dir=str(tmp),
        logging_level=logging.WARNING,
        log_to_driver=True,
    )
    if quiet_run() and not ray_cfg.include_dashboard:
        # A quiet console (jobs/console.py's QUIET_ENV, not --verbose): every worker process drops Ray's messages
        # that say nothing here (distill_ray/log.py QUIET_RAY_LOGGERS; with the dashboard on they may).
        kwargs["runtime_env"] = {"worker_process_setup_hook": QUIET_WORKER_HOOK}
    if loopback:
        # Ray binds to loopback exactly when the node address is 127.0.0.1: its C++ servers (GCS, raylet, object
        # manager, every worker's) then listen on 127.0.0.1 instead of every interface, and the agents, metrics
        # endpoint and runtime-env agent bind the node address.
        kwargs["_node_ip_address"] = LOOPBACK
    return kwargs


@contextmanager
def _loopback_allowed(loopback: bool) -> Iterator[None]:
    """Let `ray.init` keep a 127.0.0.1 node address. On Linux it swaps a loopback `_node_ip_address` for the
    machine's network address (so other nodes could join) unless Ray believes multi-node clusters are off, as it
    does on macOS/Windows. That belief is a module constant read from RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER when Ray
    is imported, which may be long before this call, so the constant itself is switched for the call only."""
    if not loopback:
        yield
        return
    from ray._private import ray_constants

    before = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before


def _init_keeping_signal_handlers(**kwargs):
    """`ray.init`, then the SIGINT/SIGTERM handlers the caller had. Ray installs its own SIGTERM handler in Python
    (sys.exit) and, when the driver's core worker starts, abseil's crash handler in C++ under it, which prints a
    stack and aborts; `signal.signal` re-installs the caller's at the C level too."""
    import ray

    if threading.current_thread() is not threading.main_thread():
        return ray.init(**kwargs)  # only the main thread can install handlers; Ray's stay
    before = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    context = ray.init(**kwargs)
    for sig, handler in before.items():
        if handler is not None:  # None: installed outside Python, cannot be put back
            signal.signal(sig, handler)
    return context


@contextmanager
def _driver_env(values: dict[str, str]) -> Iterator[None]:
    """Set `values` in os.environ where unset (Ray Train reads them from the driver when a run starts); put back."""
    added = [key for key in values if key not in os.environ]
    os.environ.update({key: values[key] for key in added})
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


@contextmanager
def ray_session(ray_cfg: RayConfig) -> Iterator[RayContext]:
    """Connect to (or start) Ray for the duration of a run; always disconnect/stop on the way out."""
    import ray

    address = ray_cfg.address or os.environ.get("RAY_ADDRESS")
    _, storage = state_paths(ray_cfg)
    storage.mkdir(parents=True, exist_ok=True)
    already = ray.is_initialized()
    logs_dir = None
    if not already:
        if address:
            _init_keeping_signal_handlers(address=address, logging_level=logging.WARNING)
        else:
            if quiet_run():
                quiet_ray_driver()  # Ray's note that token authentication is on (distill_ray/log.py)
            with _loopback_allowed(ray_cfg.listen == "loopback"):
                started = _init_keeping_signal_handlers(**embedded_init_kwargs(ray_cfg))
            session = (getattr(started, "address_info", None) or {}).get("session_dir")
            logs_dir = str(Path(session) / "logs") if session else None
    _quiet_ray_data()
    try:
        with _driver_env(EMBEDDED_DRIVER_ENV if not address else {}):
            yield RayContext(embedded=not address, storage_path=str(storage), address=address, logs_dir=logs_dir)
    finally:
        if not already:
            _shutdown(embedded=not address)


def _quiet_ray_data() -> None:
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = True
    ctx.print_on_execution_start = False
    # A failing UDF's own exception, not UserCodeException: the stage can tell a down teacher (stop, resume
    # later) from other failures by type, and reports the worker's one-line message, not its traceback.
    ctx.raise_original_map_exception = True


def _shutdown(embedded: bool) -> None:
    import ray

    if embedded:
        try:
            from ray import serve

            serve.shutdown()
        except Exception:  # Serve may never have started; shutdown must not mask the real error
            pass
    ray.shutdown()


def metrics_url() -> str | None:
    """The Prometheus endpoint of the node this driver runs on (docs/metrics.md), or None if Ray has none."""
    import ray

    here = ray.get_runtime_context().get_node_id()
    for node in ray.nodes():
        if node.get("NodeID") == here and node.get("MetricsExportPort"):
            return f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
    return None
