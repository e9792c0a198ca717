"""Sizing: a run's peak rates as what a deployment is decided with (docs/reports.md#sizing).

For each model, input shape, dtype and p99 bound, every configuration (label, backend, batch size,
requests in flight) with a peak rate (the scenarios whose rows go to the peak table) is one line:

- ``req/s per GPU``: its peak rate, with its bracket (the highest rate that passed, the lowest that
  failed: the true peak lies between), one trial being one GPU;
- ``GPUs``: ``ceil(target * (1 + headroom) / peak_rate)``, with ``--target-rate`` (requests/s);
- ``USD per M req``: ``price per GPU-hour / (peak_rate * 3600) * 1e6``, where a price matches the
  row's ``device_name`` (the GPU model) (:func:`price_for`: the price's key as a case-insensitive word of it);
- ``kWh per M req``: ``energy_j_per_request * 1e6 / 3.6e6``, the GPU's energy at the peak load.

Where a configuration was measured more than once, the figure measured with the most of its node's
GPUs busy is used (``node_trials_busy_max``): a deployment's GPUs are all busy; the ``measured``
cell says which (``N GPUs busy``, ``alone``, or ``?`` for runs that don't record it). The best
configuration of a group (the most requests/s per GPU) is marked, and a line names the cheapest
(or the least energy, without prices) where it differs from the fastest. Generation rows are sized
apart, in output tokens (``orchestrator.answers.tokens``).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

from orchestrator.answers.tables import axes_text, peak_names
from orchestrator.errors import InputError
from workers import scenarios
from workers.contract import Status
from workers.row import Row

Sort = Literal["gpus", "cost", "energy"]
SORTS = ("gpus", "cost", "energy")
J_PER_KWH = 3.6e6
_PRICE = re.compile(r"^\s*([^=\s][^=]*?)\s*=\s*([^=]+?)\s*$")


def parse_prices(values: list[str], where: str = "--price") -> dict[str, float]:
    """``KEY=USD`` strings (USD per GPU-hour) as a map; a malformed one or a price <= 0 is an InputError
    naming it."""
    out: dict[str, float] = {}
    for v in values:
        m = _PRICE.match(v)
        try:
            price = float(m.group(2)) if m else None
        except ValueError:
            price = None
        if m is None or price is None or not math.isfinite(price):
            raise InputError(f"{where} {v!r}: expected ACCELERATOR=USD per GPU-hour, e.g. {where} H100=3.50")
        if price <= 0:
            raise InputError(f"{where} {v!r}: the price must be more than 0 USD per GPU-hour")
        out[m.group(1)] = price
    return out


def check_prices(prices: dict[Any, Any], where: str) -> dict[str, float]:
    """A plan's ``prices:`` map, checked as ``--price`` values are."""
    if not isinstance(prices, dict):
        raise InputError(f"{where}: expected a map of accelerator to USD per GPU-hour, e.g. {{H100: 3.50}}")
    return parse_prices([f"{k}={v}" for k, v in prices.items()], where)


def price_for(gpu_name: str | None, prices: dict[str, float]) -> tuple[str, float] | None:
    """The price whose key is a case-insensitive word of ``gpu_name`` (letters and digits around it
    end the match: ``H100`` matches "NVIDIA H100 80GB HBM3" and "H100-SXM", not "H200" or "H1000");
    the longest key first, so ``H100 NVL`` wins over ``H100`` for "NVIDIA H100 NVL"."""
    if not gpu_name:
        return None
    for key in sorted(prices, key=len, reverse=True):
        if re.search(rf"(?<![A-Za-z0-9]){re.escape(key)}(?![A-Za-z0-9])", gpu_name, re.IGNORECASE):
            return key, prices[key]
    return None


class ConfigLine:
    """What a line of either sizing table (requests: ``Sized``; output tokens: ``answers.tokens``) says
    of its configuration."""

    label: str
    batch_size: int
    concurrency: int | None

    @property
    def config(self) -> str:
        c = f" c={self.concurrency}" if self.concurrency else ""
        return f"{self.label} bs={self.batch_size}{c}"

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "config": self.config}  # type: ignore[call-overload]


