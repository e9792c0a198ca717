"""Connecting to Ray: an embedded local one, or a cluster; and leaving it. Where the workers go
and their start: ``orchestrator.run.placement``.

With no address, ``ray.init()`` starts an embedded local Ray: nothing to set up on one machine.
``--address auto`` joins the cluster this machine belongs to, ``ray://host:10001`` a remote one.
A Ray that is already initialised in this process (tests, notebooks) is used as it is.

Rows travel back through Ray: the nodes share no filesystem, and each keeps its own ONNX export
cache (``$INFER_ORCH_CACHE``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from typing import Any

from orchestrator.errors import ClusterError, env_seconds


def connect(address: str | None = None) -> bool:
    """Initialise Ray unless it already is; returns True when this call started it.

    Workers import the user's ``python:`` model factories from where the run was started, so
    they need the driver's directory and PYTHONPATH. An embedded Ray's workers inherit the
    driver's environment (the raylet is started from it), so PYTHONPATH is set for the length
    of ``ray.init`` only. A job ``runtime_env`` would do the same but route every worker through
    Ray's runtime-env agent and keep actors off the workers Ray prestarts at ``ray.init``: each
    then waits for a fresh process (on 2 vCPUs the actor came up 2.3 s after ``ray.init``
    instead of 0.6-1.0 s). A cluster's workers don't inherit this process's environment: there
    the runtime_env is what carries it.
    """
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "logging_level": logging.WARNING,
        "log_to_driver": os.environ.get("INFER_ORCH_WORKER_LOGS") == "1",
    }
    if address:
        kwargs["address"] = address
        kwargs["runtime_env"] = {"env_vars": {"PYTHONPATH": _worker_pythonpath()}}
        _wait_for(address)
        _use_token(address)
    saved = os.environ.get("PYTHONPATH")
    global _REAPER
    # Started before ray.init: a driver stopped or killed while Ray starts leaves nothing of it either
    _REAPER = None if address or os.environ.get("RAY_ADDRESS") else _watch_start()
    try:
        with _keep_sigterm_handler():
            if address:
                ray.init(**kwargs)
            else:
                os.environ["PYTHONPATH"] = _worker_pythonpath()
                with lean_node(worker_logs=kwargs["log_to_driver"]):
                    ray.init(**kwargs)
    except BaseException as exc:
        _abandon_start()  # what was started of the node: shut down, the watchdog removes the rest
        if isinstance(exc, Exception):
            raise ClusterError(connect_error(address, exc)) from None
        raise  # a stop (Ctrl-C, SIGTERM) while Ray was starting
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
    _adopt_node()
    return True


@contextlib.contextmanager
def _keep_sigterm_handler():
    """Within it, ``ray.init`` leaves this process's SIGTERM handler as it is. Ray sets its own as it
    starts (``sys.exit(15)``: a run stopped then exited 15 with no word) and again as its driver
    connects (exit 1); infer-orch's (``orchestrator.run.stops.catch_sigterm``) takes Ctrl-C's way out,
    which also stops a Ray that is half started. A Ray without ``set_sigterm_handler`` is left as is."""
    try:
        from ray._private import utils
    except ImportError:
        yield
        return
    original = getattr(utils, "set_sigterm_handler", None)
    if original is None:
        yield
        return
    utils.set_sigterm_handler = lambda handler: None
    try:
        yield
    finally:
        utils.set_sigterm_handler = original


def _watch_start() -> Any:
    """The watchdog (``orchestrator.run.reaper``) of a node this driver is about to start: it watches
    every process below the driver until told the node's session directory."""
    from orchestrator.run import reaper

    return reaper.start("", [os.getpid()])


def _adopt_node() -> None:
    """After ``ray.init``: tell the watchdog the node's session directory; a driver that joined a
    cluster instead (``ray.init`` found one) releases it, so nothing of that cluster is touched."""
    global _REAPER
    if _REAPER is None:
        return
    _REAPER.unmark()
    session = _embedded_session()
    if session:
        _REAPER.tell(f"session {session}")
    elif session == "":
        _REAPER.release()
        _REAPER = None


