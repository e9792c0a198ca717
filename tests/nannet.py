"""A `python:` model whose output is all NaN: its trials must come out parity_failed."""

import torch
from torch import nn


class NanNet(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :4] * float("nan")


def make() -> nn.Module:
    return NanNet()