@dataclass
class Sized(ConfigLine):
    """One configuration's line of the sizing table."""

    model: str
    dtype: str
    bound_ms: float | None
    label: str
    backend: str
    batch_size: int
    concurrency: int | None
    gpu_name: str | None
    rate: float  # requests/s per GPU at the peak
    rate_high: float | None  # the bracket's upper end (the lowest rate that failed)
    p99_ms: float | None
    p99_upper_ms: float | None
    confident: bool
    measured: str  # "N GPUs busy", "alone" or "?"
    gpus: int | None = None
    usd_per_m: float | None = None
    price_key: str | None = None
    kwh_per_m: float | None = None
    best: bool = False

    @property
    def group(self) -> tuple[str, str, float | None]:
        return self.model, self.dtype, self.bound_ms


def measured_text(r: Row) -> str:
    """The ``measured`` cell: with how many of its node's GPUs busy the row was timed."""
    busy = r.get("node_trials_busy_max")
    return "?" if busy is None else "alone" if busy <= 1 else f"{busy} GPUs busy"


def _line(r: Row) -> Sized:
    return Sized(model=f"{r.get('model')} {axes_text(r)}".strip(), dtype=str(r.get("dtype")),
                 bound_ms=r.get("latency_bound_ms"), label=str(r.get("label")), backend=str(r.get("backend")),
                 batch_size=int(r.get("batch_size") or 0), concurrency=r.get("concurrency"),
                 gpu_name=r.get("device_name"), rate=float(r["peak_rate"]), rate_high=r.get("peak_rate_fail"),
                 p99_ms=r.get("latency_ms_p99"), p99_upper_ms=r.get("latency_ms_p99_upper"),
                 confident=bool(r.get("confident")), measured=measured_text(r),
                 kwh_per_m=r["energy_j_per_request"] * 1e6 / J_PER_KWH if r.get("energy_j_per_request") else None)


def peak_lines(rows: list[Row]) -> list[Sized]:
    """One line per single-pass configuration with a peak rate (ok rows, valid): the figure measured with
    the most of its node's GPUs busy where there are several (generation rows: ``answers.tokens``)."""
    def keep(r: Row) -> bool:
        return (r.get("status") == Status.OK and r.get("valid") is not False and bool(r.get("peak_rate"))
                and scenarios.of(r).report == "peak" and not r.get("new_tokens"))

    def key(r: Row) -> tuple[Any, ...]:
        return (r.get("model"), axes_text(r), r.get("dtype"), r.get("latency_bound_ms"), r.get("label"),
                r.get("batch_size"), r.get("concurrency"), r.get("io"), r.get("device_name"), bool(r.get("confident")))

    return [_line(r) for r in most_busy(rows, keep, key)]


def most_busy(rows: list[Row], keep: Callable[[Row], bool], key: Callable[[Row], tuple[Any, ...]]) -> list[Row]:
    """Of the rows ``keep`` takes, one per ``key`` (a configuration): the one timed with the most of its
    node's GPUs busy (``node_trials_busy_max``), the first where they tie."""
    chosen: dict[tuple[Any, ...], Row] = {}
    for r in rows:
        if not keep(r):
            continue
        k = key(r)
        held = chosen.get(k)
        if held is None or (r.get("node_trials_busy_max") or 0) > (held.get("node_trials_busy_max") or 0):
            chosen[k] = r
    return list(chosen.values())


def size(rows: list[Row], target: float | None = None, headroom: float = 0.0,
         prices: dict[str, float] | None = None, sort: Sort = "gpus") -> list[Sized]:
    """The sizing table's lines, grouped by model, dtype and bound, each group sorted by ``sort``.
    InputError where a price matches no GPU of the run (a target without peak rows: ``no_peaks``)."""
    lines = peak_lines(rows)
    prices = prices or {}
    names = {r.get("device_name") for r in rows if r.get("device_name")}
    for key in prices:
        if not any(price_for(n, {key: 1.0}) for n in names):
            have = ", ".join(sorted(names)) or "none (a CPU run)"
            raise InputError(f"price {key!r} matches no GPU of the run (the key must be a word of device_name; "
                             f"its GPUs: {have})")
    if sort == "cost" and not prices:
        raise InputError("--sort cost: no prices; give --price ACCELERATOR=USD or prices: in the plan")
    for s in lines:
        if target is not None:
            s.gpus = math.ceil(target * (1 + headroom) / s.rate - 1e-9)
        matched = price_for(s.gpu_name, prices)
        if matched:
            s.price_key, hourly = matched
            s.usd_per_m = hourly / (s.rate * 3600) * 1e6
    return ranked(lines, lambda s: s.rate, sort_key(sort, lambda s: s.rate, "usd_per_m", "kwh_per_m"))