def _abandon_start() -> None:
    """A ``ray.init`` that did not return: shut down what it started, then the watchdog removes the
    processes left (those below this driver, and the session's)."""
    global _REAPER
    import ray

    try:
        ray.shutdown()
    except BaseException:  # half started: the watchdog is the clean-up that counts
        pass
    if _REAPER is not None:
        _REAPER.stop(clean=False)
        _REAPER = None


def _embedded_session() -> str | None:
    """The session directory of the node this process started: "" when it started none (it joined a
    cluster), None when this Ray's internals don't say (the watchdog reads it from command lines)."""
    try:
        from ray._private import worker as ray_worker

        node = ray_worker._global_node
        pids = [info.process.pid for infos in node.all_processes.values() for info in infos
                if getattr(info, "process", None) is not None]
        return node.get_session_dir_path() if pids else ""
    except Exception:  # a Ray whose internals differ
        return None


@contextlib.contextmanager
def lean_node(worker_logs: bool = False):
    """Within it, a Ray this process starts (``ray.init`` with no address) leaves out the daemons a
    local node that lives for one run has no use for. Ray's own ``ray start`` has flags for the
    first two (``--no-monitor``, ``--include-log-monitor=false``); ``ray.init`` has none, so its
    node's parameters are set here:

    - the autoscaler's monitor: a local node has nothing to scale;
    - the log monitor, which tails every worker's log files and sends them to the driver: off
      unless the driver shows worker logs (``INFER_ORCH_WORKER_LOGS=1``);
    - the dashboard agent's HTTP server: the agent is started ``--minimal``, as for a Ray without the
      dashboard's packages. (Ray 2.60's agent still loads every module, its reporter included, which
      scans the worker processes every few seconds, timed iterations included; and with no API
      server its event module logs a failed lookup of the dashboard's address once a second.);
    - the API server (the dashboard's head process). The dashboard itself is off already
      (``include_dashboard=False``); what the server still serves is the state API (``ray list``),
      job submission and the dashboard's URL, which nothing of a run uses. Ray already goes on
      without it when it fails to start with the dashboard off; here it is not started.

    What stays: the GCS, the raylet and its object store, the dashboard agent (minimal) and the
    runtime-env agent (the raylet needs both). On 2 vCPUs the first three made ``ray.init`` take
    4.95 s instead of 6.43 (``bench/startup.py``, medians), 8.5-8.9 CPU-s instead of 10.4-11.1;
    leaving out the API server took it from 4.86 s to 3.26 s and about 1.8 CPU-s more off
    (BENCHMARKS.md, "A cold run's start-up"). A Ray whose internals differ is started as ``ray.init`` would:
    nothing here is needed for a run to work.
    """
    try:
        from ray._private import node, parameter, utils

        make_params, dependency_error = parameter.RayParams.__init__, utils.get_dashboard_dependency_error
        api_server = node.Node.start_api_server
    except (ImportError, AttributeError):  # moved or renamed: Ray's own start, as the docstring says
        yield
        return

    def lean_params(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("no_monitor", True)
        kwargs.setdefault("include_log_monitor", worker_logs)
        make_params(self, *args, **kwargs)

    def no_api_server(self: Any, *, include_dashboard: bool | None, **kwargs: Any) -> None:
        if include_dashboard:  # asked for by a caller: Ray's own start
            api_server(self, include_dashboard=include_dashboard, **kwargs)

    parameter.RayParams.__init__ = lean_params
    utils.get_dashboard_dependency_error = lambda: ImportError("infer-orch: an embedded node runs minimal")
    node.Node.start_api_server = no_api_server
    try:
        yield
    finally:
        parameter.RayParams.__init__, utils.get_dashboard_dependency_error = make_params, dependency_error
        node.Node.start_api_server = api_server


#: The watchdog of the embedded node this process started (see ``orchestrator.run.reaper``).
_REAPER: Any = None


def disconnect() -> None:
    """Shut down the Ray this process started (``connect`` returned True) and its watchdog."""
    import ray

    global _REAPER
    try:
        ray.shutdown()
    finally:
        if _REAPER is not None:
            _REAPER.stop()
            _REAPER = None


#: How long to wait for a Ray address to answer before giving up (Ray itself would wait minutes), s;
#: ``INFER_ORCH_CONNECT_WAIT_S`` sets it.
CONNECT_WAIT_S = 15.0


def connect_wait_s() -> float:
    """``INFER_ORCH_CONNECT_WAIT_S`` or ``CONNECT_WAIT_S``; a value that is not a positive number of
    seconds is refused with a line that names it (InputError, exit 2)."""
    return env_seconds("INFER_ORCH_CONNECT_WAIT_S", CONNECT_WAIT_S)


def _wait_for(address: str) -> None:
    """Wait at most ``connect_wait_s()`` for something to listen at ``address``; ClusterError if not."""
    target = address.removeprefix("ray://")
    if target == "auto":
        target = _auto_address()
        if target is None:
            return  # ray.init("auto") itself says at once that no cluster runs here
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"Ray address {address!r}: expected host:port, ray://host:port or auto")
    wait_s = connect_wait_s()
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=2):
                return
        except OSError as exc:
            if time.monotonic() >= deadline:
                raise ClusterError(
                    f"no Ray cluster answers at {address!r} (waited {wait_s:g} s: {exc.strerror or exc}); "
                    "check the address and that `ray start --head` runs there, or leave out --address "
                    "to start a local Ray"
                ) from None
            time.sleep(0.5)


