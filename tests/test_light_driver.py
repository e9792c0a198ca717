"""The driver stays light (no torch, torchvision, onnxruntime or transformers to check a plan),
backends are found in one place and say what they can do on their class, and the torchvision
table the driver checks names against matches the installed torchvision."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest
from conftest import REPO

from workers.backends import Runner, discover, get, registry
from workers.measure import envinfo, nvml
from workers.models import zoo
from workers.schema import SCHEMA

HEAVY = ("torch", "torchvision", "onnxruntime", "transformers")


def _modules_after(code: str) -> dict[str, object]:
    """Run ``code`` in a fresh interpreter (this tree first on the path); which heavy modules it
    imported, and what it printed last (a JSON value)."""
    probe = textwrap.dedent(code) + textwrap.dedent("""
        import json, sys
        print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in
                                ("torch", "torchvision", "onnxruntime", "transformers", "ray", "pyarrow", "numpy"))))
    """)
    proc = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    return {"modules": {m.split(".")[0] for m in json.loads(proc.stdout.splitlines()[-1])}, "stdout": proc.stdout}


def test_importing_the_registry_imports_no_heavy_library():
    got = _modules_after("""
        from workers.backends import registry
        runners = registry()
        assert {"torch-eager", "torch-cudagraph", "torch-compile", "ort", "sleep", "fault"} <= set(runners)
        for r in runners.values():
            r.Options()
    """)
    assert not got["modules"] & set(HEAVY), got["modules"]


@pytest.mark.parametrize("argv", [["validate", "plans/h100.yaml"], ["run", "plans/h100.yaml", "--dry-run"]])
def test_checking_a_plan_imports_no_heavy_library_nor_ray_pyarrow_numpy(argv):
    got = _modules_after(f"""
        from orchestrator.cli import app
        try:
            app({argv!r}, standalone_mode=False)
        except SystemExit as exc:
            assert not exc.code, exc.code
    """)
    assert "65 trials" in got["stdout"]
    assert not got["modules"] & {*HEAVY, "ray", "pyarrow", "numpy"}, got["modules"]


def test_the_drivers_environment_and_the_backends_listing_import_no_torch():
    got = _modules_after("""
        import orchestrator.run.api
        from orchestrator.run.inspect import describe
        from workers.measure.envinfo import environment
        env = environment("cpu")
        assert env["torch_version"] and env["cpu_model"], env
        assert {b["name"] for b in describe()["backends"]} >= {"torch-eager", "ort"}
    """)
    assert not got["modules"] & {"torch", "torchvision", "transformers", "ray"}, got["modules"]


def test_the_light_environment_has_the_keys_and_values_torch_gives():
    import torch

    light = envinfo._installed_versions()
    full = envinfo.versions()  # torch is imported in this process: its own answers
    assert set(light) == set(full)
    assert light["torch_version"] == torch.__version__ == full["torch_version"]
    assert light["cuda_version"] == torch.version.cuda
    if full["cudnn_version"] and light["cudnn_version"]:
        assert light["cudnn_version"] == full["cudnn_version"]


def test_what_a_worker_returns_unpickles_without_torch():
    """Rows and environments cross to the driver pickled: a torch object among their values (such as
    torch.__version__, a TorchVersion) would make the driver import torch to read them."""
    import io
    import pickle

    import torch  # noqa: F401 - a worker has torch imported: versions() then asks torch itself

    from orchestrator.plan.expand import expand
    from orchestrator.plan.load import parse_plan
    from workers.models.build import ModelStore
    from workers.trial import run_trial

    class Recorder(pickle.Unpickler):
        modules: set[str] = set()

        def find_class(self, module, name):
            self.modules.add(module)
            return super().find_class(module, name)

    (trial,) = expand(parse_plan({
        "name": "p", "device": "cpu", "models": [{"python": "tinynet:make", "input_shape": [3, 8, 8]}],
        "matrix": {"batch_sizes": [1], "backends": [{"backend": "sleep", "options": {"step_s": 0}}]},
        "measure": {"warmup_iters": 1, "iters": 3, "max_time_s": 1}}))
    row = run_trial(trial, "cpu", ModelStore())
    assert row["status"] == "ok", row.get("error")
    for value in (row, envinfo.environment("cpu")):
        Recorder(io.BytesIO(pickle.dumps(value))).load()
    assert not [m for m in Recorder.modules if m.split(".")[0] == "torch"], Recorder.modules


# --- backends: one place, capabilities on the class ---------------------------------------------

def test_a_module_with_a_named_runner_is_a_backend(tmp_path, monkeypatch):
    pkg = tmp_path / "morebackends"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "echo.py").write_text(textwrap.dedent("""
        from workers.backends.base import Runner

        class Base(Runner):  # no name: a shared base, not a backend
            def setup(self): pass
            def step(self): pass
            def output(self): return None

        class Echo(Base):
            name = "echo"
    """))
    (pkg / "helpers.py").write_text("from workers.backends.sleep import SleepRunner  # imported, not defined here\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = discover("morebackends")
    assert list(found) == ["echo"] and found["echo"].__module__ == "morebackends.echo"

    (pkg / "echo2.py").write_text("from morebackends.echo import Base\n\nclass Again(Base):\n    name = 'echo'\n")
    with pytest.raises(ValueError, match="'echo' is used twice: morebackends.echo.Echo and morebackends.echo2.Again"):
        discover("morebackends")


def test_every_backend_is_found_and_named_once():
    runners = registry()
    assert set(runners) == {"torch-eager", "torch-cudagraph", "torch-compile", "ort", "ort-genai", "sleep", "fault"}
    assert all(get(name) is cls and cls.name == name for name, cls in runners.items())
    with pytest.raises(KeyError, match="unknown backend 'nope'"):
        get("nope")


def test_copy_timing_is_the_runners_say():
    for name in ("torch-eager", "torch-cudagraph", "torch-compile"):
        assert get(name).times_copies(get(name).Options())
    ort = get("ort")
    assert ort.times_copies(ort.Options(io_binding=True)) and not ort.times_copies(ort.Options())
    assert not get("sleep").times_copies(get("sleep").Options())


def test_backend_columns_are_schema_columns_and_parity_keeps_a_subset():
    schema = set(SCHEMA.names)
    for cls in registry().values():
        assert cls.columns <= schema, (cls.name, cls.columns - schema)
        assert cls.kept_on_parity_failure <= cls.columns, cls.name
    assert get("ort").kept_on_parity_failure == {"export_cached", "export_route", "providers_used"}


@pytest.mark.parametrize("backend,options", [("ort", {}), ("torch-compile", {"backend": "eager"}),
                                             ("torch-eager", {}), ("sleep", {})])
def test_a_runner_adds_only_the_columns_its_class_declares(backend, options):
    """What extra_columns() returns, and the facts the trial context records, are in ``columns``."""
    from orchestrator.plan.expand import expand
    from orchestrator.plan.load import parse_plan
    from workers.context import TrialContext
    from workers.models.build import ModelStore

    (trial,) = expand(parse_plan({
        "name": "c", "device": "cpu", "models": [{"python": "tinynet:make", "input_shape": [3, 16, 16]}],
        "matrix": {"batch_sizes": [2], "backends": [{"backend": backend, "options": options}]}}))
    cls = get(backend)
    ctx = TrialContext(trial=trial, device="cpu", store=ModelStore())
    runner = cls(ctx, cls.Options.model_validate(trial.options))
    runner.setup()
    try:
        runner.step()
        added = set(runner.extra_columns()) | set(ctx.facts)
    finally:
        runner.teardown()
    assert added <= cls.columns, added - cls.columns
    assert backend in ("torch-eager", "sleep") or added  # the ones that add columns did


def test_scenarios_and_offers_come_from_the_class():
    from workers import scenarios

    every = {name for name, cls in registry().items() if set(cls.scenarios()) == set(scenarios.names())}
    assert every == {"torch-eager", "torch-cudagraph", "torch-compile", "ort"}  # lanes, and a generation path
    assert "generate" not in get("sleep").scenarios() and "offline" in get("sleep").scenarios()  # no generation
    assert get("fault").scenarios() == ("single-stream", "interleaved")  # no lanes: load-scenario trials skipped
    assert get("ort-genai").scenarios() == ("generate",)  # generation only
    names = [o.name for o in get("ort").offers(gpus=1)]
    assert names == ["ort", "ort + tensorrt"]
    assert [o.name for o in get("sleep").offers(gpus=0)] == ["sleep"]
    (cg,) = get("torch-cudagraph").offers(gpus=0)
    assert cg.unavailable == "needs a CUDA GPU; none is visible here"


def test_a_missing_library_makes_a_backend_unavailable_without_importing_it(monkeypatch):
    class Needs(Runner):
        name = "needs"
        requires = ("surely_not_installed_module",)

    assert Needs.unavailable() == "surely_not_installed_module not installed"
    # the installed libraries every backend requires are found without importing any of them
    got = _modules_after("""
        import json
        from workers.backends import registry
        print(json.dumps([name for name, cls in registry().items() if cls.unavailable() is None]))
    """)
    assert {"torch-eager", "ort"} <= set(json.loads(got["stdout"].splitlines()[-2])), got["stdout"]
    assert not got["modules"] & set(HEAVY), got["modules"]


def test_no_branch_on_a_backend_name_outside_the_backends():
    names = "|".join(re.escape(n) for n in registry())
    branch = re.compile(rf"""(==|!=)\s*["']({names})["']|["']({names})["']\s*(==|!=)|startswith\(["']torch""")
    hits = []
    for path in [*(REPO / "orchestrator").rglob("*.py"), *(REPO / "workers").rglob("*.py")]:
        if "backends" in path.relative_to(REPO).parts:
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if branch.search(line):
                hits.append(f"{path.relative_to(REPO)}:{i}: {line.strip()}")
    assert not hits, "\n".join(hits)


# --- GPUs from NVML -----------------------------------------------------------------------------

class FakeNvml:
    def __init__(self, gpus):
        self.gpus = gpus  # [(uuid, name)]

    def nvmlDeviceGetCount(self):
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetUUID(self, h):
        return self.gpus[h][0].encode()

    def nvmlDeviceGetName(self, h):
        return self.gpus[h][1]


def test_visible_gpus_come_from_nvml_and_honour_cuda_visible_devices(monkeypatch):
    nv = FakeNvml([("GPU-aaaa-1", "NVIDIA H100 80GB HBM3"), ("GPU-bbbb-2", "NVIDIA H200")])
    monkeypatch.setattr(nvml, "load", lambda: nv)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert envinfo.visible_gpus() == ["NVIDIA H100 80GB HBM3", "NVIDIA H200"]
    for mask, want in (("1", ["NVIDIA H200"]), ("GPU-bbbb,0", ["NVIDIA H200", "NVIDIA H100 80GB HBM3"]),
                       ("", []), ("0,7,1", ["NVIDIA H100 80GB HBM3"])):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", mask)
        assert envinfo.visible_gpus() == want, mask

    from orchestrator.run.inspect import describe

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    info = describe()
    assert info["nodes"][0]["gpus"] == 2 and info["versions"]["GPUs seen by"] == "NVML"
    rows = {b["name"]: b for b in info["backends"]}
    assert rows["torch-cudagraph"]["available"]
    monkeypatch.setattr(nvml, "load", lambda: None)
    assert envinfo.visible_gpus() is None
    info = describe()
    assert info["nodes"][0]["gpus"] == 0 and info["versions"]["GPUs seen by"].startswith("nothing: NVML is absent")


# --- the torchvision table ----------------------------------------------------------------------

def test_the_torchvision_table_names_what_torchvision_has():
    import torchvision
    from torchvision import models

    assert zoo.installed_version().startswith(zoo.TABLE_VERSION), \
        "regenerate workers/models/zoo.py for this torchvision"
    assert torchvision.__version__.startswith(zoo.TABLE_VERSION)
    modules = {"classification": models, "quantization": models.quantization, "detection": models.detection,
               "segmentation": models.segmentation, "video": models.video, "optical_flow": models.optical_flow}
    assert set(zoo.BY_TASK) == set(modules)
    for task, module in modules.items():
        assert sorted(zoo.BY_TASK[task]) == sorted(models.list_models(module=module)), task
    assert zoo.NAMES == tuple(sorted(models.list_models()))
    assert zoo.torchvision_names() == zoo.NAMES  # the same version: no import needed
    assert set(zoo.SHAPES) <= set(zoo.NAMES)


#: Models whose pretrained weights need more than 224 (position tables sized for 256 or 518) while the
#: random-weight model infer-orch builds runs at 224: test_models_run_at_their_default_shape runs them.
BIGGER_ONLY_WITH_WEIGHTS = ("swin_v2_b", "swin_v2_s", "swin_v2_t", "vit_h_14")


def test_default_shapes_fit_each_models_weights():
    """Every default shape is at least the model's minimum input; the ones that differ from 224
    are at its weights' crop size, and video models get (C, frames, H, W) with enough frames."""
    from torchvision import models

    for name in zoo.NAMES:
        shape = zoo.default_shape(name)
        weights = models.get_model_weights(name).DEFAULT
        meta = weights.meta
        assert shape[0] == 3, name
        fits = tuple(shape[-2:]) >= tuple(meta.get("min_size", (1, 1)))
        assert fits != (name in BIGGER_ONLY_WITH_WEIGHTS), (name, shape, meta.get("min_size"))
        if name in zoo.BY_TASK["video"]:
            assert len(shape) == 4 and shape[1] >= meta.get("min_temporal_size", 1), (name, shape)
        else:
            assert len(shape) == 3, name
        if name in zoo.SHAPES:
            crop = list(weights.transforms().crop_size)
            assert list(shape[-2:]) == crop * (2 // len(crop)), (name, shape, crop)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(zoo.SHAPES) + list(BIGGER_ONLY_WITH_WEIGHTS) + ["resnet50", "maxvit_t"])
def test_models_run_at_their_default_shape(name):
    """Shape inference on the meta device: no weights, no compute, the real forward."""
    import torch
    from torchvision import models

    with torch.device("meta"), torch.inference_mode():
        y = models.get_model(name, weights=None).eval()(torch.empty((1, *zoo.default_shape(name))))
    assert y.shape[0] == 1 and y.dim() == 2, (name, y.shape)
