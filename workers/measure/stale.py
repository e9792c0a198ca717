"""Stale outputs: a backend that replays something captured (a CUDA graph, a TensorRT engine) can
keep returning the result of its first input whatever the input is now (ONNX Runtime issues 20050,
22583, 29782). Parity compares the output of the very input that was timed, so it can't see that;
MLPerf checks outputs during the timed run for this reason (compliance TEST01).

So, after timing, a runner whose ``checks_stale`` is True gets a second seeded input written into
its bound or static buffers (``Runner.feed``, seed = the trial's + ``SECOND_SEED_OFFSET``), runs
one ``step``, and that output is checked against a reference for the second input::

    torch models              torch eager fp32 on the device (workers.measure.parity, the second input)
    onnx: models              the same ONNX file on ORT's CPU provider, optimisations off (workers.measure.onnxref)
    model-less (fault: stale) the backend's known function of its input (Runner.stale_reference)

with the trial's parity tolerance. An output off its reference is ``parity_failed`` with a "stale
output" error and no latency. ``parity.check: false`` turns this check off too.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypedDict

from workers.contract import Trial
from workers.measure.parity import ParityFailure, compare, named, nonfinite, reference_name, reference_output
from workers.row import Row

SECOND_SEED_OFFSET = 1
COLUMNS = ("stale_reference", "stale_max_rel_err")


class Probe(TypedDict):
    """What ``probe`` kept of the second input's step."""

    seed: int
    output: Any  # the runner's output (an array, or arrays by name)
    reference: tuple[str, Any] | None  # the runner's own (what, reference output), if it has one


def probe(runner: Any) -> Probe | None:
    """On a live runner, after timing (its timed output already read): feed the second input, step
    once, and keep that output (and the runner's own reference, if it has one). None: not checked."""
    trial = runner.ctx.trial
    if not trial.parity.check or not runner.checks_stale():
        return None
    seed = trial.seed + SECOND_SEED_OFFSET
    runner.feed(seed)
    runner.step()
    return Probe(seed=seed, output=runner.output(), reference=runner.stale_reference(seed))


def check(trial: Trial, device: str, store: Any, got: Probe | None, first: Any,
          modelless: bool) -> Row:
    """The stale columns for a ``probe``'s result; raises ParityFailure ("stale output") when the
    second input's output is off its reference. ``first``: the timed input's output."""
    cols: Row = dict.fromkeys(COLUMNS)
    if got is None:
        return cols
    seed = got["seed"]
    if got["reference"] is not None:
        what, ref = got["reference"]
    elif modelless:
        return cols  # no reference to hold it to
    else:
        from workers.measure.onnxref import NoReference

        what = reference_name(trial, device)
        try:
            ref = reference_output(dataclasses.replace(trial, seed=seed), device, store)
        except NoReference:
            return cols  # the parity check has said why (parity_unchecked)
    tol = float(getattr(trial.parity.tolerance, trial.dtype))
    cols["stale_reference"] = f"{what}, second input (seed {seed})"
    refs, outs = named(ref), named(got["output"])
    worst = 0.0
    for r, y in zip(refs.values(), outs.values()):
        if y.shape != r.shape or nonfinite(y):
            worst = float("inf")
            break
        worst = max(worst, compare(y, r)["parity_max_rel_err"])
    if len(refs) != len(outs):
        worst = float("inf")
    cols["stale_max_rel_err"] = worst
    if worst <= tol:
        return cols
    same = all(a.shape == b.shape and (a == b).all() for a, b in zip(named(first).values(), outs.values()))
    why = ("it is the first input's output, unchanged: the backend returned an earlier result (a graph "
           "replaying stale buffers)" if same else "the backend did not compute the new input")
    raise ParityFailure(
        f"stale output: after timing, a second input (seed {seed}) written into the backend's buffers gave an "
        f"output off its reference ({what}): max |y - ref| / max |ref| = {worst:.3g} > tolerance {tol:g}; {why}; "
        "latency not published", cols)