def _use_token(address: str) -> None:
    """Token mode for a driver that has the cluster's token but no ``RAY_AUTH_MODE``.

    Ray (2.59+) turns token mode on by itself for ``auto`` when a token exists, never for an
    explicit address: ``--address HEAD_IP:6379`` on the head after ``ray start`` would then fail
    although ``~/.ray/auth_token`` is right there. Here a token given in ``RAY_AUTH_TOKEN`` or
    ``RAY_AUTH_TOKEN_PATH`` is used for any address, and ``~/.ray/auth_token`` for a cluster on
    this machine only (the same file Ray's own ``auto`` would send). A cluster without token
    authentication ignores it. An explicit ``RAY_AUTH_MODE`` is left as it is.
    """
    if "RAY_AUTH_MODE" in os.environ or address.startswith("ray://") or address == "auto":
        return
    if not (os.environ.get("RAY_AUTH_TOKEN")
            or os.path.isfile(os.environ.get("RAY_AUTH_TOKEN_PATH") or "/nonexistent")
            or (os.path.isfile(os.path.expanduser("~/.ray/auth_token")) and _on_this_machine(address))):
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    try:  # Ray reads its config (and caches the token) at import: have it read them again
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
    except Exception:  # a Ray without these: it reads RAY_AUTH_MODE when it connects
        pass


def _on_this_machine(address: str) -> bool:
    """Whether ``host:port`` names an address of this machine (one it can bind)."""
    host = address.rpartition(":")[0].strip("[]")
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    for family, _, _, _, sockaddr in infos:
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.bind((sockaddr[0], 0))
                return True
        except OSError:
            continue
    return False


def _auto_address() -> str | None:
    """The address ``ray.init(address="auto")`` would use, or None when there is none."""
    try:
        from ray._private.services import canonicalize_bootstrap_address

        return canonicalize_bootstrap_address("auto")
    except Exception:  # no cluster recorded on this machine, or a Ray without this helper
        return None


def connect_error(address: str | None, exc: BaseException) -> str:
    """The one-line message for a failed ``ray.init``; names the fix for token authentication."""
    where = f"Ray at {address!r}" if address else "an embedded local Ray"
    chain, e = [], exc
    while e is not None and len(chain) < 10:
        chain.append(e)
        e = e.__cause__ or e.__context__
    if any(type(c).__name__ == "AuthenticationError" or "InvalidAuthToken" in str(c) for c in chain):
        # Token auth is Ray's default for local clusters from 2.59 (all clusters from 2.61); a driver
        # that lacks the token fails here.
        return (f"could not reach {where}: the cluster uses token authentication; set RAY_AUTH_MODE=token "
                "and give its token in RAY_AUTH_TOKEN or a file named by RAY_AUTH_TOKEN_PATH "
                "(default ~/.ray/auth_token; `ray get-auth-token` on the head prints it)")
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"could not start or reach {where}: {type(exc).__name__}: {first}"


def worker_pythonpath() -> list[str]:
    """Where workers import ``python:`` factories from: the driver's directory and PYTHONPATH."""
    parts = [os.getcwd()] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return list(dict.fromkeys(parts))


def _worker_pythonpath() -> str:
    return os.pathsep.join(worker_pythonpath())
