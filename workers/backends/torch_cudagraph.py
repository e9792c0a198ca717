"""torch-cudagraph: the eager model captured once into a CUDA graph; each step is a replay.

Static input and output buffers; warm-up runs on a side stream before capture (as the PyTorch
docs require, so lazy initialisation and cuDNN autotuning are not captured). With ``io: host``
each step copies the host input into the static buffer and the output back to the host.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from workers.backends.base import BackendOptions, Runner
from workers.backends.torch_eager import TorchOptions, layout_skip_reason, prepare_torch
from workers.contract import Trial

if TYPE_CHECKING:  # numpy: not imported by the driver, which only validates options
    import numpy as np

CAPTURE_WARMUP_ITERS = 3


class TorchCudaGraph(Runner):
    name = "torch-cudagraph"
    profiler = "torch.profiler"
    Options = TorchOptions
    dtypes = {"cuda": frozenset({"fp32", "fp16", "bf16"}), "cpu": frozenset()}
    requires = ("torch",)

    @classmethod
    def times_copies(cls, options: BackendOptions) -> bool:
        return True

    @classmethod
    def skip_reason(cls, trial: Trial, device_type: str) -> str | None:
        if device_type != "cuda":
            return "torch-cudagraph needs a CUDA device; skipped rather than run as eager"
        return layout_skip_reason(trial) or super().skip_reason(trial, device_type)

    def setup(self) -> None:
        import torch

        from workers.models import map_outputs

        model, xs = prepare_torch(self.ctx, self.options.channels_last)
        self.host_x = xs if self.ctx.io == "host" else None
        # one static buffer per input: the graph reads them at fixed addresses
        static_x = {k: x.to(self.ctx.device).clone() for k, x in xs.items()} if self.host_x is not None else xs
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(CAPTURE_WARMUP_ITERS):
                self.ctx.call(model, static_x)
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph):
            static_y = self.ctx.call(model, static_x)
        torch.cuda.synchronize()
        self.model, self.graph, self.static_x, self.static_y = model, graph, static_x, static_y
        self._to_host = lambda y: map_outputs(lambda t: t.cpu(), y)
        self.y: Any = static_y

    def step(self) -> None:
        if self.host_x is not None:
            for k, x in self.host_x.items():
                self.static_x[k].copy_(x)
            self.graph.replay()
            self.y = self._to_host(self.static_y)
        else:
            self.graph.replay()

    def checks_stale(self) -> bool:
        return True

    def feed(self, seed: int) -> None:
        """Into the buffers the step reads: the host inputs it copies from (``io: host``), or the
        graph's static inputs (``io: device``)."""
        import torch

        xs = self.ctx.inputs(device="cpu", seed=seed)
        with torch.no_grad():
            for k, x in xs.items():
                (self.host_x if self.host_x is not None else self.static_x)[k].copy_(x)

    def output(self) -> np.ndarray | dict[str, np.ndarray]:
        from workers.models import host_outputs

        return host_outputs(self.y)

    def teardown(self) -> None:
        self.graph = self.model = self.static_x = self.static_y = self.y = self.host_x = None
