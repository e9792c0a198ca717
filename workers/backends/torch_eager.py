"""torch-eager: the model run op by op, as most PyTorch code serves it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from workers.backends.base import BackendOptions, Runner
from workers.contract import Trial

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


def prepare_torch(ctx: Any, channels_last: bool) -> tuple[Any, dict[str, Any]]:
    """The trial's model and inputs by name, on the device, in channels_last when asked (4-D ones).

    With ``io: host`` the inputs stay CPU tensors: the copies in are part of every step.
    """
    import torch

    model = ctx.torch_model()
    xs = ctx.inputs(device=ctx.device if ctx.io == "device" else "cpu")
    if channels_last and any(x.dim() == 4 for x in xs.values()):
        model = model.to(memory_format=torch.channels_last)
        xs = {k: x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x for k, x in xs.items()}
    return model, xs


class TorchEager(Runner):
    name = "torch-eager"
    profiler = "torch.profiler"
    Options = TorchOptions
    requires = ("torch",)

    @classmethod
    def times_copies(cls, options: BackendOptions) -> bool:
        return True

    @classmethod
    def skip_reason(cls, trial: Trial, device_type: str) -> str | None:
        return layout_skip_reason(trial) or super().skip_reason(trial, device_type)

    def setup(self) -> None:
        import torch

        self._torch = torch
        from workers.models import map_outputs

        self._to_host = lambda y: map_outputs(lambda t: t.cpu(), y)
        self.model, self.x = prepare_torch(self.ctx, self.options.channels_last)
        self.y: Any = None

    def step(self) -> None:
        with self._torch.inference_mode():
            if self.ctx.io == "host":
                dev = self.ctx.device
                y = self.ctx.call(self.model, {k: v.to(dev) for k, v in self.x.items()})
                self.y = self._to_host(y)
            else:
                self.y = self.ctx.call(self.model, self.x)

    def output(self) -> np.ndarray | dict[str, np.ndarray]:
        from workers.models import host_outputs

        return host_outputs(self.y)

    def teardown(self) -> None:
        self.model = self.x = self.y = None
