"""ort: ONNX Runtime on an ONNX export of the torch model (or a given ``.onnx`` file).

How the session is driven is explicit in every row, because it decides the answer:

- ``io: host`` and ``io_binding: false``: ``session.run`` with a numpy array in and numpy out,
  ORT's default path; the host<->device copies are part of each step.
- ``io_binding: true``: inputs and outputs are device buffers (torch tensors) bound to the
  session by pointer, so the step is the model alone (``io: device``), or the model plus one
  torch copy in and one out (``io: host``).
- ``cuda_graph: true``: ORT's own CUDA graph (``enable_cuda_graph``), which needs IO binding at
  fixed addresses.

CUDA provider options users tune for speed (``cudnn_conv_algo_search``, ``prefer_nhwc``,
``arena_extend_strategy``) are passed only when set, so unset means ORT's own default; the row's
``ort_provider_options`` records what the session really used. ``prefer_nhwc`` on a build whose
CUDA provider doesn't report it is skipped with that reason.

fp16 trials run an ONNX graph exported from the fp16 model (its input and weights are float16,
checked on the session), never an fp32 graph fed cast inputs.

TensorRT (``providers: [tensorrt, cuda]``) needs the TensorRT libraries the provider library
links to (``libnvinfer.so.10``...). They are looked for by loading them (no GPU, no session);
when missing, the trial is skipped naming them. Engines and timing caches go to the per-node
``<node cache>/tensorrt`` directory; ``engine_build_s`` is the session creation plus first run
(where the engine is built or loaded) and ``compile_cache_warm`` whether no new engine was written.

After the session is created its providers are checked: a trial that asked for CUDA and got
the CPU fails with that message rather than publishing a CPU number as a GPU one.

Load scenarios: each lane is a session of its own (its own CUDA stream, arena and, with IO
binding, its own bound buffers), run only on its lane's thread. ORT keeps its CUDA graph per
thread, and two captures at once fail ("CUDA failure 900: operation not permitted when stream is
capturing"): a lane's first runs (``GRAPH_SERIAL_RUNS``, the regular run and the capture) run one
lane at a time, then all lanes replay at once. Where a capture fails all the same, the trial is
``skipped`` with ORT's message.
"""

from __future__ import annotations

import json
import time
from collections.abc import Hashable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workers.backends.base import NEEDS_GPU, BackendOptions, Lane, Offer, Runner, SkipTrial
from workers.backends.ort_options import CUDA_OPTIONS, OrtOptions
from workers.backends.ort_session import (
    OPT_LEVELS,
    ORT_TYPES,
    PROVIDERS,
    ort_version,
    output_meta,
    probe_outputs,
    static_outputs,
)
from workers.backends.trt_libs import tensorrt_missing
from workers.contract import Trial
from workers.models.build import ModelStore, Tensors, cache_dir
from workers.row import Row

if TYPE_CHECKING:  # numpy: not imported by the driver, which only validates options
    import numpy as np

TRIAL_DTYPE = {"fp32": "tensor(float)", "fp16": "tensor(float16)"}
#: A CUDA-graph lane's first runs that capture (ORT runs once, or not, before it captures): one lane at a time.
GRAPH_SERIAL_RUNS = 2


