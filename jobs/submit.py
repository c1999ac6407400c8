"""`distill-ray submit` and `distill-ray jobs`: runs on a Ray cluster through its Jobs API.

`submit CONFIG` packs the project folder as the job's `working_dir` (Ray uploads it to the cluster and runs
the entrypoint inside it), adds the runtime_env's pip packages and environment variables, and submits

    python -m jobs.cli run <CONFIG relative to the working_dir> [--set ...]

The run then connects to the cluster it runs on (Ray sets `$RAY_ADDRESS` for job drivers) instead of starting an
embedded one. The config is checked here first, so a bad key still fails in one line before anything is
uploaded. `jobs list | status | logs | stop` are thin wrappers over the same client. Connection, address and
token handling live in `cluster/jobs_api.py`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cluster import jobs_api
from distill_ray.config import load_config
from distill_ray.errors import ConfigError, UserError
from distill_ray.retry import call_with_retries

ADDRESS_KEY = "--address"
# Never uploaded: environments, outputs, caches, VCS data (Ray also skips what .gitignore lists).
WORKING_DIR_EXCLUDES = [".venv*", ".git", "runs", ".distill_ray", "**/__pycache__", "*.egg-info",
                        ".pytest_cache", "build", "dist"]  # fmt: skip

log = logging.getLogger(__name__)


@dataclass
class Submission:
    """What `distill-ray submit` sends: the parsed command-line choices."""

    config: str
    overrides: list[str] = field(default_factory=list)
    address: str | None = None
    working_dir: str | None = None
    pip: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    submission_id: str | None = None
    wait: bool = False
    timeout_s: float = 10.0
    poll_interval_s: float = 2.0


def project_root() -> Path:
    """The folder holding this checkout's `distill_ray/` package: the default working_dir."""
    import distill_ray

    return Path(distill_ray.__file__).resolve().parents[1]


def runtime_env(sub: Submission, working_dir: Path) -> dict[str, Any]:
    """The job's runtime_env: working_dir (with excludes), pip packages, environment variables."""
    env_vars = {"PYTHONUNBUFFERED": "1"}
    for item in sub.env:
        name, eq, value = item.partition("=")
        if not eq or not name:
            raise ConfigError("--env", f"expected NAME=VALUE, got {item!r}")
        env_vars[name] = value
    out: dict[str, Any] = {"working_dir": str(working_dir), "excludes": list(WORKING_DIR_EXCLUDES),
                           "env_vars": env_vars}  # fmt: skip
    if sub.pip:
        out["pip"] = list(sub.pip)
    return out


def entrypoint(config_in_working_dir: str, overrides: list[str]) -> str:
    """The shell command the cluster runs for the job, inside the uploaded working_dir."""
    argv = ["python", "-m", "jobs.cli", "run", config_in_working_dir]
    for item in overrides:
        argv += ["--set", item]
    return shlex.join(argv)


def prepare(sub: Submission) -> tuple[str, dict[str, Any]]:
    """Check the config and build (entrypoint, runtime_env); raises UserError before any network call."""
    cfg = load_config(sub.config, sub.overrides)  # exit 2 naming the key, as `distill-ray run` would
    working_dir = Path(sub.working_dir).expanduser().resolve() if sub.working_dir else project_root()
    if not (working_dir / "distill_ray").is_dir():
        raise ConfigError("--working-dir", f"'{working_dir}' does not hold the distill_ray package")
    config_path = Path(sub.config).expanduser().resolve()
    if not config_path.is_relative_to(working_dir):
        raise ConfigError("config", f"'{sub.config}' must lie inside the working_dir '{working_dir}', "
                                    "which is what the cluster receives")  # fmt: skip
    if Path.cwd().resolve() == working_dir:  # inputs resolve the same here and in the job: check them now
        from jobs.runner import preflight

        preflight(cfg)
    if not Path(cfg.output_dir).is_absolute():
        log.warning("note: output_dir '%s' is relative, so the outputs stay in the job's copy of the working_dir "
                    "on the head node; point it at shared storage to keep them", cfg.output_dir)  # fmt: skip
    return entrypoint(str(config_path.relative_to(working_dir)), sub.overrides), runtime_env(sub, working_dir)


def submit(sub: Submission) -> int:
    """Submit the run; with `wait`, follow it to its end (exit 0 on SUCCEEDED, 1 otherwise)."""
    command, env = prepare(sub)
    address = jobs_api.normalize_address(sub.address, ADDRESS_KEY)
    client = jobs_api.connect(address, sub.timeout_s, ADDRESS_KEY)
    submission_id = _submit_job(client, address, command, env, sub.submission_id)
    log.info("submitted '%s' to %s: %s", submission_id, address, command)
    if not sub.wait:
        log.info("follow it with: distill-ray jobs logs %s --address %s --follow", submission_id, address)
        return 0
    status, message = jobs_api.follow(client, submission_id, sub.poll_interval_s)
    if status != "SUCCEEDED":
        log.error("job '%s' ended %s: %s", submission_id, status, jobs_api.first_line(message or "no message"))
        return 1
    return 0


def _submit_job(client, address: str, command: str, env: dict[str, Any], submission_id: str | None,
                retry_s: float = 60.0) -> str:  # fmt: skip
    """Submit; a head that is still starting its job agent ("try again later") is retried for `retry_s`."""
    try:
        return call_with_retries(lambda: client.submit_job(entrypoint=command, runtime_env=env,
                                                           submission_id=submission_id),
                                 within_s=retry_s, base_delay_s=1.0, max_delay_s=4.0)  # fmt: skip
    except (RuntimeError, ValueError) as exc:
        raise UserError(f"the Jobs API at {address} refused the submission: {jobs_api.first_line(exc)}") from None


def jobs_command(action: str, address: str | None, submission_id: str | None, follow: bool = False,
                 timeout_s: float = 10.0) -> int:  # fmt: skip
    """`distill-ray jobs list | status ID | logs ID [--follow] | stop ID`."""
    url = jobs_api.normalize_address(address, ADDRESS_KEY)
    client = jobs_api.connect(url, timeout_s, ADDRESS_KEY)
    if action == "list":
        jobs = sorted(client.list_jobs(), key=lambda j: j.start_time or 0)
        for info in jobs:
            rec = jobs_api.job_record(info)
            start = rec["start_time"]  # ms since the epoch
            started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(start / 1000)) if start else "-"
            print(f"{rec['submission_id'] or rec['job_id']}\t{rec['status']}\t{started}\t{rec['entrypoint']}")
        if not jobs:
            print(f"no jobs at {url}")
        return 0
    try:
        if action == "status":
            print(json.dumps(jobs_api.job_record(client.get_job_info(submission_id)), indent=2))
        elif action == "logs":
            if follow:
                asyncio.run(_tail(client, submission_id))
            else:
                print(client.get_job_logs(submission_id), end="")
        elif action == "stop":
            stopped = client.stop_job(submission_id)
            print(f"{submission_id}: {'stop requested' if stopped else 'already ended'}")
        else:
            raise ValueError(action)
    except RuntimeError as exc:  # the client's "Request failed with status code 404: Job X does not exist."
        raise UserError(f"jobs {action} {submission_id}: {jobs_api.first_line(exc)}") from None
    return 0


async def _tail(client, submission_id: str) -> None:
    async for chunk in client.tail_job_logs(submission_id):
        print(chunk, end="", flush=True)
