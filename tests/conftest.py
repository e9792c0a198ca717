"""Shared fixtures: one real embedded Ray with logical GPUs for the whole run, plan files written on
the fly; and the run's isolation from the user's machine.

Isolation: before anything is collected or imported, every cache the code under test could write
(infer-orch's ONNX exports, ``$XDG_CACHE_HOME``, Inductor's and Triton's caches) points into one
temporary directory for the run, inherited by subprocesses, Ray workers and xdist workers alike, and
removed at the end. The run fails, naming the files, if anything was written under the user's own
infer-orch cache all the same.

pytest's own ``tmp_path`` directories are in that directory too (unless ``--basetemp`` is given).

Parallel runs: ``make test`` runs ``pytest -n 3 --dist loadfile`` (a module's tests stay on one xdist
worker, so module fixtures are built once). The ``xdist_group`` marks below (every Ray test in group
``ray``: one Ray per run) take effect with ``--dist loadgroup`` once xdist works with pytest 9 again.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import textwrap
from pathlib import Path
from unittest import mock

import pytest
from helpers import REPO

__all__ = ["REPO"]  # test modules import REPO from here

_ROOT_VAR = "INFER_ORCH_TESTS_TMP"  # set by the process that made the directory; xdist workers inherit it


def _user_caches() -> list[Path]:
    """Where the code would write its cache for this user, outside the tests (before _isolate)."""
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "infer-orch"
    own = os.environ.get("INFER_ORCH_CACHE")
    return [default] + ([Path(own)] if own and Path(own) != default else [])


def _snapshot(roots: list[Path]) -> dict[str, tuple[int, int]]:
    """Every file and directory under ``roots`` with its size and mtime: what a write would change."""
    seen: dict[str, tuple[int, int]] = {}
    for root in roots:
        if not root.exists():
            continue
        for p in [root, *root.rglob("*")]:
            try:
                st = p.lstat()
            except FileNotFoundError:  # removed while we looked
                continue
            seen[str(p)] = (st.st_size, st.st_mtime_ns)
    return seen


def _isolate() -> Path | None:
    """Point every cache into a fresh temporary directory; returns it, or None when a parent process
    (the xdist controller) already did and this process inherited its environment."""
    if os.environ.get(_ROOT_VAR):
        return None
    root = Path(tempfile.mkdtemp(prefix="infer-orch-tests-"))
    os.environ.update({
        _ROOT_VAR: str(root),
        "INFER_ORCH_CACHE": str(root / "infer-orch"),  # ONNX exports: shared by the whole run
        "XDG_CACHE_HOME": str(root / "xdg-cache"),  # anything else that caches under ~/.cache
        "TORCHINDUCTOR_CACHE_DIR": str(root / "inductor"),  # else /tmp/torchinductor_$USER, shared
        "TRITON_CACHE_DIR": str(root / "triton"),  # else ~/.triton
        "RAY_USAGE_STATS_ENABLED": "0",  # tests report nothing anywhere
    })
    return root


@pytest.hookimpl(tryfirst=True)  # before pytest's tmp_path factory reads --basetemp
def pytest_configure(config):
    # Runs before test modules are imported and before xdist starts its workers.
    # OpenMP threads wait for work passively (sleep) instead of spinning for a while first: two
    # pytest processes, Ray workers and CLI runs share the cores, and a thread spinning for a core
    # another process holds burns what that process needs. Thread counts stay as they are. In
    # test_parity, test_backends, test_hf and test_compile (-n 2): 133 CPU-s instead of 166, 75.6 s
    # instead of 91.8 on a 2-vCPU machine. Inherited by every subprocess.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    config._infer_orch_user_caches = _user_caches()
    config._infer_orch_tmp = _isolate()
    if config._infer_orch_tmp is not None:
        config._infer_orch_user_before = _snapshot(config._infer_orch_user_caches)
        if config.option.basetemp is None:
            # tmp_path under the run's own directory (xdist workers get theirs below it), not
            # /tmp/pytest-of-$USER/pytest-N: every pytest session started there deletes all but the
            # newest three, so on a machine where others run pytest too a long run lost the output
            # directory of a test mid-test (2026-11-26: test_resume's Ctrl-C test, "No such file").
            config.option.basetemp = str(config._infer_orch_tmp / "pytest")


def pytest_unconfigure(config):
    if getattr(config, "_infer_orch_tmp", None) is not None:
        shutil.rmtree(config._infer_orch_tmp, ignore_errors=True)
        os.environ.pop(_ROOT_VAR, None)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    config = session.config
    reporter = config.pluginmanager.get_plugin("terminalreporter")

    def say(line: str) -> None:
        if reporter is not None:
            reporter.write("\n")
            reporter.write_line(line, red=True, bold=True)

    if getattr(config, "_infer_orch_tmp", None) is not None:  # the process that owns the isolation
        before, after = config._infer_orch_user_before, _snapshot(config._infer_orch_user_caches)
        changed = sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))
        if changed:
            say(f"error: the tests wrote to the user's own cache ({len(changed)} paths changed): "
                + ", ".join(changed[:5]) + (" ..." if len(changed) > 5 else ""))
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED and not hasattr(config, "workerinput"):
        say("error: no tests ran (pytest exit code 5): check the paths and the -m/-k selection")


def _xdist_group(item) -> str | None:
    """Tests that must share an xdist worker: every user of the shared Ray (one Ray per run), and the
    tests of a module that share one of its module-scoped fixtures (built once, not once a worker)."""
    if "ray_gpus" in item.fixturenames:  # directly or through another fixture
        return "ray"
    module = item.nodeid.split("::", 1)[0]
    for defs in item._fixtureinfo.name2fixturedefs.values():
        if defs[-1].scope != "function" and defs[-1].baseid == module:
            return module
    return None


def pytest_itemcollected(item):
    # here, not in pytest_collection_modifyitems: xdist's own modifyitems may read the marks before ours runs.
    # Note: with pytest 9.2 and xdist 3.8 `--dist loadgroup` ignores these marks (xdist sets item._nodeid,
    # which pytest 9 no longer reads); `make test` uses `--dist loadfile` until that is fixed.
    group = _xdist_group(item)
    if group:
        item.add_marker(pytest.mark.xdist_group(group))


#: Test modules that take longest (``--durations`` on the 2-vCPU machine, longest first). `make test`
#: gives xdist's ``loadfile`` modules in collection order (``--no-loadscope-reorder``; by default it
#: orders them by their number of tests), so these start first and the short ones fill in after
#: them: the two processes then finish close together, not one of them alone on a long module.
LONG_FIRST = ("test_cluster.py", "test_stops.py", "test_compile.py", "test_resume.py", "test_report.py",
              "test_generation_plan.py", "test_cli.py", "test_scenarios.py", "test_ahead.py", "test_profiles.py",
              "test_generation.py", "test_guards.py", "test_run.py", "test_inputs.py", "test_parity.py", "test_hf.py",
              "test_bad_input.py", "test_processes.py", "test_faults.py", "test_startup.py", "test_validity.py",
              "test_compare.py", "test_sizing.py", "test_junit.py", "test_light_driver.py", "test_interleave.py",
              "test_scale.py", "test_backends.py")


def _long_first(items) -> None:
    rank = {name: i for i, name in enumerate(LONG_FIRST)}
    order = {id(item): n for n, item in enumerate(items)}
    items.sort(key=lambda item: (rank.get(item.path.name, len(rank)), order[id(item)]))


def pytest_collection_modifyitems(config, items):
    _long_first(items)
    if not any("gpu" in item.keywords for item in items):
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def ray_gpus():
    """A real embedded Ray that believes it has 4 GPUs (Ray schedules; CUDA sees none here), started
    once for the run and shared by every test that runs plans (``run_plan`` uses a Ray that is
    already initialised as it is). Tests of start-up itself run the CLI in a subprocess instead."""
    import ray

    # The workers get the tests' PYTHONPATH (and the run's isolated caches) by inheriting this
    # process's environment, as an embedded Ray's workers do in a real run (orchestrator.run.cluster
    # .connect); not through a job runtime_env, which sends every worker through Ray's runtime-env
    # agent and keeps actors off the prestarted workers: about 0.9 CPU-s more for each actor on
    # 2 vCPUs (10 runs of 2 actors: 47.5-48.8 CPU-s through a runtime_env, 30.0-31.1 inherited).
    # It is started as a run starts its embedded Ray (orchestrator.run.cluster.lean_node).
    from orchestrator.run.cluster import lean_node

    path = os.pathsep.join(filter(None, [str(REPO), str(REPO / "tests"), os.environ.get("PYTHONPATH")]))
    with mock.patch.dict(os.environ, {"PYTHONPATH": path}), lean_node():  # for the length of ray.init only
        ray.init(num_cpus=4, num_gpus=4, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def write_plan(tmp_path):
    """write_plan(yaml_text, name='plan.yaml') -> Path of a plan file in a fresh directory."""

    def _write(text: str, name: str = "plan.yaml") -> Path:
        p = tmp_path / name
        p.write_text(textwrap.dedent(text))
        return p

    return _write
