"""Mutated plans through `validate` (in-process, the command built once): whatever a plan holds,
the answer is valid (exit 0) or one located message (exit 2), never a traceback, and it comes
quickly.

A seeded random walk over a plan that uses most keys: a value replaced by one of another kind
(huge and negative numbers, infinities, strings, lists, mappings, nesting), a key dropped or
misspelt, an entry repeated, and on the text, a line repeated or dropped. The seed is fixed, so
a failure here is a plan to replay: the message names its file's text.
"""

from __future__ import annotations

import copy
import random
import time
from typing import Any

import yaml
from click.testing import CliRunner
from typer.main import get_command

from orchestrator.cli import app

BASE: dict[str, Any] = {
    "name": "fuzz",
    "device": "cpu",
    "seed": 0,
    "models": ["torchvision:resnet18", {"torchvision": "resnet50", "input_shape": [3, 64, 64], "name": "r50"}],
    "matrix": {
        "batch_sizes": [1, 8],
        "dtypes": ["fp32", "bf16"],
        "io": ["device", "host"],
        "backends": ["torch-eager", {"backend": "ort", "label": "ort-bound", "options": {"io_binding": True}},
                     {"backend": "sleep", "options": {"step_s": 0.001}, "timeout_s": 100, "retries": 1}],
        "exclude": [{"backend": "ort", "dtype": "bf16"}],
    },
    "scenario": {"name": "single-stream"},
    "budgets": [{"max_latency_ms": 50}, {"label": "ort-bound", "batch_size": 1, "max_p99_ms": 8}],
    "measure": {"warmup_iters": 2, "iters": 5, "max_time_s": 10, "target_rel_ci": 0.05},
    "parity": {"check": True, "tolerance": {"fp32": 0.05}},
    "timeout_s": 900,
}

ODD = [None, True, 0, -1, 1, 10**30, -(10**30), 1.5, float("inf"), float("-inf"), float("nan"), "", "abc", "1e30",
       "fp16", "torchvision:resnet18", "server", [], {}, [1, 2], [1, 1], ["x", None], {"a": 1}, {"backend": 0},
       "x" * 500, [[[[[[[[1]]]]]]]], {"name": {"name": {"name": 1}}}, 2**63, 2**63 - 1, -(2**63) - 1]
PLANS = 500
#: Each plan's bound: 500 took 1.5 s in all on a loaded two-core machine (3 ms each); 2 s is 600 times that.
PER_PLAN_S = 2.0


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _mutate(plan: dict[str, Any], rng: random.Random) -> None:
    path = rng.choice(_paths(plan)[1:])
    parent = plan
    for p in path[:-1]:
        parent = parent[p]
    key = path[-1]
    how = rng.random()
    if how < 0.6:
        parent[key] = copy.deepcopy(rng.choice(ODD))
    elif how < 0.7 and isinstance(parent, dict):
        del parent[key]
    elif how < 0.8 and isinstance(parent, dict):
        parent[key + "x" if isinstance(key, str) else "x"] = parent.pop(key)
    elif how < 0.9 and isinstance(parent, list):
        parent.append(copy.deepcopy(parent[key]))
    else:
        parent[key] = [parent[key]] if rng.random() < 0.5 else {"value": parent[key]}


def _text(plan: dict[str, Any], rng: random.Random) -> str:
    text = yaml.dump(plan, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False)
    if rng.random() < 0.15:  # a line repeated (a duplicate key, mostly) or dropped
        lines = text.splitlines()
        i = rng.randrange(len(lines))
        lines[i:i + 1] = [lines[i]] * 2 if rng.random() < 0.5 else []
        text = "\n".join(lines) + "\n"
    return text


def test_mutated_plans_are_valid_or_refused_in_one_located_line(tmp_path):
    rng = random.Random(34)
    runner, command = CliRunner(), get_command(app)  # the command built once: Typer builds it per invoke
    codes = {0: 0, 2: 0}
    for n in range(PLANS):
        plan = copy.deepcopy(BASE)
        for _ in range(rng.choice((1, 1, 2, 3))):
            _mutate(plan, rng)
        path = tmp_path / f"plan{n}.yaml"
        path.write_text(_text(plan, rng))
        t0 = time.perf_counter()
        result = runner.invoke(command, ["validate", str(path)], env={"COLUMNS": "200"})
        took = time.perf_counter() - t0
        out = result.stdout + result.stderr
        where = f"{path.name}:\n{path.read_text()}\n{out}"
        assert result.exception is None or isinstance(result.exception, SystemExit), where
        assert result.exit_code in (0, 2), where
        assert "Traceback" not in out and out.strip(), where
        assert took < PER_PLAN_S, f"{took:.2f} s: {where}"
        if result.exit_code == 2:
            assert all(line.startswith("error: ") for line in result.stderr.splitlines() if line), where
            # the validator's own words: its class names, its discriminator, its "after validation"
            for word in ("Unable to", "discriminator", "instance of", "extract fields", "after validation",
                         "OrtOptions", "MeasureSpec", "Entry_", "Matrix", "ScenarioSettings", ".int", "list["):
                assert word not in out, where
        codes[result.exit_code] += 1
    assert codes[0] and codes[2]  # the walk reaches both answers
