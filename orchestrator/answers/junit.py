"""A run as JUnit XML, so a CI job can show every trial as a test case.

Each trial is one ``<testcase>``: ``classname`` is ``<plan>.<model>``, ``name`` the rest of the
spec (``ort-tuned[bs=8,fp16,device]``); ``time`` its wall time. ``failed``, ``timeout``,
``oom`` and ``parity_failed`` trials are ``<failure>``s with the error as message and the
traceback as text; ``skipped`` ones are ``<skipped>``; an ``ok`` trial that misses one of its
plan's budgets is a ``<failure type="budget">``. A trial with no row (the run was cut short) is
an ``<error>``. The layout is the common one (Jenkins/Surefire) that GitLab, GitHub actions and
``junitparser`` read.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import xml.etree.ElementTree as ET
from pathlib import Path

from orchestrator.answers.budgets import missed
from orchestrator.errors import OutputError
from workers.contract import Status, Trial, succeeded
from workers.row import Row
from workers.rows import spec_columns
from workers.scenarios import tag as scenario_tag


def case_name(row: Row) -> tuple[str, str]:
    """(classname, name) of a row (or a trial's ``spec_columns``): ``plan.model`` and ``label[bs=N,dtype,io]``,
    with the load scenario after io where it is not single-stream (``label[bs=1,fp16,device,server c=1 200/s]``)."""
    tag = scenario_tag(row)
    return (f"{row['plan']}.{row['model']}",
            f"{row['label']}[bs={row['batch_size']},{row['dtype']},{row['io']}{',' + tag if tag else ''}]")


def to_xml(trials: list[Trial], rows: list[Row], suite: str) -> ET.ElementTree:
    """The JUnit tree of a run: one case per trial, in the plan's order."""
    by_id = {r["trial_id"]: r for r in rows}
    cases = []
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    total = 0.0
    for trial in trials:
        classname, name = case_name(spec_columns(trial))
        row = by_id.get(trial.trial_id)
        case = ET.Element("testcase", classname=classname, name=name)
        counts["tests"] += 1
        if row is None:
            ET.SubElement(case, "error", message="no result: the run ended before this trial finished",
                          type="missing")
            counts["errors"] += 1
            cases.append(case)
            continue
        seconds = row.get("duration_s") or 0.0
        total += seconds
        case.set("time", f"{seconds:.3f}")
        status = row.get("status")
        if status == Status.SKIPPED:
            ET.SubElement(case, "skipped", message=row.get("error") or "skipped")
            counts["skipped"] += 1
        elif not succeeded(status):
            fail = ET.SubElement(case, "failure", message=f"{status}: {row.get('error') or ''}".strip(),
                                 type=status)
            fail.text = row.get("traceback") or row.get("error") or status
            counts["failures"] += 1
        else:
            misses = missed(row, trial.budgets)
            if misses:
                fail = ET.SubElement(case, "failure", message="; ".join(misses), type="budget")
                fail.text = "\n".join(misses)
                counts["failures"] += 1
        out = ET.SubElement(case, "system-out")
        out.text = _facts(trial, row)
        cases.append(case)
    stamp = dt.datetime.now(dt.timezone.utc).replace(microsecond=0, tzinfo=None).isoformat()
    attrs = {k: str(v) for k, v in counts.items()}
    root = ET.Element("testsuites", name="infer-orch", time=f"{total:.3f}", **attrs)
    ts = ET.SubElement(root, "testsuite", name=suite, timestamp=stamp, hostname=socket.gethostname(),
                       time=f"{total:.3f}", **attrs)
    ts.extend(cases)
    ET.indent(root)
    return ET.ElementTree(root)


def _facts(trial: Trial, row: Row) -> str:
    keys = ("status", "latency_ms_median", "latency_ms_p99", "throughput", "device_name", "node", "worker",
            "gpu_uuid")
    lines = [f"trial_id: {trial.trial_id}", f"options: {row.get('options')}"]
    lines += [f"{k}: {row[k]}" for k in keys if row.get(k) is not None]
    return "\n".join(lines)


def check_junit_path(path: str | os.PathLike[str]) -> None:
    """Fail before anything runs when the JUnit file could not be written afterwards."""
    p = Path(path)
    if p.is_dir():
        raise OutputError(f"--junit {p}: is a directory; give a file name such as {p / 'results.xml'}")
    probe = p.parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(f"--junit {p}: {probe} is not a writable directory")


def write_junit(path: str | os.PathLike[str], trials: list[Trial], rows: list[Row],
                suite: str) -> dict[str, int]:
    """Write the JUnit file of a run (atomically); returns its counts (tests, failures, errors, skipped)."""
    tree = to_xml(trials, rows, suite)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp")
    tree.write(tmp, encoding="utf-8", xml_declaration=True)
    os.replace(tmp, p)
    return {k: int(v) for k, v in tree.getroot().attrib.items() if k in ("tests", "failures", "errors", "skipped")}

