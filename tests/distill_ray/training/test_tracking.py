"""training.report_to: TensorBoard, W&B and MLflow write under the run folder, with the shared metric names, and
nothing reaches a network by default.

The trackers run in a child process whose environment has no WANDB_* / MLFLOW_* settings and whose HTTP(S)
proxy is a loopback socket that records every connection; an audit hook in the child records every socket
connect and name lookup that is not loopback. Each tracker's files are then read back with its own format:
TensorBoard's event files (EventAccumulator), MLflow's file store, and the W&B offline run's transaction log.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import REPO

STEPS = 3
METRICS = ("train/loss", "train/lr", "train/grad_norm", "train/tokens_per_s", "train/kd_loss")

CHILD = r"""
import json, socket, sys
from pathlib import Path

outside = []

def audit(event, args):
    if event == "socket.connect":
        address = args[1]
        if isinstance(address, tuple) and address[0] not in ("127.0.0.1", "::1", "localhost"):
            outside.append(f"connect {address}")
    elif event == "socket.getaddrinfo" and args[0] not in (None, "localhost", "127.0.0.1", "::1", b"localhost"):
        outside.append(f"lookup {args[0]}")

sys.addaudithook(audit)
from distill_ray.training.tracking import Trackers

run_dir = Path(sys.argv[1])
trackers = Trackers(["tensorboard", "wandb", "mlflow"], run_dir, "kd",
                    {"job_type": "kd", "training": {"learning_rate": 0.01, "report_to": ["tensorboard"]}})
for step in range(1, STEPS + 1):
    trackers.log({"train/loss": 2.0 / step, "train/lr": 0.01, "train/grad_norm": 1.5, "train/tokens_per_s": 100.0 * step,
                  "train/kd_loss": 1.0 / step, "train/ce_loss": None}, step)
trackers.log({"eval/reverse_kl": 0.25}, STEPS)
trackers.close()
print("OUTSIDE=" + json.dumps(outside))
""".replace("STEPS", str(STEPS))


class Recorder:
    """A loopback TCP listener that records every connection made to it (the children's HTTP(S) proxy)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.seen: list[bytes] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(1)
                try:
                    self.seen.append(conn.recv(200))
                except OSError:
                    self.seen.append(b"")

    def close(self):
        self.stop.set()
        self.thread.join(timeout=5)
        self.sock.close()


def _offline_env(proxy: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "MLFLOW_")) and "PROXY" not in k.upper()}
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env[name] = env[name.lower()] = proxy
    return env


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    pytest.importorskip("wandb")
    pytest.importorskip("mlflow")
    run_dir = tmp_path_factory.mktemp("tracked") / "run"
    recorder = Recorder()
    try:
        proc = subprocess.run([sys.executable, "-c", CHILD, str(run_dir)], cwd=REPO, env=_offline_env(recorder.url),
                              capture_output=True, text=True, timeout=300)  # fmt: skip
    finally:
        recorder.close()
    assert proc.returncode == 0, proc.stderr[-3000:]
    outside = json.loads(proc.stdout.split("OUTSIDE=")[-1])
    return run_dir, outside, recorder.seen


def test_nothing_reaches_a_network(tracked):
    _, outside, proxied = tracked
    assert outside == [] and proxied == [], (outside, proxied)


def test_tensorboard_event_file(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _, _ = tracked
    folder = run_dir / "tensorboard" / "kd"
    assert list(folder.glob("events.out.tfevents.*"))
    events = EventAccumulator(str(folder)).Reload()
    assert set(events.Tags()["scalars"]) == {*METRICS, "eval/reverse_kl"}
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == [1, 2, 3] and [e.value for e in loss] == pytest.approx([2.0, 1.0, 2 / 3])


def test_mlflow_file_store(tracked):
    run_dir, _, _ = tracked
    runs = [p for p in (run_dir / "mlruns").glob("*/*") if (p / "metrics").is_dir()]
    assert len(runs) == 1, runs
    run = runs[0]
    assert (run / "tags" / "mlflow.runName").read_text() == "kd"
    assert (run / "params" / "training.learning_rate").read_text() == "0.01"
    names = {str(p.relative_to(run / "metrics")) for p in (run / "metrics").rglob("*") if p.is_file()}
    assert names == {*METRICS, "eval/reverse_kl"}
    lines = [line.split() for line in (run / "metrics" / "train" / "loss").read_text().splitlines()]
    assert [int(s) for _, _, s in lines] == [1, 2, 3]
    assert [float(v) for _, v, _ in lines] == pytest.approx([2.0, 1.0, 2 / 3])
    assert "FINISHED" in (run / "meta.yaml").read_text() or "status: 3" in (run / "meta.yaml").read_text()


def test_wandb_offline_run(tracked):
    run_dir, _, _ = tracked
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    logs = list(runs[0].glob("run-*.wandb"))
    assert logs
    history = _wandb_history(logs[0])
    assert [row["_step"] for row in history if "train/loss" in row] == [1, 2, 3]
    assert {*METRICS, "eval/reverse_kl"} <= {k for row in history for k in row}
    assert [row["train/loss"] for row in history if "train/loss" in row] == pytest.approx([2.0, 1.0, 2 / 3])


def _wandb_history(path: Path) -> list[dict]:
    """The history rows of a W&B transaction log: a LevelDB-style log (`:W&B` header, 32 KiB blocks of records
    with a 7-byte header: crc32, length, type) of `Record` protobufs."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, pending, rows = 32768, 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a record header never straddles blocks: the block's tail is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:  # zero padding at the end of the file
            break
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL, or LAST of a record split across blocks
            record = pb.Record()
            record.ParseFromString(pending)
            pending = b""
            if record.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})  # fmt: skip
    return rows


def test_no_trackers_write_nothing(tmp_path):
    from distill_ray.training.tracking import Trackers

    trackers = Trackers([], tmp_path / "run", "sft", {})
    trackers.log({"train/loss": 1.0}, 1)
    trackers.close()
    assert not (tmp_path / "run").exists()


def test_a_failing_tracker_is_dropped(tmp_path, caplog):
    from distill_ray.training.tracking import Trackers

    class Broken:
        def log(self, values, step):
            raise OSError("disk full")

        def close(self, ok):
            raise AssertionError("a dropped tracker is not closed")

    trackers = Trackers([], tmp_path, "sft", {})
    trackers.open["tensorboard"] = Broken()
    trackers.log({"train/loss": 1.0, "train/lr": float("nan")}, 1)
    assert trackers.open == {} and "disk full" in caplog.text
    trackers.close()


def test_unknown_or_missing_tracker_names_the_key(monkeypatch):
    import importlib.util

    from distill_ray.config import TrainingConfig, build_config
    from distill_ray.errors import ConfigError
    from jobs.train.loop import _check_trackers

    with pytest.raises(ConfigError, match=r"^config error: training\.report_to\[1\]: .*'comet'"):
        build_config({"job_type": "sft", "training": {"report_to": ["tensorboard", "comet"]}})
    assert build_config({"job_type": "sft", "training": {"report_to": "tensorboard"}}).training.report_to == [
        "tensorboard"]  # fmt: skip
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ConfigError, match=r"training\.report_to: wandb needs the wandb package"):
        _check_trackers(TrainingConfig(report_to=["tensorboard", "wandb"]))
