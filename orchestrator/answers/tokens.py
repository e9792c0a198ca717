"""Sizing and the Pareto front of generation rows, in output tokens (docs/reports.md#generation-in-tokens).

A generation find-peak row's ``peak_rate`` counts requests, one request being one generation of
``batch_size`` sequences of ``new_tokens`` tokens each, found within two bounds: the p99 time to first
token (``latency_bound_ms``) and the p99 time per output token (``tpot_bound_ms``). Per model, shape
(prompt + new tokens), dtype and both bounds, every configuration is one line:

- ``out tok/s per GPU``: ``peak_rate * batch_size * new_tokens``, the output tokens the certified rate
  carries (its bracket likewise from ``peak_rate_fail``), one trial being one GPU;
- ``GPUs``: ``ceil(target_tokens * (1 + headroom) / out tok/s)`` with ``--target-tokens`` (output
  tokens/s), else ``ceil(target_rate * (1 + headroom) / peak_rate)`` with ``--target-rate`` (requests/s);
- ``USD per M out tok``: ``price per GPU-hour / (out tok/s * 3600) * 1e6`` (prices matched as
  :func:`orchestrator.answers.sizing.price_for` matches them);
- ``kWh per M out tok``: ``energy_j_per_request / (batch_size * new_tokens) * 1e6 / 3.6e6``.

The best line of a group serves the most output tokens/s per GPU. Where a configuration was measured
more than once, the figure with the most of its node's GPUs busy is used, as single-pass sizing does.

The front: every ok, valid offline, server and find-peak generation row of a model, shape and dtype is
a point, output tokens/s per GPU (find-peak: at its peak rate, as above; offline and server: the row's
``tokens_per_s``) against the p99 time per output token. TPOT, not TTFT: a decode step is timed the
same way in every scenario, while TTFT counts from a request's start under offline and from its
scheduled arrival under server and find-peak, so offline points would sit at a TTFT no server sees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from orchestrator.answers import pareto
from orchestrator.answers.sizing import (
    J_PER_KWH,
    ConfigLine,
    Sort,
    cheapest_not_fastest,
    grouped,
    measured_text,
    most_busy,
    price_for,
    ranked,
    sort_key,
)
from orchestrator.answers.tables import axes_text
from workers import scenarios
from workers.contract import Status
from workers.row import Row


def _model(r: Row) -> str:
    return f"{r.get('model')} {r.get('prompt_len')}+{r.get('new_tokens')} {axes_text(r)}".strip()


def _ok(r: Row) -> bool:
    return bool(r.get("new_tokens")) and r.get("status") == Status.OK and r.get("valid") is not False


@dataclass
class TokenSized(ConfigLine):
    """One generation configuration's line of the sizing table."""

    model: str  # model and shape (prompt + new tokens)
    dtype: str
    ttft_bound_ms: float | None
    tpot_bound_ms: float | None
    label: str
    backend: str
    batch_size: int
    new_tokens: int
    concurrency: int | None
    gpu_name: str | None
    rate: float  # requests (generations) /s per GPU at the peak
    rate_high: float | None
    tokens_per_s: float  # output tokens/s per GPU at the peak
    tokens_per_s_high: float | None  # the bracket's upper end, in output tokens/s
    ttft_p99_ms: float | None
    ttft_p99_upper_ms: float | None
    tpot_p99_ms: float | None
    confident: bool
    measured: str
    gpus: int | None = None
    usd_per_m_tokens: float | None = None
    price_key: str | None = None
    kwh_per_m_tokens: float | None = None
    best: bool = False

    @property
    def group(self) -> tuple[str, str, float | None, float | None]:
        return self.model, self.dtype, self.ttft_bound_ms, self.tpot_bound_ms


def _peak_upper(r: Row) -> float | None:
    """The TTFT p99's upper confidence bound at the peak: the last passing probe's (the row's own
    ``latency_ms_p99_upper`` bounds whole requests)."""
    passed, upper = r.get("probe_passed") or [], r.get("probe_p99_upper_ms") or []
    i = max((i for i, p in enumerate(passed) if p), default=None)
    return upper[i] if i is not None and i < len(upper) else None


def _line(r: Row) -> TokenSized:
    per = int(r.get("batch_size") or 0) * int(r["new_tokens"])  # output tokens per request
    rate, high, joules = float(r["peak_rate"]), r.get("peak_rate_fail"), r.get("energy_j_per_request")
    return TokenSized(model=_model(r), dtype=str(r.get("dtype")), ttft_bound_ms=r.get("latency_bound_ms"),
                      tpot_bound_ms=r.get("tpot_bound_ms"), label=str(r.get("label")), backend=str(r.get("backend")),
                      batch_size=int(r.get("batch_size") or 0), new_tokens=int(r["new_tokens"]),
                      concurrency=r.get("concurrency"), gpu_name=r.get("device_name"), rate=rate, rate_high=high,
                      tokens_per_s=rate * per, tokens_per_s_high=high * per if high else None,
                      ttft_p99_ms=r.get("ttft_ms_p99"), ttft_p99_upper_ms=_peak_upper(r),
                      tpot_p99_ms=r.get("tpot_ms_p99"), confident=bool(r.get("confident")), measured=measured_text(r),
                      kwh_per_m_tokens=joules / per * 1e6 / J_PER_KWH if joules and per else None)


