"""Tiny models with several named inputs, used by tests/test_inputs.py as `python:` factories."""

import torch
from torch import nn

VOCAB = 50


class TwoInputs(nn.Module):
    """forward(input_ids, attention_mask): token ids (int64) and a float mask, like a text encoder."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 16)
        self.head = nn.Linear(16, 4)

    def forward(self, input_ids, attention_mask):
        h = self.emb(input_ids) * attention_mask.unsqueeze(-1)
        return self.head(h.sum(1) / attention_mask.sum(1, keepdim=True))


class TwoOutputs(TwoInputs):
    """Two outputs by name; ``pooled`` is off by half below fp32 (an injected wrong output)."""

    def forward(self, input_ids, attention_mask):
        h = self.emb(input_ids) * attention_mask.unsqueeze(-1)
        pooled = self.head(h.sum(1))
        if pooled.dtype != torch.float32:
            pooled = pooled * 1.5
        return {"hidden": h, "pooled": pooled}


class OneArg(nn.Module):
    """forward(x): rejects two named inputs with its own TypeError."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 2)

    def forward(self, x):
        return self.lin(x)


def two_inputs() -> nn.Module:
    return TwoInputs()


def two_outputs() -> nn.Module:
    return TwoOutputs()


def one_arg() -> nn.Module:
    return OneArg()
