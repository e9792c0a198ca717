"""The memory columns (workers/measure/memory.py): what a CPU machine can check (host RSS per trial, GPU
columns null rather than zero), and on a GPU that the numbers add up."""

from __future__ import annotations

import time

import pytest
from helpers import GPU_BACKEND_IDS, GPU_BACKENDS, run_all, trials_for

from workers.measure import memory
from workers.schema import NAMES

MB = 2**20
GPU_COLUMNS = ("torch_mem_peak_allocated_bytes", "torch_mem_peak_reserved_bytes", "gpu_mem_process_bytes",
               "gpu_mem_used_before_bytes", "gpu_mem_used_after_bytes")


def test_every_memory_column_is_in_the_schema():
    assert set(memory.COLUMNS) <= NAMES


def test_host_rss_peak_is_the_trials_own():
    """A trial whose forward fills 200 MB peaks about 200 MB higher than the small trial run right
    after it in the same process: the second does not inherit the first's high-water mark."""
    big, small = (trials_for(["torch-eager"], models=(m,), io=("host",))[0]
                  for m in ("python:bignet:make", "python:tinynet:make"))
    rows = run_all([big, small])
    assert [r["status"] for r in rows] == ["ok", "ok"], [r["error"] for r in rows]
    b, s = rows
    assert b["host_rss_peak_method"] == s["host_rss_peak_method"] == "clear_refs"  # Linux lets us reset it
    assert b["host_rss_peak_bytes"] - s["host_rss_peak_bytes"] > 180 * MB, (b["host_rss_peak_bytes"],
                                                                            s["host_rss_peak_bytes"])
    for r in rows:  # a CPU trial: GPU memory unknown, never zero
        assert all(r[k] is None for k in GPU_COLUMNS), {k: r[k] for k in GPU_COLUMNS}
        assert r["gpu_mem_process_note"] is None and r["gpu_mem_peak_bytes"] is None


def test_sampled_fallback_sees_a_short_peak(monkeypatch):
    """Where /proc/self/clear_refs is refused, a sampling thread finds the peak instead."""
    import numpy as np

    monkeypatch.setattr(memory, "_reset_high_water_mark", lambda: False)
    reads, real_rss = [], memory._rss

    def counted_rss():
        reads.append(1)
        return real_rss()

    monkeypatch.setattr(memory, "_rss", counted_rss)
    quiet = memory.HostPeak()
    time.sleep(0.05)
    base = quiet.finish()
    watch = memory.HostPeak()
    buf = np.ones(200 * MB // 8)
    # the peak lasts until the sampler has read the RSS twice more, however late a busy machine runs it
    seen, deadline = len(reads), time.monotonic() + 30
    while len(reads) < seen + 2 and time.monotonic() < deadline:
        time.sleep(memory.SAMPLE_S)
    del buf
    got = watch.finish()
    assert got["host_rss_peak_method"].startswith("sampled")
    assert got["host_rss_peak_bytes"] - base["host_rss_peak_bytes"] > 180 * MB
    assert watch._thread is not None and not watch._thread.is_alive()


@pytest.mark.gpu
@pytest.mark.parametrize("backend", GPU_BACKENDS, ids=GPU_BACKEND_IDS)
def test_gpu_memory_adds_up(backend):
    """On a GPU, one trial per backend: NVML's memory of the worker process >= what torch's allocator
    reserved >= what it allocated; the device's used memory is known before and after; host RSS too."""
    import torch

    from workers.models.build import ModelStore
    from workers.trial import run_trial

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    trial = trials_for([backend], models=("torchvision:resnet18",), io=("device",), device="cuda")[0]
    row = run_trial(trial, "cuda", ModelStore(), cpus=1)
    assert row["status"] == "ok", row["error"]
    alloc, reserved = row["torch_mem_peak_allocated_bytes"], row["torch_mem_peak_reserved_bytes"]
    assert 0 < alloc <= reserved
    if backend["backend"] != "ort":
        assert alloc > 40 * MB  # resnet18's fp32 weights alone are ~45 MB
    proc = row["gpu_mem_process_bytes"]
    if proc is None:
        assert row["gpu_mem_process_note"], "a null process figure must say why"
    else:
        assert row["gpu_mem_process_note"] is None
        assert proc >= reserved, (proc, reserved)
    before, after = row["gpu_mem_used_before_bytes"], row["gpu_mem_used_after_bytes"]
    assert before > 0 and after > 0
    assert after - before <= (proc or after), (before, after, proc)
    assert row["host_rss_peak_bytes"] > 0
