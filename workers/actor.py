"""The worker: one per GPU (or per CPU slot), owning one backend runner at a time.

This is a plain class; the scheduler makes it a Ray actor with ``num_gpus=1`` so Ray pins it to
one GPU through CUDA_VISIBLE_DEVICES, and with the node's even CPU share.

A worker starts light: torch, onnxruntime and the rest are imported by the first trial that
needs them, so a worker that runs only model-less trials (``sleep``, ``fault``) never imports
them, and thousands of such workers fit one machine. A worker made with ``warm=True`` (the
run's plan has model trials) imports torch and initialises CUDA as it starts instead, while
the driver is still busy with its own start-up, so that work is done before its first trial.
A model-less trial on a worker that has not imported torch doesn't touch CUDA: it is timed on
the host, and its row has the host's device facts, as on a logical GPU.
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import replace
from typing import TypedDict

from workers.backends import get
from workers.contract import Status, Trial
from workers.measure.envinfo import EnvInfo
from workers.models import shipped
from workers.models.build import ModelStore
from workers.models.shipped import Shipped
from workers.row import Row
from workers.rows import failure_row, spec_columns
from workers.trial import run_trial, versions


class WorkerInfo(TypedDict, total=False):
    """Who and where a worker is (``Worker.info``)."""

    worker: str
    node: str
    pid: int
    cuda_visible_devices: str | None
    device: str
    cuda_available: bool | None  # None: not known yet (a light worker has not initialised CUDA)
    light: bool  # torch not imported
    device_name: str  # a GPU's, once CUDA is known to work


class Worker:
    def __init__(self, name: str, device: str, cpus: float, seed: int = 0, warm: bool = False,
                 shipped: Shipped | None = None) -> None:
        self.name, self.device, self.cpus = name, device, cpus
        self.store = ModelStore(seed)
        #: the run's model files by the driver's path, in the object store (``orchestrator.run.shipping``)
        self.shipped = shipped or {}
        self._cuda_ok: bool | None = None  # known once torch is imported
        if warm:
            self.warm()

    def warm(self) -> bool:
        """Import torch, set its threads and initialise CUDA, once; whether CUDA can be used."""
        if self._cuda_ok is None:
            import torch

            # Intra-op threads = this worker's CPU share, so neighbours don't oversubscribe the node.
            torch.set_num_threads(max(1, int(self.cpus)))
            self._cuda_ok = self.device != "cuda" or torch.cuda.is_available()
            if self.device == "cuda" and self._cuda_ok:
                try:
                    torch.empty(1, device="cuda")  # creates the CUDA context (the first trial's cost otherwise)
                except Exception:  # left to the first trial, whose row then says what went wrong
                    pass
        return self._cuda_ok

    @property
    def light(self) -> bool:
        """True while this worker has not imported torch."""
        return self._cuda_ok is None and "torch" not in sys.modules

    def info(self) -> WorkerInfo:
        """Who and where this worker is; answers at once (the scheduler's readiness probe)."""
        info: WorkerInfo = {
            "worker": self.name,
            "node": socket.gethostname(),
            "pid": os.getpid(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "device": self.device,
            "cuda_available": self._cuda_ok if self.device == "cuda" else False,  # None: not known yet
            "light": self.light,
        }
        if self.device == "cuda" and self._cuda_ok:
            import torch

            info["device_name"] = torch.cuda.get_device_name()
        return info

    def modules(self) -> list[str]:
        """The names of the modules this worker's process has imported (what a test checks)."""
        return sorted(sys.modules)

    def environment(self) -> EnvInfo:
        """This worker's versions, host and device (the run's Parquet metadata holds them)."""
        from workers.measure.envinfo import device_facts, environment

        if self.light:  # a light worker doesn't import torch to describe itself
            return {"worker": self.name, "host": socket.gethostname(), "pid": os.getpid(), **versions(),
                    **device_facts("cpu")}
        return {"worker": self.name, **environment(self.device if self.warm() else "cpu")}

    def run(self, trial: Trial) -> Row:
        source = trial.model.ref
        spec = spec_columns(trial)  # the driver's trial: its model_source names the driver's file
        arm_specs = [spec_columns(a) for a in trial.arms]  # an interleaved unit's other trials (Trial.arms)
        try:
            trial = replace(localised(trial, self.shipped),
                            arms=tuple(localised(a, self.shipped) for a in trial.arms))
        except Exception as exc:
            return failure_row(trial, Status.FAILED, f"could not get the run's copy of {source} on this node: "
                                                     f"{type(exc).__name__}: {exc}")
        if _modelless(trial.backend) and self._cuda_ok is None:
            cuda_ok = False  # not warmed: a model-less trial doesn't touch CUDA (see the module's doc)
        else:
            cuda_ok = self.warm()
        if trial.measure.process_repeats > 1:  # measured in fresh processes this worker starts
            from workers import processes

            starter = processes.Starter(self.name, self.device, self.cpus, self.store.seed)
            return processes.run(starter, trial, spec, cuda_ok)
        return self.run_here(trial, spec, cuda_ok, arm_specs)

    def run_here(self, trial: Trial, spec: Row, warm: bool, arm_specs: list[Row] | None = None) -> Row:
        """``trial`` (on this node's files) measured in this process; ``warm``: with CUDA, where it works;
        ``arm_specs``: the spec columns of an interleaved unit's other trials (none with process repeats)."""
        cuda_ok = self.warm() if warm else False
        worker = Row(worker=self.name, cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"))
        return run_trial(trial, self.device, self.store, self.cpus, cuda_ok=cuda_ok, spec=spec, worker=worker,
                         arm_specs=arm_specs or [])


def localised(trial: Trial, files: Shipped) -> Trial:
    """``trial`` on this node's copy of the files the driver shipped, not the driver's paths: its ONNX
    file's copy or its model folder's, and its factory's module importable from the copy."""
    source = trial.model.ref
    if trial.model.kind == "onnx" and source in files.get("onnx", {}):
        local = shipped.onnx_file(files["onnx"][source])
        trial = replace(trial, model=trial.model.model_copy(update={"ref": local}))
    if trial.model.kind == "hf-causal" and source in files.get("hf-causal", {}):
        folder = str(shipped.local_copy(files["hf-causal"][source]))
        trial = replace(trial, model=trial.model.model_copy(update={"ref": folder}))
    top = shipped.top_module(source)
    if trial.model.kind == "python" and top in files.get("python", {}):
        shipped.use_module(files["python"][top])
    return trial


def _modelless(backend: str) -> bool:
    try:
        return get(backend).modelless
    except KeyError:  # run_trial turns an unknown backend into a failed row
        return False
