"""torch-eager: the model run op by op, as most PyTorch code serves it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from workers.backends.base import BackendOptions, Lane, Runner
from workers.contract import Trial
from workers.models.build import Tensors

if TYPE_CHECKING:  # numpy: not imported by the driver, which only validates options
    import numpy as np


class TorchOptions(BackendOptions):
    channels_last: bool = False
    """Convert the model and 4-D inputs to channels_last (NHWC) memory format."""


def layout_skip_reason(trial: Trial) -> str | None:
    """channels_last is a layout of 4-D tensors: asked for on another input, the trial is skipped."""
    if trial.model.inputs:
        if trial.options.get("channels_last") and not any(len(i.shape) == 4 for i in trial.model.inputs):
            return "channels_last needs a 4-D input (batch, C, H, W); none of this model's inputs is 4-D"
        return None
    shape = trial.model.input_shape
    if trial.options.get("channels_last") and len(shape) != 3:
        return (f"channels_last needs 4-D inputs (batch, C, H, W); this model's input is "
                f"{len(shape) + 1}-D (batch, {', '.join(map(str, shape))})")
    return None


def prepare_torch(ctx: Any, channels_last: bool) -> tuple[Any, Tensors]:
    """The trial's model and inputs by name, on the device, in channels_last when asked (4-D ones).

    With ``io: host`` the inputs stay CPU tensors: the copies in are part of every step.
    """
    import torch

    from workers.measure import mathmode

    mathmode.apply_torch(mathmode.effective(ctx.trial))  # before the model is built, compiled or captured
    model = ctx.torch_model()
    xs = ctx.inputs(device=ctx.device if ctx.io == "device" else "cpu")
    if channels_last and any(x.dim() == 4 for x in xs.values()):
        model = model.to(memory_format=torch.channels_last)
        xs = {k: x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x for k, x in xs.items()}
    return model, xs


def pool_inputs(ctx: Any, seeds: list[int], channels_last: bool) -> list[Tensors]:
    """The trial's inputs drawn with each seed, where ``prepare_torch`` puts the trial's own (the device,
    or the host with ``io: host``), in channels_last where it converts them."""
    import torch

    device = ctx.device if ctx.io == "device" else "cpu"
    out = []
    for seed in seeds:
        xs = ctx.inputs(device=device, seed=seed)
        if channels_last:
            xs = {k: x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x for k, x in xs.items()}
        out.append(xs)
    return out


class TorchRunner(Runner):
    """What the torch backends share: torch's profiler, lanes, input copies timed (``io: host``), the
    layout options' skip reasons, and the math mode (set by ``prepare_torch``, read back from torch)."""

    profiler = "torch.profiler"
    Options = TorchOptions
    requires = ("torch",)
    concurrent = True
    #: IEEE fp32 matmuls with TF32 convolutions (PyTorch's defaults): neither mode
    math_before = None
    ctx: Any

    @classmethod
    def times_copies(cls, options: BackendOptions) -> bool:
        return True

    @classmethod
    def skip_reason(cls, trial: Trial, device_type: str) -> str | None:
        return layout_skip_reason(trial) or super().skip_reason(trial, device_type)

    def math_effective(self) -> str | None:
        from workers.measure import mathmode

        return mathmode.torch_effective(self.ctx.device)


class TorchEager(TorchRunner):
    name = "torch-eager"
    generation = "torch-eager"  # its generation path (workers.generation) in generation trials

    def lanes(self, k: int) -> list[Lane]:
        """k lanes sharing the model (read-only under inference_mode), each with its own inputs and,
        on a GPU, its own CUDA stream (the request's work queued there, then that stream synchronized)."""
        lanes = [eager_lane(self.ctx, self.model, self.x, self._to_host) for _ in range(k)]
        if self.ctx.device == "cuda":
            self._torch.cuda.synchronize()  # the lanes' input copies, made on this thread's stream
        return lanes

    def setup(self) -> None:
        import torch

        self._torch = torch
        from workers.models.build import map_outputs

        self._to_host = lambda y: map_outputs(lambda t: t.cpu(), y)
        self.model, self.x = prepare_torch(self.ctx, self.options.channels_last)
        self.y: Any = None

    def stage_pool(self, seeds: list[int]) -> str:
        self.pool = pool_inputs(self.ctx, seeds, self.options.channels_last)
        return "host" if self.ctx.io == "host" else "inputs"

    def use(self, k: int) -> None:
        self.x = self.pool[k]

    def step(self) -> None:
        with self._torch.inference_mode():
            if self.ctx.io == "host":
                dev = self.ctx.device
                y = self.ctx.call(self.model, {k: v.to(dev) for k, v in self.x.items()})
                self.y = self._to_host(y)
            else:
                self.y = self.ctx.call(self.model, self.x)

    def output(self) -> np.ndarray | dict[str, np.ndarray]:
        from workers.models.build import host_outputs

        return host_outputs(self.y)

    def teardown(self) -> None:
        self.model = self.x = self.y = self.pool = None


def eager_lane(ctx: Any, model: Any, xs: Tensors, to_host: Any) -> Lane:
    """A lane calling ``model`` (eager or compiled) on its own copy of the inputs, on its own stream."""
    import torch

    from workers.models.build import host_outputs

    cuda = ctx.device == "cuda"
    stream = torch.cuda.Stream() if cuda else None
    mine = {k: v.clone() for k, v in xs.items()}  # own buffers: no lane reads another's
    state: dict[str, Any] = {"y": None}

    def run() -> None:
        with torch.inference_mode():
            if stream is None:
                state["y"] = ctx.call(model, mine)
                return
            with torch.cuda.stream(stream):
                if ctx.io == "host":
                    y = ctx.call(model, {k: v.to(ctx.device) for k, v in mine.items()})
                    state["y"] = to_host(y)  # .cpu() waits for this stream's work
                else:
                    state["y"] = ctx.call(model, mine)
            stream.synchronize()

    return Lane(run=run, output=lambda: host_outputs(state["y"]))
