"""``infer-orch cache``: what this machine's cache holds, per kind, and ``--clear``, which keeps an
artifact a build holds the lock of and removes what a killed build left."""

from __future__ import annotations

import fcntl
import multiprocessing
from pathlib import Path

from helpers import cli

from workers.models.artifacts import once


def _fill(root: Path) -> None:
    once(root / "onnx" / "a.onnx", lambda tmp: Path(tmp).write_bytes(b"x" * 3000))
    once(root / "onnx" / "b.onnx", lambda tmp: Path(tmp).write_bytes(b"y" * 1000))
    (root / "onnx" / "c.onnx.k3j.tmp").write_bytes(b"half")  # a killed build's temporary
    once(root / "genai" / "key1", lambda tmp: (Path(tmp) / "model.onnx").write_bytes(b"z" * 2048), folder=True)
    (root / "inductor" / "fxgraph" / "ab").mkdir(parents=True)
    (root / "inductor" / "fxgraph" / "ab" / "entry").write_bytes(b"w" * 100)
    (root / "huggingface").mkdir()  # another tool's cache under the same root
    (root / "huggingface" / "model.bin").write_bytes(b"v" * 10)


def _hold(lock: str, held, release) -> None:
    with open(lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        held.set()
        release.wait(30)


def test_lists_each_kind_and_clears_only_the_kind_asked_keeping_what_a_build_holds(tmp_path, monkeypatch):
    monkeypatch.setenv("INFER_ORCH_CACHE", str(tmp_path))
    _fill(tmp_path)
    res = cli("cache")
    assert res.returncode == 0
    lines = {ln.split("│")[1].strip(): [c.strip() for c in ln.split("│")[2:4]] for ln in res.stdout.splitlines()
             if ln.startswith("│")}
    assert lines["onnx"] == ["3", "3.9 KiB"] and lines["genai"] == ["1", "2.0 KiB"]
    assert lines["inductor"] == ["1", "100 B"] and "huggingface" not in lines
    assert "Also there, not infer-orch's (never cleared): huggingface" in res.stdout
    ctx = multiprocessing.get_context("spawn")
    held, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(tmp_path / "onnx" / "b.onnx.lock"), held, release))
    holder.start()
    try:
        assert held.wait(30)
        res = cli("cache", "--clear", "--kind", "onnx")
    finally:
        release.set()
        holder.join(30)
    assert res.returncode == 0 and "kept 1 being built or not removable" in res.stdout and "b.onnx" in res.stdout
    assert sorted(p.name for p in (tmp_path / "onnx").iterdir()) == ["a.onnx.lock", "b.onnx", "b.onnx.lock"]
    assert (tmp_path / "genai" / "key1" / "model.onnx").is_file() and (tmp_path / "inductor" / "fxgraph").is_dir()
    assert cli("cache", "--clear").returncode == 0
    left = [p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file() and not p.name.endswith(".lock")]
    assert left == [Path("huggingface/model.bin")]


def test_a_kind_not_in_the_cache_is_refused_naming_what_it_holds(tmp_path, monkeypatch):
    monkeypatch.setenv("INFER_ORCH_CACHE", str(tmp_path))
    _fill(tmp_path)
    res = cli("cache", "--clear", "--kind", "onxx")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "--kind onxx: not a part of infer-orch's cache; accepted: onnx, genai, inductor" in res.stderr
    res = cli("cache", "--clear", "--kind", "onnx", "--kind", "tensorrt")
    assert res.returncode == 2 and "--kind tensorrt: not in the cache at" in res.stderr
    assert "it holds: genai, inductor, onnx" in res.stderr
    assert (tmp_path / "onnx" / "a.onnx").is_file()  # nothing removed, the kind held neither
    monkeypatch.setenv("INFER_ORCH_CACHE", str(tmp_path / "none"))
    res = cli("cache")
    assert res.returncode == 0 and "Nothing cached at" in res.stdout


def test_on_a_cluster_each_node_reports_and_clears_its_own_cache(ray_gpus):
    """``--address``: a task pinned to each node lists and clears that node's cache (here the test
    Ray's one node, whose workers share this process's cache directory)."""
    import os

    root = Path(os.environ["INFER_ORCH_CACHE"])
    once(root / "tensorrt" / "k.engine", lambda tmp: Path(tmp).write_bytes(b"q" * 5000))  # no CPU test has one
    res = cli("cache", "--address", "auto", "--kind", "tensorrt")
    assert res.returncode == 0, res.stderr
    assert "tensorrt" in res.stdout and "4.9 KiB" in res.stdout and str(root) in res.stdout
    res = cli("cache", "--address", "auto", "--kind", "tensorrt", "--clear")
    assert res.returncode == 0 and "Cleared 4.9 KiB." in res.stdout, res.stdout
    assert not (root / "tensorrt" / "k.engine").exists()
