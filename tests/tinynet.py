"""A tiny CNN used by the tests as a `python:` model factory."""

import torch
from torch import nn


def make() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10),
    )


def not_a_module():
    return 42


class _WrongBelowFp32(nn.Module):
    """Right in fp32, off by half in any other dtype: an injected wrong output (a backend bug)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = make()

    def forward(self, x):
        y = self.net(x)
        return y if y.dtype == torch.float32 else y * 1.5


class _NanBelowFp32(_WrongBelowFp32):
    """Finite in fp32, NaN in any other dtype: an injected overflow."""

    def forward(self, x):
        y = self.net(x)
        return y if y.dtype == torch.float32 else y * float("nan")


def wrong_below_fp32() -> nn.Module:
    return _WrongBelowFp32()


def nan_below_fp32() -> nn.Module:
    return _NanBelowFp32()
