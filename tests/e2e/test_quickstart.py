"""The quickstart recipe end to end through the real CLI on its own embedded cluster (shrunk with --set), and what
its console shows (jobs/console.py: a bar and a summary per stage; Ray's INFO output in `<output_dir>/logs/`)."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
from conftest import REPO  # noqa: E402 - the repository root, wherever this file sits

from cluster.embedded import EMBEDDED_DRIVER_ENV

pytestmark = pytest.mark.ray
# What Serve's replicas log per call (access logs), its controller's notes, Ray Data's progress dumps.
RAY_NOISE = ("CALL chat OK", "(ServeController", "(ServeReplica", "Running Dataset", "Total Progress")


def test_quickstart_recipe_end_to_end(tmp_path):
    from conftest import free_port

    out = tmp_path / "qs"
    state_dir = f"/tmp/dr-e2e-{free_port()}"
    shrink = [
        f"output_dir={out}",
        f"ray.state_dir={state_dir}",
        f"inference.serve.port={free_port()}",
        "inference.max_new_tokens=12",
        "inference.num_samples=1",
        "inference.concurrency=2",  # 4 problems fill one caller's batch; two callers start faster than four
        "distillation.keep=all",  # the shrunk teacher may get nothing right; keep every sample
        "stages.generate.dataset.limit=4",
        "stages.eval.evaluation.benchmarks=[{name: arithmetic, preset: arithmetic, limit: 3}]",
        "stages.sft.training.max_steps=2",
    ]
    args = [sys.executable, "-m", "jobs.cli", "run", str(REPO / "recipes" / "quickstart.yaml")]
    for item in shrink:
        args += ["--set", item]
    # As a user's shell starts it: without what this session's embedded cluster put in the environment (the CLI
    # would take it for the user's own setting)
    env = {k: v for k, v in os.environ.items() if k not in EMBEDDED_DRIVER_ENV}
    try:
        proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    console = proc.stdout + proc.stderr
    summary_line = r"\[distill-ray\] stage 'generate' done in [\d.]+s: 4 in, 4 out, 0 rejected"
    assert re.search(summary_line, console), console[-3000:]
    assert re.search(r"stage 'generate' generations: 100%[^\n]* (\d+)/\1", console), console[-3000:]  # its bar, full
    # Serve's access logs and controller notes, Ray Data's progress dumps: in the run's log files, not on the console
    noise = [line for line in console.splitlines() if any(n in line for n in RAY_NOISE)]
    assert not noise, noise[:5]
    logs = out / "logs"
    assert "Running Dataset" in (logs / "ray.log").read_text()  # Ray Data's dumps, in this process's Ray log
    replicas = list((logs / "serve").glob("replica_teacher-generate_TeacherDeployment_*.log"))
    assert replicas and "CALL chat OK" in "".join(p.read_text() for p in replicas)  # Serve's access log
    assert (logs / "ray-session").is_symlink()  # the embedded cluster's log folder, linked during the run
    # A quiet console: Ray Train's per-step INFO line from each worker stays off it (jobs.console.quiet_train_worker).
    assert "Reporting training result" not in proc.stdout + proc.stderr
    # ... nor Ray Train's placement-group cleaner, which warns every second without the dashboard (distill_ray/log.py)
    assert "Failed to query Ray Train Controller" not in proc.stdout + proc.stderr
    # ... nor Serve's note that each caller's router started (distill_ray/log.py QUIET_RAY_MESSAGES)
    assert "SharedRouterLongPollClient" not in proc.stdout + proc.stderr
    # ... nor a router's late queue-length probe, a busy CPU here, not the network its text blames
    assert "Failed to get queue length" not in proc.stdout + proc.stderr
    # ... nor Ray Train's setup lines (resources, worker group, process group, DDP wrapping)
    assert "Started training worker group" not in proc.stdout + proc.stderr
    assert "Wrapping provided model" not in proc.stdout + proc.stderr
    # ... nor Ray's warning as it starts Train's preemption watcher, off on one local node (cluster/embedded.py)
    assert "PreemptionWatcher" not in proc.stdout + proc.stderr
    # ... nor Ray's note that it turned token authentication on (cluster/embedded.py says "token" itself)
    assert "Token authentication is enabled" not in proc.stdout + proc.stderr

    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "ok"
    stages = {s["name"]: s for s in summary["stages"]}
    assert list(stages) == ["generate", "sft", "eval"]
    assert stages["generate"]["rows_in"] == 4 and stages["generate"]["rows_out"] == 4  # counted per problem
    assert stages["generate"]["metrics"]["records_written"] == 4 * 2  # x 2 temperatures
    assert stages["sft"]["rows_out"] == 8 and stages["sft"]["metrics"]["steps"] == 2
    assert (out / "sft" / "model" / "model.safetensors").is_file()

    evaluation = stages["eval"]["metrics"]
    assert evaluation["models"]["student_after"] == str(out / "sft" / "model")
    assert set(evaluation["results"]) == {"student_before", "student_after", "teacher"}
    for label, per_bench in evaluation["results"].items():
        assert 0.0 <= per_bench["arithmetic"]["pass@1"] <= 1.0
        assert (out / "eval" / "results" / label / "arithmetic").is_dir()
    assert stages["eval"]["rows_out"] == 3 * 3  # models x problems (one greedy answer each)
    for name in ("report.md", "report.json"):
        assert (out / "eval" / name).stat().st_size > 0
    assert len(list((out / "eval").glob("*.png"))) >= 3
    assert all(s["seconds"] > 0 for s in summary["stages"])
