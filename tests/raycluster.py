"""A real multi-node Ray cluster on this machine, for tests: ``ray start`` processes, torn down by pid.

Each node is a separate ``ray start`` (its own raylet, object store and temp dir); Ray tells
them apart by node id even on one host. Teardown kills only this cluster's processes (found by
their temp dir in /proc, plus their children), never ``ray stop``, which would stop every Ray
of the user on the machine (other test runs included).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RAY_CLI = [sys.executable, "-m", "ray.scripts.scripts"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


class RayCluster:
    def __init__(self) -> None:
        # Short paths: Ray's unix socket paths live under the temp dir and are limited to 107 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="io6-", dir="/tmp"))
        token = self.root / "token"
        token.write_text(secrets.token_hex(32))
        # `ray start` clusters use token authentication (Ray >= 2.59); every process of this
        # cluster, the infer-orch driver included, reads the token from this file.
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
                    # notice a dead node in ~3 s instead of Ray's default ~15 s (killed raylet) or ~65 s (frozen node)
                    "RAY_health_check_period_ms": "1000", "RAY_health_check_timeout_ms": "1000",
                    "RAY_health_check_failure_threshold": "3", "RAY_USAGE_STATS_ENABLED": "0"}
        self.address: str | None = None
        self.head: str | None = None
        self.dirs: dict[str, Path] = {}

    def add_node(self, name: str, num_cpus: int, num_gpus: int, resources: dict[str, float],
                 dashboard_port: int | None = None) -> None:
        """``dashboard_port``: the head's dashboard (and its job server, ``ray job submit``) on that port."""
        d = self.root / name
        args = [*RAY_CLI, "start", f"--num-cpus={num_cpus}", f"--num-gpus={num_gpus}",
                f"--resources={json.dumps(resources)}", f"--temp-dir={d}", "--disable-usage-stats",
                "--object-store-memory=100000000",
                # as an embedded run's node (orchestrator.run.cluster.lean_node): no autoscaler monitor, and
                # no log monitor (the tests' drivers don't show worker logs)
                "--no-monitor", "--include-log-monitor=false"]
        if self.address is None:
            port = free_port()
            args += ["--head", f"--port={port}"]
            args += ([f"--dashboard-port={dashboard_port}", "--dashboard-host=127.0.0.1"] if dashboard_port
                     else ["--include-dashboard=false"])
        else:
            args += [f"--address={self.address}"]
        done = subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise RuntimeError(f"ray start failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        if self.address is None:
            found = re.search(r"--address='?([0-9.]+:[0-9]+)", done.stdout + done.stderr)
            if not found:
                raise RuntimeError(f"no address in ray start's output:\n{done.stdout[-2000:]}")
            self.address = found.group(1)
            self.head = name
        self.dirs[name] = d

    def pids(self, name: str | None = None) -> list[int]:
        """Processes of one node (or all nodes): those naming its temp dir, and their children. The
        head's Ray Client server names neither (only the GCS address) and is orphaned once ``ray
        start`` exits: it is found by that address, else it outlived every test run."""
        key = str(self.dirs[name]) if name else str(self.root)
        client = f"--address={self.address} " if name in (None, self.head) else None
        found, parents = set(), {}
        for p in Path("/proc").iterdir():
            if not p.name.isdigit():
                continue
            try:
                cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            parents[int(p.name)] = ppid
            if key in cmd or (client and "ray.util.client.server" in cmd and client in cmd):
                found.add(int(p.name))
        grew = True
        while grew:
            kids = {pid for pid, pp in parents.items() if pp in found} - found
            grew = bool(kids)
            found |= kids
        found.discard(os.getpid())
        return sorted(found)

    def raylet_pid(self, name: str) -> int:
        for pid in self.pids(name):
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "raylet":
                    return pid
            except OSError:
                pass
        raise RuntimeError(f"no raylet found for node {name}")

    def node_id(self, name: str) -> str:
        """The node's id, from its raylet's command line (``--node_id=``): no driver to start."""
        cmd = Path(f"/proc/{self.raylet_pid(name)}/cmdline").read_bytes().split(b"\0")
        [found] = [a.split(b"=", 1)[1].decode() for a in cmd if a.startswith(b"--node_id=")]
        return found

    def kill(self, pids: list[int], grace_s: float = 3.0) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() and not _zombie(p)
                                                      for p in pids):
                time.sleep(0.1)

    def stop(self) -> None:
        self.kill(self.pids())
        subprocess.run(["rm", "-rf", str(self.root)], check=False)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True
