"""Shared fixtures: one embedded Ray cluster per test session, tiny models, a clean model cache.

The cluster is started lazily by the first test that asks for `ray_cluster`, so pure unit tests
never pay Ray's start-up time. Serve binds to a free loopback port chosen here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Ray Train's controller polls its workers every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (2 s by default), so each of the
# suite's training runs ended up to 2 s after its workers had. Every Ray process and CLI started from the tests
# inherits the shorter poll; the train loop's report pacing (`jobs/train/loop.py`, `_report_due`) follows it.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")


# A line Ray forwarded to the driver from another of its processes: "(raylet) ..." or "(Name pid=N, ip=...) ...",
# optionally coloured. Ray prints these whenever it has something to say (a raylet's disk-over-95% warning, a worker's
# print), so they can sit beside a CLI's error in any run that reaches Ray.
_RAY_FORWARDED = re.compile(r"^(?:\x1b\[[0-9;]*m)?\((?:raylet|[^()]*\bpid=\d+[^()]*)\)")


def error_lines(stderr: str) -> list[str]:
    """The lines of a CLI's stderr that are its own: not blank, not a `[distill-ray] ...` progress message
    (distill_ray/log.py), not a line Ray forwarded from one of its processes (`_RAY_FORWARDED`)."""
    return [line for line in stderr.splitlines()
            if line.strip() and not line.startswith("[distill-ray] ") and not _RAY_FORWARDED.match(line)]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _session_pids(sid: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited while we looked
            continue
        if int(fields[3]) == sid:  # field 6 of /proc/PID/stat: the session id
            pids.append(int(stat.parent.name))
    return pids


def kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL everything a CLI started with `start_new_session=True` started: Ray puts each worker in a process
    group of its own inside the session, so killing the CLI's process group alone leaves workers running (and
    writing: a Train checkpoint, a Ray Data part) after the "kill"."""
    deadline = time.time() + 30
    while pids := _session_pids(proc.pid):
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.poll()  # reap the CLI itself so it stops counting as a member
        assert time.time() < deadline, f"processes {pids} survived SIGKILL"
        time.sleep(0.1)
    proc.wait(timeout=30)


def ray_worker_pids(title: str) -> list[int]:
    """PIDs of this machine's Ray worker processes whose title contains `title`. Ray titles an actor's process
    `ray::<class name>` (and `ray::<class name>.<method>` while a method runs); a Serve replica's class name is
    `ServeReplica:<app>:<deployment>`, a Ray Train worker's `RayTrainWorker`."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # exited while we looked
            continue
        if text.startswith("ray::") and title in text:
            pids.append(int(cmdline.parent.name))
    return pids


class Background:
    """`fn()` running in a daemon thread, for fault tests that kill a process while a stage runs: `result` or
    `error` (any exception, kept to be asserted) once it ends."""

    def __init__(self, fn, timeout_s: float):
        self.outcome: dict = {}
        self.deadline = time.time() + timeout_s
        self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.thread.start()

    def _run(self, fn) -> None:
        try:
            self.outcome["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - the test asserts on it
            self.outcome["error"] = exc

    def wait_until(self, ready, what: str, poll_s: float = 0.02) -> None:
        """Poll `ready()` until true; fail with the run's error, or `the run ended before <what>`, if the run ends
        first or the deadline passes."""
        while not ready():
            assert self.thread.is_alive() and time.time() < self.deadline, self.outcome.get(
                "error", f"the run ended before {what}")  # fmt: skip
            time.sleep(poll_s)

    def join(self) -> None:
        self.thread.join(timeout=max(1.0, self.deadline - time.time()))


def sigkill_ray_worker(title: str, timeout_s: float = 60.0, several: bool = False) -> int:
    """SIGKILL the one Ray worker process titled with `title` (waiting up to `timeout_s` for it to exist) and
    return its PID: a crash as the OS sees it, not a polite `ray.kill`. Fails if none or, unless `several` (then
    the one with the lowest PID dies, e.g. one Ray Train worker of a group), several match."""
    deadline = time.time() + timeout_s
    while not (pids := ray_worker_pids(title)):
        assert time.time() < deadline, f"no Ray worker process titled {title!r}"
        time.sleep(0.1)
    assert several or len(pids) == 1, f"several Ray worker processes titled {title!r}: {pids}"
    victim = min(pids)
    os.kill(victim, signal.SIGKILL)
    return victim


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """A real local Ray cluster for the whole session (2 CPUs advertised, state under a short tmp dir)."""
    import ray

    from cluster.embedded import ray_session
    from distill_ray.config import RayConfig

    state = Path("/tmp") / f"dr-test-{os.getpid()}"
    cfg = RayConfig(state_dir=str(state), num_cpus=max(2, os.cpu_count() or 2))
    with ray_session(cfg) as ctx:
        yield ctx
    assert not ray.is_initialized()
    shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="session")
def serve_port(ray_cluster) -> int:
    """Start Ray Serve's HTTP proxy once, on loopback and a free port."""
    from ray import serve

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    return port


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    from distill_ray.models.loading import resolve_model

    return resolve_model("tiny:smollm2")


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    from distill_ray.models.loading import resolve_model

    return resolve_model("builtin:smollm2-135m-instruct")


