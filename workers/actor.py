"""The worker: one per GPU (or per CPU slot), owning one backend runner at a time.

This is a plain class; the scheduler makes it a Ray actor with ``num_gpus=1`` so Ray pins it to
one GPU through CUDA_VISIBLE_DEVICES, and with the node's even CPU share.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from workers.models import ModelStore
from workers.trial import run_trial


class Worker:
    def __init__(self, name: str, device: str, cpus: float, seed: int = 0) -> None:
        import torch

        self.name, self.device, self.cpus = name, device, cpus
        # Intra-op threads = this worker's CPU share, so neighbours don't oversubscribe the node.
        torch.set_num_threads(max(1, int(cpus)))
        self.store = ModelStore(seed)
        self.cuda_ok = device != "cuda" or torch.cuda.is_available()

    def info(self) -> dict[str, Any]:
        import torch

        info = {
            "worker": self.name,
            "node": socket.gethostname(),
            "pid": os.getpid(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "device": self.device,
            "cuda_available": torch.cuda.is_available(),
        }
        if self.device == "cuda" and torch.cuda.is_available():
            info["device_name"] = torch.cuda.get_device_name()
        return info

    def environment(self) -> dict[str, Any]:
        """This worker's versions, host and device (the run's Parquet metadata holds them)."""
        from workers.envinfo import environment

        return {"worker": self.name, **environment(self.device if self.cuda_ok else "cpu")}

    def run(self, trial: dict[str, Any]) -> dict[str, Any]:
        row = run_trial(trial, self.device, self.store, self.cpus, cuda_ok=self.cuda_ok)
        row["worker"] = self.name
        row["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")
        return row
