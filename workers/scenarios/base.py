"""The base class of load scenarios, and the figures a scenario is judged on.

A scenario is one class: the trial fields it uses and their checks (``fields``, ``check``), how it
measures through a runner (``measure``, given a ``workers.scenarios._session.Harness``), the
figures it is judged on (``figures``: ``compare`` judges each, ``report`` ranks by the first), its
validity rules (``reasons``) and where its rows go in a report (``report``). Nothing outside
``workers.scenarios`` names a scenario: the driver and the worker ask the registry.

Importing a scenario module must stay cheap (no numpy, torch or Ray at module level): the driver
imports them all to check a plan. The measuring machinery lives in this package's ``_``-modules,
imported by ``measure`` when a trial runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, TypedDict

from workers.row import Row

if TYPE_CHECKING:
    import numpy as np

#: (ratio candidate/base as "worse when > 1", interval low, interval high); Nones where not judged.
Judged = tuple[float | None, float | None, float | None]
#: ``interval(base samples, candidate samples, statistic)``: the bootstrap interval of the ratio
#: statistic(cand) / statistic(base), given by ``compare`` (its confidence, resamples and seed).
Interval = Callable[["np.ndarray", "np.ndarray", Callable[..., Any]], tuple[float, float]]


class Settings(TypedDict):
    """A backend entry's scenario settings as the plan merges them (``orchestrator.plan.settings.merged_settings``):
    every value a list (an axis) or None; in ``Scenario.check`` the minimums are filled with the
    trial's defaults."""

    name: list[str]
    concurrency: list[int] | None
    rates: list[float] | None
    arrival: list[str] | None
    latency_bound_ms: list[float] | None
    tpot_bound_ms: list[float] | None
    min_duration_s: float | None
    min_requests: int | None
    confident: bool | None


@dataclass(frozen=True)
class Figure:
    """One figure a scenario's rows are judged on: the ``column`` holding it, its ``label`` (the
    ``metric`` of a verdict), which way is ``better``, and the per-request ``samples`` column whose
    resamples give its interval (with ``statistic`` over them; none: judged on the value alone)."""

    column: str
    label: str
    better: Literal["lower", "higher"]
    samples: str | None = None
    statistic: str = "median"  # numpy's function of that name, or "p99"

    def value(self, row: Row) -> float | None:
        return row.get(self.column)

    def speed(self, row: Row) -> float | None:
        """The figure as higher-is-better (a latency inverted), None where it is missing or zero."""
        v = self.value(row)
        if not v:
            return None
        return float(v) if self.better == "higher" else 1.0 / v

    def stat(self) -> Callable[..., Any]:
        import numpy as np

        if self.statistic == "p99":
            return lambda a, axis=None: np.percentile(a, 99, axis=axis)
        return getattr(np, self.statistic)


@dataclass(frozen=True)
class Param:
    """A trial field a scenario uses, and the plan's scenario settings key that holds its values."""

    field: str
    setting: str


#: The default scenario's name: a trial's when its plan names none, and that of rows of runs older
#: than scenarios. Its class is in ``single_stream.py``; the name is here because the trial contract
#: needs it without scanning the package.
DEFAULT = "single-stream"

#: The trial fields scenarios may use, by name (``Trial``'s scenario parameters), with their settings keys.
PARAMS = {p.field: p for p in (Param("concurrency", "concurrency"), Param("rate", "rates"),
                               Param("arrival", "arrival"), Param("latency_bound_ms", "latency_bound_ms"),
                               Param("tpot_bound_ms", "tpot_bound_ms"),
                               Param("min_duration_s", "min_duration_s"), Param("min_requests", "min_requests"),
                               Param("confident", "confident"))}


class TrialSpec(Protocol):
    """What a scenario reads of a trial (``workers.contract.Trial`` is one)."""

    scenario: str
    batch_size: int
    seed: int
    concurrency: int
    rate: float | None
    arrival: str
    latency_bound_ms: float | None
    tpot_bound_ms: float | None
    new_tokens: int
    min_duration_s: float
    min_requests: int


@dataclass(frozen=True)
class Measured:
    """What a scenario measured: its row ``columns``, every ``output`` to parity-check (each repeat's
    or each lane's) and ``second``, the stale-output probe's result (``workers.measure.stale.probe``;
    None: not probed). ``arms``: an interleaved unit's other trials' (``Trial.arms``, in their order)."""

    columns: Row
    outputs: list[Any]
    second: Row | None = None
    arms: tuple[Measured, ...] = ()



