"""The embedded cluster (`ray.listen: loopback`, the default) accepts connections from this machine only.

Every listening socket of the session's processes is checked: the driver (this pytest process, as the CLI would
be), the GCS, raylet, dashboard/monitor heads, the agents, and the workers, a Serve replica among them.

One exception, documented in docs/cluster.md: a Serve replica's inter-deployment gRPC server, which Ray Serve binds
to `[::]:0` whatever the node address (ray/serve/_private/replica.py, `_on_initialized`). It requires Ray's token
(the server is built with Ray's authentication interceptor), which the embedded cluster keeps on.
"""

import ipaddress
import os
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.ray

PROBE_APP = "loopback-probe"


def _is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)  # [::ffff:127.0.0.1]: IPv4 loopback on a dual-stack socket
    return (mapped or ip).is_loopback


def _session_processes(state_dir: Path) -> list[psutil.Process]:
    """This driver, every Ray process started with the session's folder on its command line, and their children
    (Ray renames workers and agents `ray::...`, so those are found as the raylet's descendants)."""
    roots = [p for p in psutil.process_iter(["cmdline"]) if any(str(state_dir) in a for a in p.info["cmdline"] or [])]
    found = {os.getpid(): psutil.Process()}
    for root in roots:
        for proc in [root, *root.children(recursive=True)]:
            found[proc.pid] = proc
    return list(found.values())


def _name(proc: psutil.Process) -> str:
    """`gcs_server`, `raylet`, `ray::ServeReplica:app:Deployment`: the command, untruncated (`name()` is 15 chars)."""
    cmdline = proc.cmdline()
    return Path(cmdline[0]).name if cmdline else proc.name()


def _listeners(procs: list[psutil.Process]) -> list[tuple[str, str, int]]:
    """(process, address, port) of every listening TCP socket of `procs`."""
    by_pid = {p.pid: p for p in procs}
    out = []
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in by_pid:
            out.append((_name(by_pid[conn.pid]), conn.laddr.ip, conn.laddr.port))
    return out


def test_no_process_of_the_embedded_session_listens_off_loopback(ray_cluster, serve_port):
    from ray import serve
    from ray._private.authentication.authentication_utils import is_token_auth_enabled

    @serve.deployment(ray_actor_options={"num_cpus": 0})
    class Probe:
        def __call__(self, _request) -> str:
            return "ok"

    serve.run(Probe.bind(), name=PROBE_APP, route_prefix=f"/{PROBE_APP}")
    try:
        listeners = _listeners(_session_processes(Path(ray_cluster.storage_path).parent))
    finally:
        serve.delete(PROBE_APP)
    names = {name for name, _, _ in listeners}
    assert {"gcs_server", "raylet"} <= names and any(n.startswith("ray::ServeReplica") for n in names), listeners
    off_loopback = [entry for entry in listeners if not _is_loopback(entry[1])]
    replica_grpc = [e for e in off_loopback if e[0].startswith("ray::ServeReplica") and e[1] in ("::", "0.0.0.0")]
    assert sorted(off_loopback) == sorted(replica_grpc), f"listening off loopback: {off_loopback}"
    assert not replica_grpc or is_token_auth_enabled()  # the one exception answers only with Ray's token
