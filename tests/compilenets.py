"""Small `python:` models for the torch-compile tests: one that recompiles after setup, one MLP."""

import torch
from torch import nn

# Flipped by a function Dynamo does not trace, so the compiled forward guards on its value alone:
# exactly one recompile, at the first call after `late_after` calls.
_STATE = {"calls": 0, "late": False, "late_after": 3}


@torch.compiler.disable
def _tick() -> None:
    _STATE["calls"] += 1
    _STATE["late"] = _STATE["calls"] > _STATE["late_after"]


class _Unstable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        y = self.conv(x)
        _tick()  # a graph break, and the Python state the next graph depends on
        if _STATE["late"]:
            y = y + 1
        return y.mean((2, 3))


def make_unstable() -> nn.Module:
    """Graph-breaks once, and recompiles at its 4th call: inside timing, after torch-compile's 3 setup calls."""
    _STATE.update(calls=0, late=False)
    return _Unstable()


def make_mlp() -> nn.Module:
    """A model with a 2-D input (batch, features): channels_last doesn't apply."""
    return nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
