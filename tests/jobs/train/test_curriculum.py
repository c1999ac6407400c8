"""Curriculum SFT through the real CLI, killed mid-run and resumed (the resume-after-kill test of the trainers).

`distill-ray run` starts its own embedded cluster in a subprocess; once a `step_N` checkpoint exists every
process of that run is SIGKILLed (driver, GCS, raylet, Train workers). The same command then resumes from
the newest complete checkpoint, in the curriculum stage that checkpoint was in, and finishes both stages.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import (
    REPO,  # noqa: E402 - the repository root, wherever this file sits
    kill_session,
)
from trainer_fixtures import STUDENT, TRAINING, arithmetic, write_parquet

CURRICULUM = [{"name": "medium", "difficulty": ["medium"], "num_train_epochs": 3},  # 6 rows -> 9 steps
              {"name": "medium_hard", "difficulty": ["medium", "hard"], "num_train_epochs": 2}]  # 12 rows -> 12 steps


def _state_dir() -> str:
    return f"/tmp/dr-cur-{os.getpid()}"


def _config(tmp_path: Path) -> Path:
    rows_path = write_parquet(arithmetic(18), tmp_path / "judged.parquet")  # 6 easy, 6 medium, 6 hard
    cfg = {"job_type": "sft", "output_dir": str(tmp_path / "run"),
           "ray": {"state_dir": _state_dir(), "num_cpus": 2},
           "dataset": {"labeled_path": str(rows_path)}, "inference": {"system_prompt": ""},
           "models": {"student": STUDENT},
           "training": {**TRAINING, "per_device_train_batch_size": 1, "save_steps": 3, "curriculum": CURRICULUM}}  # fmt: skip
    path = tmp_path / "curriculum.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _cli(config: Path, log) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own embedded cluster, not the session's
    # Output to a file: a full pipe would block the CLI (and Ray's log streaming) before the first checkpoint.
    return subprocess.Popen([sys.executable, "-m", "jobs.cli", "run", str(config)], cwd=REPO, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip


def _complete_steps(ckpts: Path) -> list[int]:
    return sorted(int(p.name[5:]) for p in ckpts.glob("step_*") if (p / "trainer_state.json").is_file())


@pytest.fixture
def state_dir():
    yield _state_dir()
    shutil.rmtree(_state_dir(), ignore_errors=True)


@pytest.mark.timeout(600)
def test_curriculum_sft_resumes_after_kill(tmp_path, state_dir):
    config = _config(tmp_path)
    ckpts = tmp_path / "run" / "checkpoints"
    log_path = tmp_path / "first_run.log"
    with log_path.open("w") as log:
        proc = _cli(config, log)
    try:
        deadline = time.time() + 400
        while not _complete_steps(ckpts):
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert time.time() < deadline, "no checkpoint within 400 s"
            time.sleep(0.2)
    finally:
        kill_session(proc)
    killed_at = _complete_steps(ckpts)[-1]
    assert killed_at < 21, "the run finished before it could be killed"

    rerun = subprocess.run([sys.executable, "-m", "jobs.cli", "run", str(config)], cwd=REPO, timeout=400,
                           env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"},
                           capture_output=True, text=True)  # fmt: skip
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    m = summary["stages"][0]["metrics"]
    assert summary["status"] == "ok" and m["resumed_from_step"] == killed_at, m
    assert m["steps"] == 21 and m["steps_run"] == 21 - killed_at
    assert [(p["name"], p["rows"], p["steps"]) for p in m["phases"]] == [("medium", 6, 9), ("medium_hard", 12, 12)]
    final = json.loads((ckpts / "step_21" / "trainer_state.json").read_text())
    before = json.loads((ckpts / f"step_{killed_at}" / "trainer_state.json").read_text())
    assert final["phase"] == 1 and len(final["losses"]) == 21 and final["losses"][:killed_at] == before["losses"]
    assert before["phase"] == (0 if killed_at <= 9 else 1)
    assert m["final_loss"] < 0.6 * m["first_loss"], m
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()
    assert not list(ckpts.glob(".tmp-*"))