class Scenario:
    """Base class of load scenarios. A subclass that sets ``name``, in any module of
    ``workers.scenarios`` (or passed to ``workers.scenarios.register``), is a scenario."""

    name: ClassVar[str]
    #: where it is listed among the scenarios (plan messages, tables): lower first
    order: ClassVar[int] = 100
    #: several requests in flight through a runner's ``lanes``; False: the runner's ``step``, one at a time
    uses_lanes: ClassVar[bool] = True
    #: it drives the trial with runners of its own, and checks their output itself (generation): the
    #: worker sets up no backend runner and checks no single-pass parity for it
    own_runners: ClassVar[bool] = False
    #: it measures an interleaved unit (``measure.interleave``: a trial carrying its other arms in
    #: ``Trial.arms``); the plan gives it the single-stream trials of such a plan (one scenario may)
    interleaves: ClassVar[bool] = False
    #: the trial fields it uses (``PARAMS``' names); the others stay at their defaults in its trials
    fields: ClassVar[tuple[str, ...]] = ()
    #: what its rows are judged on, the first foremost (``compare``, ``report``)
    figures: ClassVar[tuple[Figure, ...]] = ()
    #: what its rows of generation trials (``new_tokens``) are judged on, where not ``figures``
    generation_figures: ClassVar[tuple[Figure, ...]] = ()
    #: ``compare`` widens its interval by the between-run noise (False: the interval is its own bracket)
    widen_by_noise: ClassVar[bool] = True
    #: the validity rules on the spread of one-at-a-time latencies apply (``workers.measure.validity``)
    spread_rules: ClassVar[bool] = False
    #: where its rows go in the HTML report: "latency" (latency vs batch size), "capacity" (throughput
    #: vs latency curves), "peak" (the peak-rate table) or "table" (the results table only)
    report: ClassVar[Literal["latency", "capacity", "peak", "table"]] = "capacity"
    #: capacity curves: its points' marker, and whether each point is labelled with its concurrency
    curve_marker: ClassVar[str] = "s"
    curve_labels_concurrency: ClassVar[bool] = False

    @classmethod
    def figures_of(cls, row: Row) -> tuple[Figure, ...]:
        """What ``row`` is judged on: ``generation_figures`` for a generation trial's row where the
        scenario has them, else ``figures``."""
        return cls.generation_figures if row.get("new_tokens") and cls.generation_figures else cls.figures

    @classmethod
    def check(cls, settings: Settings, max_time_s: float) -> str | None:
        """What is wrong with one backend entry's merged settings for this scenario, or None.

        Called for every scenario an entry runs; ``max_time_s`` is the plan's ``measure.max_time_s``."""
        minimum = settings["min_duration_s"]
        if "min_duration_s" in cls.fields and minimum > max_time_s:
            return f"min_duration_s {minimum:g} is longer than measure.max_time_s ({max_time_s:g} s)"
        return None

    @classmethod
    def measure(cls, h: Any) -> Measured:
        """Measure the trial with ``h``, a ``workers.scenarios._session.Harness`` (``h.session()``: a
        runner set up, its memory and GPU watched)."""
        raise NotImplementedError(f"scenario {cls.name} does not measure")

    @classmethod
    def reasons(cls, row: Row, trial: TrialSpec) -> list[str]:
        """Why an ok row does not meet this scenario's own conditions (the row's ``invalid_reasons``)."""
        return []

    @classmethod
    def judge(cls, figure: Figure, b: Row, c: Row, interval: Interval) -> Judged:
        """Candidate ``c`` against base ``b`` (two ok rows of one trial) on ``figure``: the ratio
        oriented so that > 1 is worse, and its interval."""
        import numpy as np

        if figure.samples is None:
            vb, vc = figure.value(b), figure.value(c)
            if not vb or not vc:
                return None, None, None
            r = vc / vb if figure.better == "lower" else vb / vc
            return float(r), float(r), float(r)
        stat = figure.stat()
        sb = np.asarray(b.get(figure.samples) or [figure.value(b)], dtype=np.float64)
        sc = np.asarray(c.get(figure.samples) or [figure.value(c)], dtype=np.float64)
        if figure.better == "higher":
            sb, sc = sc, sb
        lo, hi = interval(sb, sc, stat)
        return float(stat(sc) / stat(sb)), lo, hi

    @classmethod
    def tag(cls, row: Row) -> str:
        """The row's scenario in a few words for case names and tables (``offline c=4``,
        ``server c=1 200/s``); empty for the default scenario."""
        if cls.name == DEFAULT:
            return ""
        parts = [cls.name, f"c={row.get('concurrency') or 1}"]
        if row.get("target_rate") is not None:
            parts.append(f"{row['target_rate']:g}/s")
        if row.get("arrival") not in (None, "poisson"):
            parts.append(str(row["arrival"]))
        if row.get("latency_bound_ms") is not None:
            parts.append(f"{'TTFT ' if row.get('new_tokens') else ''}p99<={row['latency_bound_ms']:g}ms")
        if row.get("tpot_bound_ms") is not None:
            parts.append(f"TPOT p99<={row['tpot_bound_ms']:g}ms")
        return " ".join(parts)

    @classmethod
    def curve_label(cls, row: Row, axes: str = "") -> str:
        """A row's line in the capacity curves (``axes``: the row's named axes, where a model has several)."""
        return f"{row['label']} ({row['io']}, {axes + ', ' if axes else ''}{cls.name})"
