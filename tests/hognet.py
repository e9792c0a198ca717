"""A `python:` model whose forward asks for 1 TiB: a real CUDA out-of-memory on any GPU (GPU tests)."""

import torch
from torch import nn


class Hog(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_empty((1 << 38,)).sum().expand(x.shape[0], 1)


def make() -> nn.Module:
    return Hog()
