"""What `cluster/embedded.py` passes to `ray.init` for the embedded cluster (no cluster is started here)."""

import os
import shutil
import tempfile

import pytest

from cluster.embedded import embedded_init_kwargs
from distill_ray.config import RayConfig
from distill_ray.log import QUIET_ENV_VAR, QUIET_WORKER_HOOK


@pytest.mark.parametrize(("quiet", "dashboard", "hooked"), [
    (True, False, True),  # a quiet run: every worker process starts with the hook
    (False, False, False),  # --verbose (or no console): Ray's messages as Ray has them
    (True, True, False),  # with the dashboard the State API answers; nothing to drop
])  # fmt: skip
def test_a_quiet_run_starts_its_workers_with_the_quiet_hook(monkeypatch, quiet, dashboard, hooked):
    if quiet:
        monkeypatch.setenv(QUIET_ENV_VAR, "1")
    else:
        monkeypatch.delenv(QUIET_ENV_VAR, raising=False)
    state = tempfile.mkdtemp(prefix="dr-kw-")  # short: Ray's socket paths live below it
    try:
        kwargs = embedded_init_kwargs(RayConfig(state_dir=state, include_dashboard=dashboard))
    finally:
        shutil.rmtree(state, ignore_errors=True)
    assert kwargs.get("runtime_env") == ({"worker_process_setup_hook": QUIET_WORKER_HOOK} if hooked else None)
    assert kwargs["_node_ip_address"] == "127.0.0.1" and kwargs["log_to_driver"] is True


def test_an_embedded_driver_turns_off_the_preemption_watcher_unless_the_user_set_it(monkeypatch):
    """The variable Ray Train reads from the driver is set for the session only, and a value the user chose wins."""
    from cluster.embedded import EMBEDDED_DRIVER_ENV, _driver_env

    key = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"
    assert EMBEDDED_DRIVER_ENV == {key: "0"}
    monkeypatch.delenv(key, raising=False)
    with _driver_env(EMBEDDED_DRIVER_ENV):
        assert os.environ[key] == "0"
    assert key not in os.environ  # put back as it was
    monkeypatch.setenv(key, "1")
    with _driver_env(EMBEDDED_DRIVER_ENV):
        assert os.environ[key] == "1"
    assert os.environ[key] == "1"
