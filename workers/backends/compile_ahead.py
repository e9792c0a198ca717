"""torch.compile's code built ahead: Inductor's lowering and code generation, without the trial's GPU time.

A ``torch-compile`` trial's setup compiles its model: Dynamo captures the graph, AOT autograd
traces it, Inductor lowers it and generates code (Triton kernels on a GPU, C++ on a CPU), then the
first calls run it (with CUDA graphs, record and replay). Inductor's FX graph cache, per node
(``<node cache>/inductor``), makes a second compile of the same graph skip the lowering, the code
generation and the kernels' compiles: 7.7-8.5 s of a 13-14 s ResNet-50 compile on an H100
(BENCHMARKS.md, "Where a sweep's worker-time goes").

:func:`build` fills that cache ahead, in a build-ahead task (``workers/ahead.py``): it traces the
trial's model with *fake tensors* (``torch._subclasses.FakeTensorMode``: shapes, dtypes, strides and
devices, no data) and hands each captured graph to Inductor exactly as ``torch.compile`` would (the
mode's options, the same wrapper), then runs nothing: the graph the fake call returns is the traced
one, evaluated on fake tensors. No weights and no inputs reach a device and no kernel is launched.
Inductor's CUDA code generation still needs the GPU's properties and loads the kernels it compiled,
which creates a CUDA context: so a build for a ``cuda`` trial runs with one GPU of its node visible
(``RayAhead`` picks which, and says so), the others with none.

The worker and the builder meet at one marker per compile key (:func:`marker`), an artifact of the
node's cache (``workers.models.artifacts.once``): a worker that finds it compiles warm; one that finds
a builder holding it waits (its row's ``artifact_wait_s``); one that finds neither compiles itself,
holding the marker's lock (``artifact_build_s``), so nobody compiles the same graph twice at once.
A marker says a build happened, not that the cache still holds it: a cleared cache means a cold
compile (``compile_cache_warm`` false), never a wrong one. What is timed is unchanged: the worker
still captures, loads and runs its own compiled model, and records its CUDA graphs.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

from workers.contract import Trial
from workers.models.artifacts import Built, once
from workers.models.build import ModelStore, cache_dir

#: The intra-op threads of the workers a CPU trial's compile is built for: Inductor's C++ code (and
#: so its cache key) has the count in it. Set by the driver for a build-ahead task; unset, this process's.
WORKER_THREADS = "INFER_ORCH_WORKER_THREADS"


def key(trial: Trial) -> Hashable | None:
    """The compile a ``torch-compile`` trial's setup makes, as a build-ahead key; None: nothing to build
    ahead (a generation trial, a backend other than Inductor, a device the worker chooses: ``auto``, or
    a ``max-autotune`` mode: its compile times candidate kernels on the device, which is the worker's)."""
    o = trial.options
    if (trial.backend != "torch-compile" or trial.new_tokens or o.get("backend", "inductor") != "inductor"
            or trial.device not in ("cuda", "cpu") or str(o.get("mode", "default")).startswith("max-autotune")):
        return None
    return ("inductor", trial.model.key, trial.batch_size, trial.dtype, trial.device, trial.math,
            tuple(sorted(trial.axes.items())), o.get("mode", "default"), bool(o.get("dynamic")),
            bool(o.get("fullgraph")), bool(o.get("channels_last")))


def marker(trial: Trial) -> Path:
    """The node-cache file that says the compile of ``trial``'s key was made (by a builder or a worker)."""
    import torch

    digest = hashlib.sha256(repr((key(trial), torch.__version__)).encode()).hexdigest()[:24]
    return cache_dir() / "inductor" / "ahead" / f"{digest}.done"


def needs_gpu(trial: Trial) -> bool:
    """Whether building ``trial``'s compile ahead needs a GPU visible (Inductor's CUDA code generation)."""
    return key(trial) is not None and trial.device == "cuda"


def build(trial: Trial, store: ModelStore) -> Built:
    """Fill the node's Inductor cache with ``trial``'s compile (see the module docstring)."""
    return once(marker(trial), lambda tmp: _write(tmp, fake_compile(trial, store)))


def compile_once(trial: Trial, compile_calls: Callable[[], None]) -> Built:
    """Run the worker's ``compile_calls`` (its first calls of the compiled model) once the marker is free:
    after a builder's build (waited for), or holding its lock (the worker compiles first and marks it)."""
    built = once(marker(trial), lambda tmp: (compile_calls(), _write(tmp, {"by": "worker"})))
    if built.cached:  # a build ahead (or a neighbour) filled the cache: compile warm now
        compile_calls()
    return built


def fake_compile(trial: Trial, store: ModelStore) -> dict[str, Any]:
    """Trace ``trial``'s model on fake tensors and compile each graph with Inductor, running none."""
    import torch
    import torch._dynamo
    from torch._dynamo.utils import counters

    from workers.backends.torch_compile import CompileOptions, use_node_cache
    from workers.context import TrialContext

    o = CompileOptions.model_validate(trial.options)
    use_node_cache()
    torch._dynamo.reset()
    counters.clear()
    inductor = torch._TorchCompileInductorWrapper(None if o.mode == "default" else o.mode, None, o.dynamic)
    graphs = 0

    def compile_only(gm: Any, example_inputs: list[Any]) -> Any:
        nonlocal graphs
        inductor(gm, example_inputs)  # lowered, generated, kernels compiled: into the FX graph cache
        graphs += 1
        return gm.forward  # evaluated on fake tensors: shapes only, no device work

    ctx = TrialContext(trial=trial, device=trial.device, store=store)
    mode, model, xs = fake_prepared(ctx, o.channels_last)
    threads = torch.get_num_threads()
    if trial.device == "cpu" and os.environ.get(WORKER_THREADS):  # Inductor's C++ code bakes the count in
        torch.set_num_threads(int(os.environ[WORKER_THREADS]))
    try:
        with mode:
            compiled = torch.compile(model, dynamic=o.dynamic, fullgraph=o.fullgraph, backend=compile_only)
            with torch.inference_mode():
                ctx.call(compiled, xs)
    finally:
        torch.set_num_threads(threads)
        torch._dynamo.reset()
    ind = counters["inductor"]
    return {"by": "ahead", "graphs": graphs, "fxgraph_cache_hit": ind.get("fxgraph_cache_hit", 0),
            "fxgraph_cache_miss": ind.get("fxgraph_cache_miss", 0)}


def fake_prepared(ctx: Any, channels_last: bool) -> tuple[Any, Any, dict[str, Any]]:
    """(fake mode, model, inputs): what ``prepare_torch`` gives a worker (the device, the dtype, the
    layout, the math mode), its tensors fake: the model copied and converted on the CPU for real, then
    every parameter, buffer and input replaced by a fake tensor of its metadata on the trial's device."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    from workers.measure import mathmode

    mathmode.apply_torch(mathmode.effective(ctx.trial))
    model = ctx.store.torch_model(ctx.model, "cpu", ctx.dtype)
    xs = ctx.inputs(device="cpu")
    if channels_last and any(x.dim() == 4 for x in xs.values()):
        model = model.to(memory_format=torch.channels_last)
        xs = {k: x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x for k, x in xs.items()}
    mode = FakeTensorMode(allow_non_fake_inputs=True)

    def fake(t: Any) -> Any:
        f = mode.from_tensor(t)
        with mode:
            return f.to(device=ctx.device)

    for module in model.modules():
        for name, p in list(module._parameters.items()):
            if p is not None:
                module._parameters[name] = torch.nn.Parameter(fake(p), requires_grad=p.requires_grad)
        for name, b in list(module._buffers.items()):
            if b is not None:
                module._buffers[name] = fake(b)
    return mode, model, {k: fake(x) for k, x in xs.items()}


def _write(tmp: str, facts: dict[str, Any]) -> None:
    Path(tmp).write_text(json.dumps(facts))
