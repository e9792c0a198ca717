"""Shared fixtures: a real embedded Ray with logical GPUs, plan files written on the fly."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # One ONNX export cache for the session (exports are slow), never the user's own.
    monkeypatch.setenv("INFER_ORCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def ray_gpus(tmp_path_factory):
    """A real embedded Ray that believes it has 4 GPUs (Ray schedules; CUDA sees none here)."""
    import ray

    os.environ["INFER_ORCH_CACHE"] = str(tmp_path_factory.getbasetemp() / "cache")
    ray.init(num_cpus=4, num_gpus=4, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}",
                                       "INFER_ORCH_CACHE": os.environ["INFER_ORCH_CACHE"]}})
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
