"""A tiny model for bench/fidelity.py's harness overhead (BENCHMARKS.md, "One request at a time").

A few microseconds of GPU work per inference, so the harness's own per-iteration cost is what shows."""

from torch import nn


def make() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 10))
