"""torch-cudagraph: the eager model captured once into a CUDA graph; each step is a replay.

Static input and output buffers; warm-up runs on a side stream before capture (as the PyTorch
docs require, so lazy initialisation and cuDNN autotuning are not captured). With ``io: host``
each step copies the host input into the static buffer and the output back to the host.

For the load scenarios each lane has its own graph, captured from the same model into its own
memory pool, with its own static buffers and CUDA stream: k lanes replay k graphs at once, as a
hand-written k-stream serving loop does (one graph replayed on two streams at once would share
its intermediate buffers).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from workers.backends.base import Lane
from workers.backends.torch_eager import TorchRunner, pool_inputs, prepare_torch
from workers.contract import Trial
from workers.models.build import Tensors

if TYPE_CHECKING:  # numpy: not imported by the driver, which only validates options
    import numpy as np

CAPTURE_WARMUP_ITERS = 3


class TorchCudaGraph(TorchRunner):
    name = "torch-cudagraph"
    generation = "torch-cudagraph"  # its generation path (workers.generation) in generation trials
    dtypes = {"cuda": frozenset({"fp32", "fp16", "bf16"}), "cpu": frozenset()}

    @classmethod
    def skip_reason(cls, trial: Trial, device_type: str) -> str | None:
        if device_type != "cuda":
            return "torch-cudagraph needs a CUDA device; skipped rather than run as eager"
        return super().skip_reason(trial, device_type)

    def setup(self) -> None:
        import torch

        from workers.models.build import map_outputs

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
        graph, static_y = self._capture(model, static_x)
        self.model, self.graph, self.static_x, self.static_y = model, graph, static_x, static_y
        self._to_host = lambda y: map_outputs(lambda t: t.cpu(), y)
        self.y: Any = static_y

    def _capture(self, model: Any, static_x: Tensors) -> tuple[Any, Any]:
        """A graph of one call of ``model`` on ``static_x`` (in a memory pool of its own), and its output."""
        import torch

        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph):
            static_y = self.ctx.call(model, static_x)
        torch.cuda.synchronize()
        return graph, static_y

    def lanes(self, k: int) -> list[Lane]:
        """k lanes: lane 0 replays the graph of setup, the others graphs of their own, each with its own
        static buffers and stream; the lane synchronizes its stream after each replay."""
        import torch

        from workers.models.build import host_outputs

        out = []
        for i in range(k):
            if i == 0:
                graph, static_x, static_y = self.graph, self.static_x, self.static_y
            else:
                static_x = {n: x.clone() for n, x in self.static_x.items()}
                torch.cuda.synchronize()
                graph, static_y = self._capture(self.model, static_x)
            out.append(self._lane(graph, static_x, static_y, torch.cuda.Stream(), host_outputs))
        torch.cuda.synchronize()
        return out

    def _lane(self, graph: Any, static_x: Tensors, static_y: Any, stream: Any, host_outputs: Any) -> Lane:
        import torch

        host_x, to_host = self.host_x, self._to_host
        state: dict[str, Any] = {"y": static_y}

        def run() -> None:
            with torch.cuda.stream(stream):
                if host_x is not None:
                    for n, x in host_x.items():
                        static_x[n].copy_(x)
                    graph.replay()
                    state["y"] = to_host(static_y)
                else:
                    graph.replay()
            stream.synchronize()

        return Lane(run=run, output=lambda: host_outputs(state["y"]))

    def step(self) -> None:
        if self.host_x is not None:
            for k, x in self.host_x.items():
                self.static_x[k].copy_(x)
            self.graph.replay()
            self.y = self._to_host(self.static_y)
        else:
            self.graph.replay()

    def stage_pool(self, seeds: list[int]) -> str:
        """One graph for every entry: ``use`` copies an entry into the graph's static inputs (device to
        device, timed), or with ``io: host`` makes it the host input the step copies in."""
        self.pool = pool_inputs(self.ctx, seeds, self.options.channels_last)
        return "host" if self.host_x is not None else "copy"

    def use(self, k: int) -> None:
        if self.host_x is not None:
            self.host_x = self.pool[k]
            return
        for n, x in self.pool[k].items():
            self.static_x[n].copy_(x)

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
        from workers.models.build import host_outputs

        return host_outputs(self.y)

    def teardown(self) -> None:
        self.graph = self.model = self.static_x = self.static_y = self.y = self.host_x = self.pool = None
