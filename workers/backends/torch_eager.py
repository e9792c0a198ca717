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
    shape = trial.model.input_shape
    if trial.options.get("channels_last") and len(shape) != 3:
        return (f"channels_last needs 4-D inputs (batch, C, H, W); this model's input is "
                f"{len(shape) + 1}-D (batch, {', '.join(map(str, shape))})")
    return None


def prepare_torch(ctx: Any, channels_last: bool) -> tuple[Any, Any]:
    """The trial's model and input, on the device, in channels_last when asked for 4-D inputs.

    With ``io: host`` the input stays a CPU tensor: the copy in is part of every step.
    """
    import torch

    model = ctx.torch_model()
    x = ctx.input(device=ctx.device if ctx.io == "device" else "cpu")
    if channels_last and x.dim() == 4:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    return model, x


class TorchEager(Runner):
    name = "torch-eager"
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
        self.model, self.x = prepare_torch(self.ctx, self.options.channels_last)
        self.y: Any = None

    def step(self) -> None:
        with self._torch.inference_mode():
            if self.ctx.io == "host":
                y = self.model(self.x.to(self.ctx.device))
                self.y = y.cpu()
            else:
                self.y = self.model(self.x)

    def output(self) -> np.ndarray:
        return self.y.float().cpu().numpy()

    def teardown(self) -> None:
        self.model = self.x = self.y = None