def grouped(lines: list[Any]) -> dict[tuple[Any, ...], list[Any]]:
    """Sizing lines by their ``group`` (model and shape, dtype, bounds)."""
    groups: dict[tuple[Any, ...], list[Any]] = defaultdict(list)
    for s in lines:
        groups[s.group].append(s)
    return groups


def ranked(lines: list[Any], speed: Callable[[Any], float], key: Callable[[Any], Any]) -> list[Any]:
    """The lines group after group (in the groups' order), each group's fastest by ``speed`` marked best
    and the group sorted by ``key``."""
    out: list[Any] = []
    for _, members in sorted(grouped(lines).items(), key=lambda kv: tuple(map(str, kv[0]))):
        max(members, key=speed).best = True
        out += sorted(members, key=key)
    return out


def no_peaks(option: str, target: float, what: str = "") -> InputError:
    """The refusal of a target the run has no peak rates for (``what``: which rows it needed)."""
    return InputError(f"{option} {target:g}: the run has no {what}peak rates to size with (no ok "
                      f"{peak_names()} {what}rows: docs/reports.md#sizing)")


def sort_key(sort: Sort, speed: Callable[[Any], float], usd: str, kwh: str) -> Callable[[Any], Any]:
    """How a group's lines are ordered for ``sort``: by cost (attribute ``usd``), energy (``kwh``; a line
    without one last) or GPUs, then the fastest (``speed``) first."""
    inf = float("inf")
    if sort == "cost":
        return lambda s: (getattr(s, usd) if getattr(s, usd) is not None else inf, -speed(s))
    if sort == "energy":
        return lambda s: (getattr(s, kwh) if getattr(s, kwh) is not None else inf, -speed(s))
    return lambda s: (s.gpus if s.gpus is not None else 0, -speed(s))


def differences(lines: list[Sized]) -> list[str]:
    """Per group, where the cheapest (with prices; else the least energy) is not the fastest."""
    named = [(f"{model} {dtype}" + (f" p99 <= {bound:g} ms" if bound is not None else ""), members)
             for (model, dtype, bound), members in grouped(lines).items()]
    return cheapest_not_fastest(named, lambda s: s.rate, lambda s: f"{s.rate:,.0f} req/s", ("usd_per_m", "kwh_per_m"),
                                "requests")


def cheapest_not_fastest(groups: list[tuple[str, list[Any]]], speed: Callable[[Any], float],
                         speed_text: Callable[[Any], str], costs: tuple[str, str], per: str) -> list[str]:
    """For each (name, lines) group: a note where the line with the lowest cost per million ``per``
    (attribute ``costs[0]``, USD, with prices; else ``costs[1]``, kWh) is not the one with the most
    ``speed`` per GPU. Energy is said only where cost can't be."""
    out = []
    for within, members in groups:
        fastest = max(members, key=speed)
        for what, attr, unit in (("cheapest", costs[0], "USD"), ("least energy", costs[1], "kWh")):
            known = [s for s in members if getattr(s, attr) is not None]
            if not known:
                continue
            low = min(known, key=lambda s: getattr(s, attr))
            if low is not fastest and getattr(low, attr) < (getattr(fastest, attr) or float("inf")):
                out.append(f"{within}: the fastest per GPU is {fastest.config} ({speed_text(fastest)} on "
                           f"{fastest.gpu_name or '?'}), the {what} per million {per} is {low.config} "
                           f"({getattr(low, attr):.4g} {unit} on {low.gpu_name or '?'})")
            elif what == "cheapest":
                break  # the fastest is the cheapest: energy is said only where cost can't be
    return out


COLUMNS = ("model", "dtype", "p99 bound ms", "configuration", "GPU", "req/s per GPU", "bracket", "p99 ms",
           "p99 upper ms", "GPUs", "USD per M req", "kWh per M req", "measured", "best")


def cells(s: Sized) -> list[str]:
    """One line's cells, in COLUMNS' order."""
    def f(v: float | None, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    return [s.model, s.dtype, f(s.bound_ms, "g"), f"{s.backend}: {s.config}" if s.backend != s.label else s.config,
            s.gpu_name or "-", f(s.rate, ",.1f"), f"{s.rate:,.1f} - {f(s.rate_high, ',.1f')}", f(s.p99_ms, ".3g"),
            f(s.p99_upper_ms, ".3g") + (" (judged)" if s.confident else ""), f(s.gpus, "d"),
            f(s.usd_per_m, ".4g"), f(s.kwh_per_m, ".4g"), s.measured, "*" if s.best else ""]