class OrtRunner(Runner):
    name = "ort"
    generation = "ort"  # its generation path (workers.generation) in generation trials
    Options = OrtOptions
    dtypes = {"cuda": frozenset({"fp32", "fp16"}), "cpu": frozenset({"fp32"})}
    model_kinds = frozenset({"torchvision", "python", "hf", "onnx"})
    requires = ("onnxruntime", "torch")  # torch: the export, and the device buffers of IO binding
    # export_cached, export_s, artifact_*: recorded by the trial context when the runner asks for the ONNX export
    columns = frozenset({"export_cached", "export_s", "export_route", "providers_used", "ort_provider_options",
                         "engine_build_s", "compile_cache_warm", "artifact_wait_s", "artifact_build_s"})
    kept_on_parity_failure = frozenset({"export_cached", "export_route", "providers_used"})
    profiler = "onnxruntime (a second session with enable_profiling, after timing)"
    concurrent = True

    @classmethod
    def times_copies(cls, options: BackendOptions) -> bool:
        # session.run copies inside ORT, where they can't be timed apart; bound buffers are ours.
        return bool(getattr(options, "io_binding", False))

    @classmethod
    def offers(cls, gpus: int) -> list[Offer]:
        """ORT, and ORT with providers [tensorrt, cuda] as a row of its own: it needs libraries of its own."""
        rows = super().offers(gpus)
        if rows[0].unavailable is None:
            reason = tensorrt_missing() or (None if gpus else NEEDS_GPU)
            rows.append(Offer("ort + tensorrt", {"cuda": cls.dtypes["cuda"], "cpu": frozenset()}, reason,
                              "ort with providers tensorrt, cuda; engines cached per node"))
        return rows

    @classmethod
    def skip_reason(cls, trial: Trial, device_type: str) -> str | None:
        opts = trial.options
        providers = opts.get("providers") or [device_type]
        if device_type == "cpu" and any(p != "cpu" for p in providers):
            return f"providers {providers} need a GPU; this trial runs on cpu"
        if opts.get("cuda_graph") and device_type != "cuda":
            return "ORT cuda_graph needs a CUDA device"
        if trial.io == "device" and not opts.get("io_binding") and device_type == "cuda":
            return "io: device needs io_binding: true (session.run takes host arrays only)"
        cuda_opts = [k for k in CUDA_OPTIONS if opts.get(k) not in (None, False)]
        if cuda_opts and "cuda" not in providers:
            return f"{', '.join(cuda_opts)}: CUDA provider options; this trial's providers are {providers}"
        if opts.get("prefer_nhwc") and ort_version() < (1, 20):
            # Before 1.20 the option was accepted but default builds had no NHWC kernels: a no-op.
            return "prefer_nhwc needs onnxruntime >= 1.20 (earlier default builds have no CUDA NHWC kernels)"
        if "tensorrt" in providers:
            missing = tensorrt_missing()
            if missing:
                return f"TensorRT provider: {missing}"
            from workers.measure import mathmode

            if mathmode.effective(trial) == "strict" and not mathmode.overridden():
                return mathmode.TENSORRT_STRICT
        return super().skip_reason(trial, device_type)

    @classmethod
    def ahead(cls, trial: Trial) -> Hashable | None:
        """The ONNX export of a torch model: what the export cache keys on, less what every trial of
        the run shares (seed, torch version); an ONNX file of the plan needs no build. A generation
        trial's: ORT GenAI's model builder's decoder (``workers.generation.source.ahead_key``)."""
        if trial.new_tokens:
            from workers.generation.source import ahead_key

            return ahead_key(trial, cls.dtypes)
        if trial.model.kind == "onnx":
            return None
        o = trial.options
        dynamic = bool(o.get("dynamic_shapes"))
        return ("onnx", trial.model.key, "dynamic" if dynamic else trial.batch_size, trial.dtype,
                o.get("exporter", "dynamo"), o.get("opset"), () if dynamic else tuple(sorted(trial.axes.items())))

    @classmethod
    def build_ahead(cls, trial: Trial, store: ModelStore) -> None:
        if trial.new_tokens:
            from workers.generation.source import build_ahead

            return build_ahead(trial)
        from workers.models.build import onnx_artifact

        o = OrtOptions.model_validate(trial.options)
        onnx_artifact(store, trial.model, trial.batch_size, trial.dtype, o.exporter, o.opset, trial.axes,
                      o.dynamic_shapes)

    def setup(self) -> None:
        import onnxruntime as ort
        import torch

        self._torch = torch
        o = self.options
        device = self.ctx.device
        providers = o.providers or [device]
        path = self.ctx.onnx_path(o.exporter, o.opset, o.dynamic_shapes)
        so = self._session_options(ort)
        device_id = torch.cuda.current_device() if device == "cuda" else 0
        engines = cache_dir() / "tensorrt"
        prov_list = self._provider_list(providers, device_id, engines)
        trt = "tensorrt" in providers
        engines_before = set(engines.glob("*.engine")) if trt else set()
        t_session = time.perf_counter()
        try:
            sess = ort.InferenceSession(path, sess_options=so, providers=prov_list)
        except Exception as exc:
            if o.prefer_nhwc and "nhwc" in str(exc).lower():
                raise SkipTrial(f"this onnxruntime build can't do prefer_nhwc: {exc}") from exc
            raise
        self._check_session(sess, providers, ort.get_available_providers())
        self._session_args = (path, so, prov_list)  # for the profiling session (profile)
        xs = self._check_inputs(sess)
        self.feeds = {k: x.numpy() for k, x in xs.items()}
        self.binding = None
        if o.cuda_graph:
            # ORT captures its CUDA graph on the session's first run, whatever that run is bound to:
            # after a plain session.run, every replay writes into ORT's own buffers of that run and
            # never into the bound output (ORT 1.31.1 on an H100: a wrong answer at every step). So
            # the output shapes come from the model, and the first run is the bound one.
            self.out_meta = static_outputs(sess) or probe_outputs(path, so, prov_list, self.feeds)
            self._bind(device, device_id, xs)
            sess.run_with_iobinding(self.binding)
            self.y: Any = list(self.dev_outs)
        else:
            # One plain run learns the output shapes and types (and serves as the first warm-up).
            outs = sess.run(None, self.feeds)
            self.out_meta = output_meta(sess, outs)
            self.y = outs
            if o.io_binding:
                self._bind(device, device_id, xs)
        self.build: Row = {}
        if trt:
            new = set(engines.glob("*.engine")) - engines_before
            self.build = {"engine_build_s": time.perf_counter() - t_session,
                          "compile_cache_warm": None if not (new or engines_before) else not new}

    def _session_options(self, ort: Any) -> Any:
        """The session's options: log level, graph optimisations and threads as the trial asks."""
        o = self.options
        so = ort.SessionOptions()
        so.log_severity_level = 3
        if o.graph_optimization_level is not None:
            so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPT_LEVELS[o.graph_optimization_level])
        threads = o.intra_op_num_threads
        if threads is None and self.ctx.device == "cpu":
            # ORT would take every core of the node; neighbouring actors own some of them.
            threads = max(1, int(self.ctx.cpus))
        if threads is not None:
            so.intra_op_num_threads = threads
        if o.inter_op_num_threads is not None:
            so.inter_op_num_threads = o.inter_op_num_threads
        return so

    def _provider_list(self, providers: list[str], device_id: int, engines: Path) -> list[Any]:
        """The providers as ORT takes them: a name, or (name, options) for CUDA and TensorRT."""
        prov_list: list[Any] = []
        for p in providers:
            name = PROVIDERS[p]
            if p == "cuda":
                prov_list.append((name, self._cuda_options(device_id)))
            elif p == "tensorrt":
                engines.mkdir(parents=True, exist_ok=True)
                prov_list.append((name, {
                    "device_id": device_id,
                    "trt_engine_cache_enable": "1", "trt_engine_cache_path": str(engines),
                    "trt_timing_cache_enable": "1", "trt_timing_cache_path": str(engines),
                    "trt_fp16_enable": "1" if self.options.trt_fp16 else "0",
                }))
            else:
                prov_list.append(name)
        return prov_list

    def _check_session(self, sess: Any, providers: list[str], available: list[str]) -> None:
        """The session runs on every provider asked for (else RuntimeError: no CPU number published as a
        GPU one), and with prefer_nhwc where asked (else SkipTrial); keeps what it really uses."""
        got = sess.get_providers()
        missing = [PROVIDERS[p] for p in providers if PROVIDERS[p] not in got]
        if missing:
            raise RuntimeError(
                f"asked for {', '.join(missing)} but the session runs on {', '.join(got)}; "
                f"available in this onnxruntime build: {', '.join(available)}"
            )
        self.sess, self.providers_used = sess, got
        effective = sess.get_provider_options()
        self.provider_options = {p: effective.get(p, {}) for p in got if p != PROVIDERS["cpu"] or len(got) == 1}
        if self.options.prefer_nhwc and effective.get(PROVIDERS["cuda"], {}).get("prefer_nhwc") != "1":
            raise SkipTrial("this onnxruntime build's CUDA provider does not support prefer_nhwc (it is not "
                            "among the options the session reports)")

    def _cuda_options(self, device_id: int) -> dict[str, str]:
        """The CUDA provider's options: only those set, so unset ones stay ORT's defaults."""
        o = self.options
        from workers.measure import mathmode

        opts = {"device_id": str(device_id), "enable_cuda_graph": "1" if o.cuda_graph else "0",
                **mathmode.ort_cuda_option(mathmode.effective(self.ctx.trial))}
        if o.cudnn_conv_algo_search is not None:
            opts["cudnn_conv_algo_search"] = o.cudnn_conv_algo_search
        if o.prefer_nhwc:
            opts["prefer_nhwc"] = "1"
        if o.arena_extend_strategy is not None:
            opts["arena_extend_strategy"] = o.arena_extend_strategy
        return opts

    def _check_inputs(self, sess: Any, seed: int | None = None) -> Tensors:
        """The trial's inputs (host tensors) by the session's input names, their types checked: floating
        inputs in the trial's dtype, the others in their own. ``seed``: drawn with it, not the trial's."""
        xs = self.ctx.inputs(device="cpu", seed=seed)
        inp = sess.get_inputs()
        if not self.ctx.model.inputs:  # the one-input form: the file's one input, whatever its name
            if len(inp) != 1:
                raise SkipTrial(f"the ONNX model has {len(inp)} inputs; declare them with inputs: in the plan")
            want = TRIAL_DTYPE.get(self.ctx.dtype)
            if inp[0].type != want:
                raise SkipTrial(f"the ONNX model's input is {inp[0].type}, not {want} ({self.ctx.dtype})")
            return {inp[0].name: xs["input"]}
        names = [i.name for i in inp]
        if set(names) != set(xs):
            raise RuntimeError(f"the ONNX model's inputs are {names}; the trial has {list(xs)}")
        for i in inp:
            got = ORT_TYPES.get(i.type, i.type)
            want = str(xs[i.name].dtype).removeprefix("torch.")
            if got != want:
                raise SkipTrial(f"the ONNX model's input '{i.name}' is {i.type}, not {want} ({self.ctx.dtype} trial)")
        return {n: xs[n] for n in names}

    def _bind(self, device: str, device_id: int, xs: Tensors) -> None:
        import numpy as np

        torch = self._torch
        self.dev_x = {k: x.to(device).contiguous() for k, x in xs.items()}
        self.dev_outs = [
            torch.empty(tuple(shape), dtype=torch.from_numpy(np.empty(0, dtype=dt)).dtype, device=device)
            for _, shape, dt in self.out_meta
        ]
        torch.cuda.synchronize() if device == "cuda" else None
        self._device_id = device_id
        self.binding = self._binding_for(self.sess)
        self.host_x = xs if self.ctx.io == "host" else None

    def _binding_for(self, sess: Any, dev_x: Tensors | None = None, dev_outs: list[Any] | None = None) -> Any:
        """An IO binding of ``sess`` to device buffers (this runner's, or a lane's), every input and output
        by pointer."""
        import numpy as np

        device, device_id = self.ctx.device, self._device_id
        b = sess.io_binding()
        for name, x in (self.dev_x if dev_x is None else dev_x).items():
            b.bind_input(name, device, device_id, self.feeds[name].dtype, tuple(x.shape), x.data_ptr())
        for (name, shape, dt), t in zip(self.out_meta, self.dev_outs if dev_outs is None else dev_outs):
            b.bind_output(name, device, device_id, np.dtype(dt), tuple(shape), t.data_ptr())
        return b

    def lanes(self, k: int) -> list[Lane]:
        """k lanes, each a session of its own (and, with IO binding, its own bound buffers and stream)."""
        import onnxruntime as ort

        path, so, providers = self._session_args
        return [self._lane(ort.InferenceSession(path, sess_options=so, providers=providers)) for _ in range(k)]

    def _lane(self, sess: Any) -> Lane:
        state: dict[str, Any] = {}
        if self.binding is None:
            feeds = {n: a.copy() for n, a in self.feeds.items()}

            def run_plain() -> None:
                state["y"] = sess.run(None, feeds)

            return Lane(run=run_plain, output=lambda: self._arrays(state["y"]))
        torch = self._torch
        device = self.ctx.device
        dev_x = {n: x.clone() for n, x in self.dev_x.items()}
        dev_outs = [torch.empty_like(t) for t in self.dev_outs]
        torch.cuda.synchronize() if device == "cuda" else None
        b = self._binding_for(sess, dev_x, dev_outs)
        host_x = self.host_x
        stream = torch.cuda.Stream() if device == "cuda" else None
        state["y"] = dev_outs
        graph = self.options.cuda_graph
        runs = [0]

        def run_bound() -> None:
            if host_x is not None:
                with torch.cuda.stream(stream):
                    for name, x in host_x.items():
                        dev_x[name].copy_(x)
                if stream is not None:
                    stream.synchronize()  # ORT runs on its own stream: the inputs are there first
            try:
                sess.run_with_iobinding(b)  # returns when ORT's stream is done
            except Exception as exc:
                if graph and runs[0] < GRAPH_SERIAL_RUNS:
                    k = self.ctx.trial.concurrency
                    raise SkipTrial(f"ORT cuda_graph could not capture a graph per session on {k} threads "
                                    f"(captures run one at a time): {str(exc)[:300]}") from exc
                raise
            runs[0] += 1
            if host_x is not None:
                with torch.cuda.stream(stream):
                    state["y"] = [t.cpu() for t in dev_outs]

        return Lane(run=run_bound, output=lambda: self._arrays(state["y"]),
                    serial_runs=GRAPH_SERIAL_RUNS if graph else 0)

    def _arrays(self, ys: list[Any]) -> np.ndarray | dict[str, np.ndarray]:
        import numpy as np

        arrays = [y if isinstance(y, np.ndarray) else y.float().cpu().numpy() for y in ys]
        arrays = [a.astype(np.float32) for a in arrays]
        if len(arrays) == 1:
            return arrays[0]
        return {name: a for (name, _, _), a in zip(self.out_meta, arrays)}

    def step(self) -> None:
        if self.binding is None:
            self.y = self.sess.run(None, self.feeds)
            return
        if self.host_x is not None:
            for name, x in self.host_x.items():
                self.dev_x[name].copy_(x)
            self.sess.run_with_iobinding(self.binding)
            self.y = [t.cpu() for t in self.dev_outs]
        else:
            self.sess.run_with_iobinding(self.binding)
            self.y = self.dev_outs

    def stage_pool(self, seeds: list[int]) -> str:
        """Without IO binding each entry is session.run's feeds (ORT copies them in: ``host`` on a GPU);
        bound, ``use`` copies an entry into the bound device buffers (``copy``: one CUDA graph for every
        entry), or with ``io: host`` makes it the host input the step copies in (``host``)."""
        entries = [self._check_inputs(self.sess, seed) for seed in seeds]
        if self.binding is None:
            self.pool = [{k: x.numpy() for k, x in xs.items()} for xs in entries]
            return "host" if self.ctx.device == "cuda" else "inputs"
        if self.host_x is not None:
            self.pool = entries
            return "host"
        self.pool = [{k: x.to(self.ctx.device) for k, x in xs.items()} for xs in entries]
        return "copy"

    def use(self, k: int) -> None:
        if self.binding is None:
            self.feeds = self.pool[k]
        elif self.host_x is not None:
            self.host_x = self.pool[k]
        else:
            for n, x in self.pool[k].items():
                self.dev_x[n].copy_(x)

    def checks_stale(self) -> bool:
        """ORT's CUDA graph, and TensorRT's engines: both replay what they captured or built."""
        return self.options.cuda_graph or "tensorrt" in (self.options.providers or [])

    def feed(self, seed: int) -> None:
        """Into what the step reads: the host inputs it copies into the bound buffers (``io: host``),
        the bound device buffers themselves (``io: device``), or session.run's feeds (no binding)."""
        xs = self._check_inputs(self.sess, seed)
        if self.binding is None:
            self.feeds = {k: x.numpy() for k, x in xs.items()}
            return
        for k, x in xs.items():
            (self.host_x if self.host_x is not None else self.dev_x)[k].copy_(x)

    def output(self) -> np.ndarray | dict[str, np.ndarray]:
        """The first output alone for a one-output model; else every output by the session's names."""
        return self._arrays(self.y)

    def profile(self, iters: int) -> bytes:
        """ORT fixes profiling when a session is created: a second session like the timed one, with
        ``enable_profiling``, made after timing; one run to warm it (a CUDA graph's capture, an
        engine's build or load), then ``iters`` steps as the timed ones ran them. ORT's trace is a
        JSON array of Chrome trace events (session creation and the warm run included)."""
        import tempfile

        import onnxruntime as ort

        path, so, providers = self._session_args
        with tempfile.TemporaryDirectory(prefix="infer-orch-profile-") as d:
            so.enable_profiling = True
            so.profile_file_prefix = str(Path(d) / "ort")
            try:
                sess = ort.InferenceSession(path, sess_options=so, providers=providers)
            finally:
                so.enable_profiling = False
            timed = self.sess, self.binding
            self.sess = sess
            self.binding = self._binding_for(sess) if self.binding is not None else None
            try:
                for _ in range(iters + 1):
                    self.step()
                trace = Path(sess.end_profiling())
                return trace.read_bytes()
            finally:
                self.sess, self.binding = timed
                del sess

    def math_effective(self) -> str | None:
        """From the options the session reports for each provider it uses (``use_tf32``), not the ones asked."""
        from workers.measure import mathmode

        sess = getattr(self, "sess", None)
        if sess is None:
            return None
        return mathmode.ort_effective(sess.get_provider_options(), sess.get_providers())

    def extra_columns(self) -> Row:
        return {"providers_used": list(getattr(self, "providers_used", [])),
                "ort_provider_options": json.dumps(getattr(self, "provider_options", {}), sort_keys=True),
                **getattr(self, "build", {})}

    def teardown(self) -> None:
        self.binding = self.sess = None
        self.dev_x = self.dev_outs = self.y = self.host_x = self.pool = None
