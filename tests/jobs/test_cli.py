"""The CLI's contract for bad input: exit code 2 and exactly one line naming the key or file."""

import subprocess
import sys

import pytest
from conftest import REPO  # noqa: E402 - the repository root, wherever this file sits


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobs.cli", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=120)  # fmt: skip


@pytest.mark.parametrize(
    ("body", "overrides", "needle"),
    [
        ("job_type: generate\ndataset: {instruction_path: /nope/missing.jsonl}\n", [], "/nope/missing.jsonl"),
        ("job_type: sft\ntraining: {learning_rte: 0.1}\n", [], "training.learning_rte"),
        ("job_type: generate\n", ["--set", "inference.temperature=-2"], "inference.temperature"),
        ("job_type: pipeline\nstages: []\n", [], "stages"),
        ("job_type: [\n", [], "cfg.yaml:2"),
        ("job_type: generate\ndataset: {instruction_path: 'procedural:arithmetic'}\n",
         ["--set", "ray.state_dir=/tmp/" + "x" * 60], "ray.state_dir"),
        ("job_type: sft\ntraining: {lora: {r: 0}}\n", [], "training.lora.r"),
        ("job_type: sft\n", ["--set", "training.report_to=[tensorboard, comet]"], "training.report_to"),
    ],
)
def test_bad_config_exits_2_with_one_line(tmp_path, body, overrides, needle):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(body)
    for command in ("validate", "run"):
        proc = cli(command, str(cfg), *overrides)
        assert proc.returncode == 2, proc.stderr
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and needle in lines[0], proc.stderr
        assert "Traceback" not in proc.stderr


def test_validate_ok_prints_stages():
    proc = cli("validate", str(REPO / "recipes" / "quickstart.yaml"))
    assert proc.returncode == 0, proc.stderr
    assert "pipeline of 3 stage(s): generate, sft, eval" in proc.stdout


def test_missing_config_file():
    proc = cli("run", "/nope/cfg.yaml")
    assert proc.returncode == 2 and "/nope/cfg.yaml" in proc.stderr


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("job_type: grpo\nreward: {setting: rv}\n", "reward"),  # +RV without an RV model
        ("job_type: grpo\nreward: {rv_model: /nope/rv, setting: rv}\n", "reward.rv_model"),
        ("job_type: grpo\nreward: {rv_interval: [0.8, 0.2]}\n", "reward"),
    ],
)
def test_serve_reward_bad_config_exits_2(tmp_path, body, needle):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(body + "dataset: {instruction_path: 'procedural:arithmetic'}\nmodels: {student: 'tiny:smollm2'}\n")
    proc = cli("serve", "reward", str(cfg))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr
