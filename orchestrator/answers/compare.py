"""Two runs, trial by trial: did the candidate get slower than the base?

Trials are matched by ``trial_id`` (a hash of the spec, the same in every run of the same
trial). A trial left unmatched is then matched on its named configuration (model, input shape,
backend, label, batch size, dtype, io): a plan whose ``ort-tuned`` entry got new options, or
whose measurement settings changed, still compares entry by entry (``matched_by: label``).

For each pair, the ratio of medians (candidate / base) with a bootstrap confidence interval::

    for b in 1..n_boot:                      # seeded: the same runs always give the same verdicts
        rb = median(resample(base samples)), rc = median(resample(candidate samples))
        ratio[b] = rc / rb
    ci = percentiles (1 - confidence) / 2 and (1 + confidence) / 2 of ratio

That interval knows only the noise within each run. Two runs of the same code also differ by
more than that (another CPU load, clocks, memory placement), so the interval is widened, in log
space, by the between-run noise of both rows::

    s_row = max(repeat_cv of the row, BETWEEN_RUN_FLOOR[row's device])   # or the --noise-floor given
    s_row = max(s_row, HOST_BOUND_FLOOR)     # a GPU row whose GPU was busy < HOST_BOUND_UTIL_PCT of its timing
    s_row = b / z of its processes           # a row of N fresh processes (process_repeats): measured, no floor
    ci = ci * exp(-+ z * sqrt(s_base^2 + s_cand^2))                       # z: the confidence's quantile

A row measured in N fresh processes (a plan's ``measure.process_repeats`` >= 2) brings its own: ``b`` is
the t-based between-process half-width of its median (``workers.measure.processes``: t(N-1) times the
SD of its processes' log medians over sqrt(N)), so the floors, which stand in for a spread no one
measured, don't apply to it. ``repeat_cv`` (``measure.repeats`` >= 2) measures the spread of fresh
runners in one process, which misses what moves between processes: it only raises a floor. The
floors are what two runs of the same plan on the same machine were seen to differ by
(docs/reports.md, "Between-run noise"). A launch-bound GPU row (eager mode at batch 1: the GPU
waits on Python, ``gpu_util_pct`` low) measures the host's pace, which moves between processes far
more than a GPU's: it gets the host's floor.

A trial regressed when the ratio is above ``1 + threshold`` AND the whole (widened) interval is
above 1: a small slowdown, or a large one within the noise, is not flagged. A trial that was
``ok`` in the base and is not in the candidate is ``broken``; both count as regressions (exit
code 1). A row that is ``ok`` but not ``valid`` on either side (it did not converge, was noisy,
shared its GPU, ...: ``workers/measure/validity.py``) gets the verdict ``invalid``, never ``regressed``
or ``improved``: its number is not one to act on. Rows whose fp32 arithmetic differs (TF32 on one
side, IEEE fp32 on the other: ``math_effective``) get ``incomparable``, with the reason, never a
verdict on their ratio (``orchestrator.answers.fairness``).

Each load scenario is judged on its own figures (``Scenario.figures``; the first is the item's
``metric``), each as a ratio where > 1 is worse (``Scenario.judge``), the verdict the worst of
theirs (the scenario table of docs/plans-and-backends.md lists each one's figures):

- one request at a time: median latency, candidate / base (as above);
- offline: throughput, base / candidate; the interval is the bootstrap one of the mean service
  times' ratio, centred on the throughput ratio;
- server: p99 latency at the rate, candidate / base; percentile bootstrap of the p99s;
- find-peak: the peak rate, base / candidate; the interval is what the two bisection brackets
  allow (base's [peak_rate, peak_rate_fail] against the candidate's), so a change within the
  bisection's resolution is never flagged.
"""

from __future__ import annotations

import math
import statistics
from typing import Any, TypedDict

import numpy as np
import pyarrow as pa

from orchestrator.answers.fairness import math_mismatch
from workers import scenarios
from workers.contract import Status
from workers.measure.processes import between_process_noise
from workers.measure.slowdown import LAUNCH_BOUND_UTIL_PCT
from workers.row import Row
from workers.scenarios import tag as scenario_tag

DEFAULT_THRESHOLD = 0.03
#: The least between-run noise assumed of a row (relative SD of a run's median), by its device, when its
#: own repeats don't show more. CPU: two runs of the quickstart plan on a shared 2-core machine differed
#: by 7% with within-run intervals of ~1% (BENCHMARKS.md); GPU: 1% keeps a 3%
#: threshold's sensitivity (the interval widens by x/ 1.028) while two processes' cuDNN picks and clocks
#: may differ by a percent or two; bench/aa.py on the H100 checks it.
BETWEEN_RUN_FLOOR = {"cuda": 0.01, "cpu": 0.03}
#: A GPU row whose GPU was busy less than HOST_BOUND_UTIL_PCT of its timing (``gpu_util_pct``, NVML) is
#: launch-bound: its latency is the host's pace, and it is judged at ``HOST_BOUND_FLOOR`` at least. On the
#: H200 VM a hand-written eager loop pinned to one CPU moved 7-14% between three fresh processes
#: (unpinned 40-61%), a CUDA-graph loop 0.3% (bench/host_jitter.py, BENCHMARKS.md "A/A on the GPU").
#: The line is the one an injected slowdown draws between its two kinds (workers.measure.slowdown).
HOST_BOUND_UTIL_PCT = LAUNCH_BOUND_UTIL_PCT
HOST_BOUND_FLOOR = 0.05
SPEC_KEYS = ("model", "input_shape", "axes", "backend", "label", "options", "batch_size", "dtype", "io", "scenario",
             "concurrency", "target_rate", "arrival", "latency_bound_ms", "tpot_bound_ms", "prompt_len",
             "new_tokens")
CONFIG_KEYS = tuple(k for k in SPEC_KEYS if k != "options")
REGRESSIONS = ("regressed", "broken")
_MAX_CELLS = 2_000_000  # bootstrap chunk size (resamples x samples), to bound memory


class Judgement(TypedDict, total=False):
    """One figure of a trial judged: its label, the ratio (> 1 worse), its interval, the between-run
    noise it was widened by (where it was) and the verdict on it."""

    metric: str
    noise: float
    ratio: float | None
    ci_low: float | None
    ci_high: float | None
    verdict: str


class Verdict(TypedDict, total=False):
    """One trial of either run, compared (``compare``): its spec, both statuses and values, the first
    figure's judgement, every figure's where there are several, and the verdict."""

    trial_id: str
    model: str | None
    axes: str | None
    backend: str | None
    label: str | None
    options: str | None
    batch_size: int | None
    dtype: str | None
    io: str | None
    scenario: str | None
    concurrency: int | None
    target_rate: float | None
    arrival: str | None
    latency_bound_ms: float | None
    tpot_bound_ms: float | None
    prompt_len: int | None
    new_tokens: int | None
    base_status: str | None
    cand_status: str | None
    base_median_ms: float | None
    cand_median_ms: float | None
    ratio: float | None
    ci_low: float | None
    ci_high: float | None
    noise: float | None
    invalid_reasons: list[str] | None
    metric: str
    base_value: float | None
    cand_value: float | None
    matched_by: str | None
    cand_options: str
    verdict: str
    figures: list[Judgement]


def _config(row: Row) -> tuple[Any, ...]:
    values = [row.get(k) for k in CONFIG_KEYS]
    values[CONFIG_KEYS.index("scenario")] = scenarios.of(row).name  # runs older than scenarios: the default
    return tuple(tuple(v) if isinstance(v, list) else v for v in values)


