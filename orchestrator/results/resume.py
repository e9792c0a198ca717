"""Continuing a run in its own directory: which trials are stored, which still have to run.

A run directory keeps the plan it was started with (``_plan.yaml``, resolved). Resuming with a plan
is allowed when both expand to the same trial ids: names, labels, ``timeout_s`` and ``retries``
may change (they are not part of an id); models, the matrix, ``measure``, ``device`` and ``seed``
may not, because the stored rows would then answer another question.
"""

from __future__ import annotations

import shlex
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from orchestrator.errors import InputError, OutputError, PlanError
from orchestrator.plan.expand import expand
from orchestrator.plan.load import parse_plan
from orchestrator.plan.schema import Plan
from orchestrator.results.rundir import PLAN_FILE, check_writable, stored_invalid, stored_run_id, stored_trials
from workers.contract import Trial, succeeded


@dataclass
class Resume:
    out: Path
    run_id: str | None
    kept: dict[str, str]  # trial id -> status, stored and not run again


def open_resume(out: Path, plan: Plan, trials: list[Trial], plan_source: str,
                retry_failed: bool, retry_invalid: bool = False) -> Resume:
    """Check that ``out`` holds a run of this plan; say which stored trials are kept. Writes nothing."""
    plan_file = out / PLAN_FILE
    if not plan_file.is_file():
        raise OutputError(f"--resume {out}: not a run directory (no {PLAN_FILE} in it); nothing to resume")
    check_writable(out / "_probe")  # the directory itself must be writable
    try:
        stored_plan = parse_plan(yaml.safe_load(plan_file.read_text()), source=str(plan_file), base_dir=str(out))
        stored_ids = {t.trial_id for t in expand(stored_plan, source=str(plan_file))}
    except (PlanError, OSError, yaml.YAMLError) as exc:
        raise InputError(f"--resume {out}: can't read the plan the run was started with: {exc}") from None
    ids = {t.trial_id for t in trials}
    if ids != stored_ids:
        changed = _changed_keys(plan, stored_plan)
        raise InputError(
            f"--resume {out}: {plan_source} does not describe the run stored there: "
            f"{len(ids - stored_ids)} of its trials are not in that run and {len(stored_ids - ids)} of the run's "
            f"are not in the plan (changed: {', '.join(changed) or 'the model files'}); resume with the plan "
            f"the run was started with ({plan_file}), or start a new run with another --out"
        )
    stored = stored_trials(out)
    foreign = set(stored) - ids
    if foreign:
        raise InputError(f"--resume {out}: it holds {len(foreign)} part file(s) of trials not in the plan "
                         f"(e.g. part-{sorted(foreign)[0]}.parquet); nothing was run")
    # The successes are kept; the others run again with --retry-failed, the invalid ones with --retry-invalid.
    kept = {tid: s for tid, s in stored.items() if succeeded(s) or not retry_failed}
    if retry_invalid:
        for tid in stored_invalid(out, set(kept)):
            del kept[tid]
    return Resume(out=out, run_id=stored_run_id(out), kept=kept)


def _changed_keys(a: Plan, b: Plan) -> list[str]:
    da, db = a.model_dump(mode="json"), b.model_dump(mode="json")
    keys = [k for k in da if k not in ("name", "timeout_s", "retries") and da.get(k) != db.get(k)]
    if da.get("matrix") != db.get("matrix"):
        keys.remove("matrix")
        keys += [f"matrix.{k}" for k in da["matrix"] if da["matrix"][k] != db["matrix"].get(k)]
    return keys


def resume_command(plan_path: str | Path, out: Path, address: str | None, workers: int | None,
                   cpus_per_worker: float | None = None, profile: Sequence[str] = (), *,
                   retry_failed: bool = False, retry_invalid: bool = False, extra: Sequence[str] = ()) -> str:
    """The exact command line that continues this run, from any directory: absolute paths, the
    cluster it ran on (``address``: the one it joined, ``RAY_ADDRESS`` included), and every option
    the run used (``--profile`` labels: the trials still to run are profiled as they would have
    been; ``extra``: the command line's own options, ``--junit FILE``, ``--table MODE``)."""
    args = [program(), "run", str(Path(plan_path).absolute()), "--resume", str(Path(out).absolute())]
    if address:
        args += ["--address", address]
    if workers:
        args += ["--workers", str(workers)]
    if cpus_per_worker:
        args += ["--cpus-per-worker", f"{cpus_per_worker:g}"]
    for label in profile:
        args += ["--profile", label]
    args += ["--retry-failed"] * retry_failed + ["--retry-invalid"] * retry_invalid + list(extra)
    return shlex.join(args)


def program() -> str:
    """How to call infer-orch again: ``infer-orch``, or its full path where the run was started by
    its full path and another (or none) is first on PATH (a Ray job: the cluster's PATH lacks it)."""
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if argv0 is None or argv0.name != "infer-orch" or not argv0.is_file():
        return "infer-orch"
    found = shutil.which("infer-orch")
    if found and Path(found).resolve() == argv0.resolve():
        return "infer-orch"
    return str(argv0.absolute())