@pytest.fixture(scope="session")
def tiny_reward_models(tmp_path_factory) -> dict[str, Path]:
    """RV and CD reward models for the reward service: tiny random LMs with a one-output head each."""
    root = tmp_path_factory.mktemp("reward-models")
    return {"rv": make_tiny_reward_model(root / "rv", "rv", seed=1), "cd": make_tiny_reward_model(root / "cd", "cd", seed=2)}


def make_tiny_reward_model(out: Path, target: str, seed: int) -> Path:
    """A `tiny:smollm2` sequence-classification model (random head from `seed`) with its distill_ray_reward.json."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from distill_ray.models.loading import load_tokenizer, resolve_model
    from distill_ray.training.reward_data import reward_meta, write_reward_meta

    base = resolve_model("tiny:smollm2")
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    tokenizer = load_tokenizer(base)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    write_reward_meta(out, reward_meta("pointwise", target, 0.0, 9.0, None, "{problem}", 256, "tiny:smollm2"))
    return out


def assert_declared_schema(folder: Path, declared) -> None:
    """A stage's Parquet output has exactly the columns and types `distill_ray/data/schemas.py` declares."""
    import pyarrow.dataset as pads

    actual = pads.dataset(str(folder), format="parquet", exclude_invalid_files=True).schema.remove_metadata()
    assert actual.equals(declared), f"{folder}:\n{actual}\n!= declared\n{declared}"


@pytest.fixture
def scripted():
    """A loopback OpenAI-style server answering each POST with the next (status, body) of `answers` (then `default`
    if set, else 503), after `delay_s`; counts requests, and the sequences in flight (a request's `n`, default 1)
    now and at most (`max_sequences`)."""
    state = {"answers": [], "requests": 0, "default": None, "delay_s": 0.0, "sequences": 0, "max_sequences": 0}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            try:
                n = int(json.loads(raw).get("n") or 1)
            except (ValueError, AttributeError, TypeError):
                n = 1
            with lock:
                state["requests"] += 1
                state["sequences"] += n
                state["max_sequences"] = max(state["max_sequences"], state["sequences"])
            try:
                time.sleep(state["delay_s"])
                with lock:
                    answer = state["answers"].pop(0) if state["answers"] else state["default"]
            finally:
                with lock:
                    state["sequences"] -= n
            status, body = answer or (503, {"error": {"message": "busy"}})
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()


def sentencepiece_tokenizer():
    """A Llama-2-style tokenizer: BPE over `▁`-marked pieces, `<0xNN>` byte fallback, and the usual decoder
    (Replace ▁, ByteFallback, Fuse, Strip the first space), built with the `tokenizers` library because no
    SentencePiece model (nor the sentencepiece package) is on these machines. Whole pieces: `答`, `是`, `é`, `5`,
    `▁`, `a`, `b` and merges of them; anything else (案, 🙂) falls back to its bytes."""
    from tokenizers import Tokenizer, decoders, models, normalizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"<0x{b:02X}>": 3 + b for b in range(256)})
    for piece in ["▁", "a", "b", "é", "▁a", "▁b", "ab", "▁ab", "答", "是", "5"]:
        vocab[piece] = len(vocab)
    merges = [("▁", "a"), ("▁", "b"), ("a", "b"), ("▁a", "b")]
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True))
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    backend.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    backend.add_special_tokens(["<s>", "</s>"])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
