"""A `python:` model whose forward fills a 200 MB host buffer for a moment: a trial with a known
host memory peak (tests/test_memory.py)."""

import torch
from torch import nn

BUFFER_BYTES = 200 * 2**20


class Big(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        buf = torch.ones(BUFFER_BYTES // 4)  # float32, every page written
        return x.flatten(1)[:, :4] * buf[0]


def make() -> nn.Module:
    return Big()