def match(base: list[Row], cand: list[Row]) -> list[tuple[dict | None, dict | None]]:
    """Pairs (base row, candidate row); None on the side a trial is missing from."""
    by_id = {r["trial_id"]: r for r in cand}
    pairs: list[tuple[dict | None, dict | None]] = []
    left = []
    for b in base:
        c = by_id.pop(b["trial_id"], None)
        if c is None:
            left.append(b)
        else:
            pairs.append((b, c))
    by_config = {_config(r): r for r in by_id.values()}
    for b in left:
        pairs.append((b, by_config.pop(_config(b), None)))
    pairs += [(None, c) for c in by_config.values()]
    return pairs


def bootstrap_ratio_ci(
    base: np.ndarray, cand: np.ndarray, confidence: float = 0.95, n_boot: int = 2000, seed: int = 0,
    statistic: Any = np.median,
) -> tuple[float, float]:
    """Percentile bootstrap interval of statistic(cand) / statistic(base) (the median by default)."""
    rng = np.random.default_rng(seed)

    def medians(a: np.ndarray) -> np.ndarray:
        chunk = max(1, _MAX_CELLS // a.size)
        return np.concatenate([
            statistic(a[rng.integers(0, a.size, size=(min(chunk, n_boot - i), a.size))], axis=1)
            for i in range(0, n_boot, chunk)
        ])

    ratios = medians(cand) / medians(base)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(ratios, [alpha, 1 - alpha])
    return float(lo), float(hi)


def between_run_noise(row: Row, floor: float | None = None) -> float:
    """The relative SD a run's median of this trial is taken to have from run to run: the trial's own
    ``repeat_cv`` or the floor (``floor``, else ``BETWEEN_RUN_FLOOR`` for its device), the larger. A row
    measured in several processes (``measure.process_repeats``) has measured it: its processes' spread,
    used instead of any floor (``workers.measure.processes.between_process_noise``)."""
    measured = between_process_noise(row)
    if measured is not None:
        return measured
    if floor is None:
        floor = BETWEEN_RUN_FLOOR.get(str(row.get("device") or "cpu"), max(BETWEEN_RUN_FLOOR.values()))
    if host_bound(row):
        floor = max(floor, HOST_BOUND_FLOOR)
    return max(floor, row.get("repeat_cv") or 0.0)


def host_bound(row: Row) -> bool:
    """A GPU row whose GPU sat idle much of its timing (``HOST_BOUND_UTIL_PCT``): launch-bound."""
    util = row.get("gpu_util_pct")
    return row.get("device") == "cuda" and util is not None and util < HOST_BOUND_UTIL_PCT


def widen(lo: float, hi: float, noise: float, confidence: float) -> tuple[float, float]:
    """The interval ``lo``-``hi`` of a ratio widened by a relative SD ``noise`` of the ratio (log space)."""
    k = math.exp(statistics.NormalDist().inv_cdf((1 + confidence) / 2) * noise)
    return lo / k, hi * k


def compare(
    base: pa.Table,
    cand: pa.Table,
    threshold: float = DEFAULT_THRESHOLD,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    noise_floor: float | None = None,
) -> list[Verdict]:
    """One verdict per trial of either run: regressed, improved, unchanged, invalid, broken, fixed,
    not ok (in both), only in base, only in candidate; with medians, ratio and interval (widened by the
    between-run noise, ``noise``; ``noise_floor`` replaces ``BETWEEN_RUN_FLOOR``)."""
    out = []
    for b, c in match(base.to_pylist(), cand.to_pylist()):
        ref = b or c or {}
        item: Verdict = {  # type: ignore[typeddict-item]
            "trial_id": ref["trial_id"], **{k: ref.get(k) for k in SPEC_KEYS if k != "input_shape"},
            "base_status": b and b["status"], "cand_status": c and c["status"],
            "base_median_ms": b and b.get("latency_ms_median"), "cand_median_ms": c and c.get("latency_ms_median"),
            "ratio": None, "ci_low": None, "ci_high": None, "noise": None, "invalid_reasons": None,
            "metric": scenarios.of(ref).figures_of(ref)[0].label,
            "base_value": b and _value(b), "cand_value": c and _value(c),
            "matched_by": None if b is None or c is None else "trial_id" if b["trial_id"] == c["trial_id"] else "label",
        }
        if item["matched_by"] == "label" and b["options"] != c["options"]:
            item["cand_options"] = c["options"]
        if b is None or c is None:
            item["verdict"] = "only in candidate" if b is None else "only in base"
        elif b["status"] == Status.OK and c["status"] != Status.OK:
            item["verdict"] = "broken"
        elif b["status"] != Status.OK and c["status"] == Status.OK:
            item["verdict"] = "fixed"
        elif b["status"] != Status.OK:
            item["verdict"] = "not ok"
        else:
            judged = [_judged(f, b, c, threshold, confidence, n_boot, seed, noise_floor)
                      for f in scenarios.of(ref).figures_of(ref)]
            item.update(judged[0])  # the first figure's numbers; the verdict is the worst figure's
            invalid = [f"{side}: {r}" for side, row in (("base", b), ("candidate", c)) if row.get("valid") is False
                       for r in row.get("invalid_reasons") or ["invalid"]]
            unlike = math_mismatch(b, c)
            if unlike:  # no verdict across different arithmetic: the ratio is the math's as much as the code's
                item.update(verdict="incomparable", invalid_reasons=[unlike, *invalid])
            elif invalid:
                item.update(verdict="invalid", invalid_reasons=invalid)
            else:
                item["verdict"] = min((j["verdict"] for j in judged), key=_WORST.index)
            if len(judged) > 1:
                item["figures"] = judged
        out.append(item)
    order = {"broken": 0, "regressed": 1, "improved": 2, "fixed": 3, "invalid": 4, "incomparable": 4}
    out.sort(key=lambda r: (order.get(r["verdict"], 5), str(r["model"]), r["batch_size"] or 0, str(r["dtype"]),
                            scenario_tag(r),
                            str(r["io"]), str(r["label"])))
    return out


def _value(row: Row) -> float | None:
    """The figure a row is judged on foremost (its scenario's first)."""
    return scenarios.of(row).figures_of(row)[0].value(row)


#: A trial judged on several figures takes the worst of their verdicts.
_WORST = ("regressed", "improved", "unchanged")


def _judged(figure: scenarios.Figure, b: Row, c: Row, threshold: float, confidence: float,
            n_boot: int, seed: int, noise_floor: float | None) -> Judgement:
    """Two ok rows of one trial on one of its scenario's figures: ratio (> 1 worse), interval (widened
    by the between-run noise where the scenario's interval is not its own bracket) and verdict."""
    scenario = scenarios.of(b)

    def interval(sb: np.ndarray, sc: np.ndarray, statistic: Any) -> tuple[float, float]:
        return bootstrap_ratio_ci(sb, sc, confidence, n_boot, seed, statistic=statistic)

    ratio, lo, hi = scenario.judge(figure, b, c, interval)
    out = Judgement(metric=figure.label)
    if ratio is not None and scenario.widen_by_noise:
        noise = math.hypot(between_run_noise(b, noise_floor), between_run_noise(c, noise_floor))
        lo, hi = widen(lo, hi, noise, confidence)
        out["noise"] = noise
    if ratio is None:
        verdict = "unchanged"
    elif ratio > 1 + threshold and lo > 1:
        verdict = "regressed"
    elif ratio < 1 - threshold and hi < 1:
        verdict = "improved"
    else:
        verdict = "unchanged"
    return {**out, "ratio": ratio, "ci_low": lo, "ci_high": hi, "verdict": verdict}


def regressions(items: list[Verdict]) -> list[Verdict]:
    return [r for r in items if r["verdict"] in REGRESSIONS]
