"""What a person sees while `distill-ray run` (or `serve`) works, and where the rest goes.

The console gets our own messages (`distill_ray.log`: stage starts, "stage 'X' done: N in, M out ..." summaries,
warnings, errors), one progress bar per teacher stage (`StageProgress`) and Ray's warnings and errors. Everything
Ray says at INFO goes to files under the run folder instead:

- `<output_dir>/logs/ray.log`: this process's Ray messages at INFO and above (Ray Data's execution plans and
  operator summaries, Serve's "deploying" lines, Ray core's start-up notes).
- `<output_dir>/logs/ray-session`: a link to the embedded cluster's own log folder (Ray's session `logs/` under
  `ray.state_dir`), where every Ray process writes while the run goes: Serve's controller, proxy and replica logs,
  access logs included, in `serve/`; Ray Data's in `ray-data/`; each worker's stdout and stderr in
  `worker-*.out|err`.
- `<output_dir>/logs/serve/`: Serve's logs copied there when the run ends, so they stay with the run when the
  state folder is cleaned. On a cluster (`ray.address`) Ray's logs stay on the cluster's nodes (the dashboard
  shows them); only `ray.log` is written.

How, with Ray 2.60's own knobs (checked on a shrunk quickstart run: `tests/e2e/test_quickstart.py`):
- `RAY_SERVE_LOG_TO_STDERR=0` in the environment Ray's processes start with: Serve then logs to its files only,
  where by default every replica line (and every access-log line) is also printed on the worker's stderr, which
  Ray forwards to this console. Workers keep forwarding their own output (`log_to_driver`), so a warning that a
  Ray Data worker or a trainer logs still reaches the console.
- Ray Data's progress bars (`DataContext.enable_progress_bars`) are off; each stage draws its own bar.
- The embedded cluster's worker processes start with `distill_ray.log.quiet_ray_worker` (Ray's
  `worker_process_setup_hook`), which drops Ray's messages that say nothing here: Ray Train's placement-group
  cleaner warns every second that the State API (the dashboard, off by default) does not answer.
- Ray Train's workers drop its per-step "Reporting training result" INFO line and apply the worker hook's levels
  again (`quiet_train_worker`; the train loop's config says whether the driver runs quiet); their warnings and our
  own trainer messages still show.
- The console handlers of Ray's loggers in this process ("ray", "ray.data", "ray.serve", "ray.train",
  "ray.tune") print WARNING and above; a file handler on each writes INFO and above to `ray.log`.

`--verbose` keeps Ray's own console as it was before this module (all of the above on the console, Ray Data's
bars included) and still writes `ray.log`.

Lines Ray 2.60 still prints in a quiet run (a full quickstart, 2026-12-02), each written by Ray's C++ core or
forwarded from its raylet / GCS rather than logged through Python, so no logger level reaches them:
- core_worker "Actor with class name: 'MapWorker(MapBatches(...))' ... has constructor arguments in the object store
  and max_restarts > 0", once per Ray Data actor pool: Ray Data's own constructor arguments trigger it with any UDF
  (ray-project/ray#57733, open). Only `max_restarts: 0` on the pools would hide it, which drops the restart of a
  crashed caller; kept.
- raylet "WARNING: N PYTHON worker processes have been started ... 4x the maximum expected startup concurrency", as
  eval's models and callers start on 2 cores with fractional CPUs.
- raylet "Task ServeController.graceful_shutdown failed ... will be retried", once, as the embedded cluster stops:
  Serve's controller ends its own shutdown with `ray.kill` on itself. Leaving `serve.shutdown()` out (only
  `ray.shutdown()`) removed it but printed the GCS's "Failed to kill actor ... Socket closed" instead, on 2 of 2
  runs against 1 of 2 with it; kept.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from pathlib import Path

from tqdm import tqdm

from distill_ray.log import QUIET_ENV_VAR, quiet_ray_worker

RAY_LOGGERS = ("ray", "ray.data", "ray.serve", "ray.train", "ray.tune")
# The environment of Ray's processes in a quiet run: Serve logs to its files only; transformers draws no
# "Loading weights" bars in the teacher replicas (a bar on a worker's stderr would be forwarded here).
# QUIET_ENV_VAR tells our own code the same: the embedded cluster's worker setup hook, the train loop's config.
QUIET_ENV = {"RAY_SERVE_LOG_TO_STDERR": "0", "HF_HUB_DISABLE_PROGRESS_BARS": "1", QUIET_ENV_VAR: "1"}
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s -- %(message)s"


class _RunLogFile(logging.FileHandler):
    """The run's `ray.log` handler (a type of its own, so a second setup finds it and does not add another)."""