def peak_lines(rows: list[Row]) -> list[TokenSized]:
    """One line per generation configuration with a peak rate (ok, valid rows): the figure measured
    with the most of its node's GPUs busy where there are several."""
    def keep(r: Row) -> bool:
        return _ok(r) and bool(r.get("peak_rate")) and scenarios.of(r).report == "peak" and bool(r.get("batch_size"))

    def key(r: Row) -> tuple[Any, ...]:
        return (_model(r), r.get("dtype"), r.get("latency_bound_ms"), r.get("tpot_bound_ms"), r.get("label"),
                r.get("batch_size"), r.get("concurrency"), r.get("io"), r.get("device_name"), bool(r.get("confident")))

    return [_line(r) for r in most_busy(rows, keep, key)]


def size(rows: list[Row], target_rate: float | None = None, target_tokens: float | None = None,
         headroom: float = 0.0, prices: dict[str, float] | None = None, sort: Sort = "gpus") -> list[TokenSized]:
    """The generation sizing lines, grouped by model and shape, dtype and both bounds, each group sorted
    by ``sort`` (the prices are checked against the run by ``sizing.size``)."""
    lines = peak_lines(rows)
    for s in lines:
        if target_tokens is not None:
            s.gpus = math.ceil(target_tokens * (1 + headroom) / s.tokens_per_s - 1e-9)
        elif target_rate is not None:
            s.gpus = math.ceil(target_rate * (1 + headroom) / s.rate - 1e-9)
        matched = price_for(s.gpu_name, prices or {})
        if matched:
            s.price_key, hourly = matched
            s.usd_per_m_tokens = hourly / (s.tokens_per_s * 3600) * 1e6
    def speed(s: TokenSized) -> float:
        return s.tokens_per_s

    return ranked(lines, speed, sort_key(sort, speed, "usd_per_m_tokens", "kwh_per_m_tokens"))


def bounds_text(ttft: float | None, tpot: float | None) -> str:
    return " and ".join(f"{name} p99 <= {b:g} ms" for name, b in (("TTFT", ttft), ("TPOT", tpot)) if b is not None)


def differences(lines: list[TokenSized]) -> list[str]:
    """Per group, where the cheapest per million output tokens (with prices; else the least energy) is
    not the fastest per GPU."""
    named = [(" ".join(filter(None, [model, dtype, bounds_text(ttft, tpot)])), members)
             for (model, dtype, ttft, tpot), members in grouped(lines).items()]
    return cheapest_not_fastest(named, lambda s: s.tokens_per_s, lambda s: f"{s.tokens_per_s:,.0f} output tokens/s",
                                ("usd_per_m_tokens", "kwh_per_m_tokens"), "output tokens")


COLUMNS = ("model", "dtype", "TTFT p99 bound ms", "TPOT p99 bound ms", "configuration", "GPU", "req/s per GPU",
           "out tok/s per GPU", "bracket out tok/s", "TTFT p99 ms", "TPOT p99 ms", "GPUs", "USD per M out tok",
           "kWh per M out tok", "measured", "best")


def cells(s: TokenSized) -> list[str]:
    """One line's cells, in COLUMNS' order; the TTFT p99 with its upper confidence bound where known."""
    def f(v: float | None, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    upper = f" (upper {s.ttft_p99_upper_ms:.3g}{', judged' if s.confident else ''})" \
        if s.ttft_p99_upper_ms is not None else ""
    return [s.model, s.dtype, f(s.ttft_bound_ms, "g"), f(s.tpot_bound_ms, "g"),
            f"{s.backend}: {s.config}" if s.backend != s.label else s.config, s.gpu_name or "-", f(s.rate, ",.2f"),
            f(s.tokens_per_s, ",.1f"), f"{s.tokens_per_s:,.1f} - {f(s.tokens_per_s_high, ',.1f')}",
            f(s.ttft_p99_ms, ".3g") + upper, f(s.tpot_p99_ms, ".3g"), f(s.gpus, "d"), f(s.usd_per_m_tokens, ".4g"),
            f(s.kwh_per_m_tokens, ".4g"), s.measured, "*" if s.best else ""]


def points(rows: list[Row]) -> list[pareto.Point]:
    """Every generation load point (see the module's doc): ``throughput`` is output tokens/s per GPU,
    ``p99_ms`` the p99 time per output token."""
    out = []
    for r in rows:
        if not _ok(r) or scenarios.of(r).report not in pareto.LOAD_SECTIONS or r.get("tpot_ms_p99") is None:
            continue
        if r.get("peak_rate"):
            tokens = float(r["peak_rate"]) * int(r.get("batch_size") or 0) * int(r["new_tokens"])
        elif scenarios.of(r).report == "capacity" and r.get("tokens_per_s"):
            tokens = float(r["tokens_per_s"])
        else:
            continue
        out.append(pareto.Point(model=_model(r), dtype=str(r.get("dtype")), config=pareto.config_of(r),
                                throughput=tokens, p99_ms=float(r["tpot_ms_p99"]), gpu=r.get("device_name")))
    return pareto.name_gpus(out)


def front(rows: list[Row]) -> list[pareto.Point]:
    """The generation front's points, by model, shape and dtype, lowest TPOT p99 first."""
    return sorted((p for p in pareto.mark(points(rows)) if p.front),
                  key=lambda p: (p.model, p.dtype, p.p99_ms, -p.throughput))


FRONT_COLUMNS = ("model", "dtype", "configuration", "out tok/s per GPU", "TPOT p99 ms")


def front_json(p: pareto.Point) -> dict[str, Any]:
    return {"model": p.model, "dtype": p.dtype, "config": p.config, "tokens_per_s": p.throughput,
            "tpot_p99_ms": p.p99_ms, "gpu": p.gpu, "front": p.front}