class RunConsole:
    """The console settings of one run, as a context around `ray_session`: entering sets the environment Ray's
    processes start with (an embedded cluster starts them from this process), `attach(ray_logs_dir)` once Ray runs
    routes this process's Ray loggers, sets Ray Data's bars and links Ray's log folder; leaving puts the
    environment and the loggers back (a test process runs many of these).

    `log_dir`: the run's `logs/` folder. `verbose`: keep Ray's console output (as `--verbose` asks).
    """

    def __init__(self, log_dir: Path, verbose: bool = False):
        self.log_dir = Path(log_dir)
        self.verbose = verbose
        self._env_before: dict[str, str | None] = {}
        self._levels: list[tuple[logging.Handler, int]] = []
        self._ray_logs_dir: Path | None = None

    @property
    def log_file(self) -> Path:
        return self.log_dir / "ray.log"

    @property
    def session_link(self) -> Path:
        return self.log_dir / "ray-session"

    def __enter__(self):
        if not self.verbose:
            for name, value in QUIET_ENV.items():
                self._env_before[name] = os.environ.get(name)
                os.environ[name] = value
        return self

    def attach(self, ray_logs_dir: str | None) -> None:
        """Route Ray's loggers here to the console and `ray.log`, set Ray Data's bars, link `ray_logs_dir`."""
        import ray.data
        import ray.serve  # Serve sets up its logger when imported: route it now, not after

        self.log_dir.mkdir(parents=True, exist_ok=True)
        console_level = logging.INFO if self.verbose else logging.WARNING
        self._levels = route_ray_loggers(self.log_file, console_level)
        # Without a terminal Ray Data logs its progress through the "ray.data" logger (to ray.log here); on one it
        # draws bars of its own, which only --verbose keeps.
        ray.data.DataContext.get_current().enable_progress_bars = self.verbose or not sys.stdout.isatty()
        if ray_logs_dir:
            _link(self.session_link, Path(ray_logs_dir))
            self._ray_logs_dir = Path(ray_logs_dir)
        where = f"{self.log_file}" + (f" and {self.session_link}/ (serve/: Serve's logs)" if ray_logs_dir else "")
        logging.getLogger(__name__).info("Ray's logs: %s%s", where, "" if self.verbose else "; --verbose shows them")

    def __exit__(self, *exc) -> None:
        serve_logs = self._ray_logs_dir / "serve" if self._ray_logs_dir else None
        if serve_logs is not None and serve_logs.is_dir():
            try:
                shutil.copytree(serve_logs, self.log_dir / "serve", dirs_exist_ok=True)
            except OSError as err:  # a log copy must never fail the run
                logging.getLogger(__name__).warning("could not copy Serve's logs to %s: %s", self.log_dir, err)
        for name, value in self._env_before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        for handler, level in self._levels:
            handler.setLevel(level)
        for name in RAY_LOGGERS:
            logger = logging.getLogger(name)
            for handler in [h for h in logger.handlers if isinstance(h, _RunLogFile)]:
                logger.removeHandler(handler)
                handler.close()


def route_ray_loggers(log_file: Path, console_level: int) -> list[tuple[logging.Handler, int]]:
    """Ray's loggers in this process: their console handlers at `console_level`, plus `log_file` at INFO.
    Returns each console handler changed with its level before."""
    changed = []
    for name in RAY_LOGGERS:
        logger = logging.getLogger(name)
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                changed.append((handler, handler.level))
                handler.setLevel(console_level)
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)
        if logger.propagate and name != "ray":
            continue  # its records reach the handlers of "ray" (or of the logger it propagates to) and are written there
        if not any(isinstance(h, _RunLogFile) and h.baseFilename == str(log_file.resolve()) for h in logger.handlers):
            for old in [h for h in logger.handlers if isinstance(h, _RunLogFile)]:
                logger.removeHandler(old)
                old.close()
            handler = _RunLogFile(log_file, encoding="utf-8")
            handler.setLevel(logging.INFO)
            handler.setFormatter(logging.Formatter(LOG_FORMAT))
            logger.addHandler(handler)
    return changed


def _link(link: Path, target: Path) -> None:
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target, target_is_directory=True)


class StageProgress:
    """One progress bar for a stage on stderr: rows done (of the total when known, with an ETA then) and the
    teacher's completion tokens per second when the rows report them.

    A thin wrapper over tqdm; `update(rows, tokens)` after each finished batch, `close()` at the end (also as a
    context manager). It never fails a stage: a bar is only a view.
    """

    def __init__(self, stage: str, total: int | None = None, what: str | None = None):
        self.tokens = 0
        self.started = time.monotonic()
        desc = f"stage '{stage}'" + (f" {what}" if what else "")  # `what`: which output, where a stage has several
        self.bar = tqdm(total=total, desc=desc, unit="row", file=sys.stderr, dynamic_ncols=True,
                        mininterval=0.5, smoothing=0.1)  # fmt: skip

    def update(self, rows: int, tokens: int = 0) -> None:
        self.tokens += tokens
        if self.tokens:
            self.bar.set_postfix_str(f"{self.tokens / max(time.monotonic() - self.started, 1e-9):.1f} tok/s",
                                     refresh=False)  # fmt: skip
        self.bar.update(rows)

    def finish(self) -> None:
        """The stage got through its rows: the bar ends full even where the total was an estimate."""
        if self.bar.total is not None and self.bar.n != self.bar.total:
            self.bar.total = self.bar.n
            self.bar.refresh()

    def close(self) -> None:
        self.bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def quiet_train_worker(quiet: bool) -> bool:
    """In a Ray Train worker of a quiet run (`quiet`: the driver ran under `QUIET_ENV`, i.e. not --verbose; the train
    loop's config carries it, so it reaches a remote cluster's workers too): drop Ray Train's per-step INFO line
    ("Reporting training result N: TrainingReport(...) from rank R"), which each worker's root logger prints and Ray
    forwards to the console once per step and rank. The line is dropped, not moved: Ray's worker log files lose it
    too. Warnings from the same logger still show. Returns whether it did.

    Ray 2.60 names that logger after its source file (`logging.getLogger(__file__)` in
    `ray/train/v2/_internal/execution/context.py`), outside "ray.train", so `RunConfig(logging_config=...)`, whose
    level filter only reads "ray.train.*" records, cannot reach it; the module's own `logger` object is used.

    It also applies the embedded cluster's worker hook (`distill_ray.log.quiet_ray_worker`) here, which covers the
    workers on a remote cluster (they never get the hook); idempotent. The "HTTP Request" line that every teacher
    call of an `opd` trainer printed in quiet runs came from `httpx2`, the fork of httpx that the openai client logs
    under, which the hook now quiets too (QUIET_RAY_LOGGERS).
    """
    if not quiet:
        return False
    quiet_ray_worker()
    try:
        from ray.train.v2._internal.execution import context
    except ImportError:  # Ray Train V1, or a Ray that moved the module: nothing more to quiet
        return True
    getattr(context, "logger", logging.getLogger(context.__file__)).setLevel(logging.WARNING)
    return True
