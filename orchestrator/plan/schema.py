"""A plan's typed, frozen models (``Plan``, ``Matrix``, ``BackendEntry``, ``ScenarioSettings``,
``ExcludeRule``, ``Budget``): what a plan may say. Reading the YAML and the messages are in
``orchestrator.plan.load``; a model's forms in ``orchestrator.plan.forms``.

Every error names the file, the key path (``matrix.backends[2].options.io_binding``) and what
was expected. Validation is pure: it reads the plan (and an ONNX file's header) and nothing
else; no device, no network, no environment writes.

A plan, all keys shown::

    name: quickstart
    device: auto                 # cuda | cpu | auto (cuda where the cluster has GPUs)
    accelerator_type: null       # e.g. T4, H100: run only on that GPU model
    cpus_per_worker: null        # CPUs per worker actor (default: an even split of its node)
    builders: null               # build-ahead tasks per node (default: its spare CPUs; 0: none)
    builders: null               # build-ahead tasks per node (default: its spare CPUs; 0: none)
    seed: 0                      # weights and inputs
    models:
      - torchvision:resnet18     # shorthand; or a mapping:
      - torchvision: resnet50
        input_shape: [3, 224, 224]
      - onnx: models/net.onnx    # ORT only; path relative to the plan file
      - python: mypkg.models:make_net   # imports your code, like a Makefile runs commands
        input_shape: [3, 32, 32]
    matrix:
      batch_sizes: [1, 8]
      dtypes: [fp32]             # fp32 | fp16 | bf16
      io: [device]               # device | host
      backends:
        - torch-eager            # shorthand; or a mapping:
        - backend: ort
          label: ort-tuned       # names this configuration in results (default: backend)
          io: [device]           # overrides matrix.io for this entry
          options: {io_binding: true}
          slowdown: 0.0          # a known slowdown, a fraction of each step (gate testing; in the trial id)
      exclude:
        - {backend: ort, dtype: bf16}
      scenarios: [single-stream]  # load scenarios as an axis: single-stream | offline | server | find-peak
      concurrency: [1]           # axis: requests in flight (offline, server, find-peak)
      rates: [100]               # axis: server arrival rates, requests/s
    scenario:                    # the scenario's settings for every trial (a name alone: scenario: offline);
      name: single-stream        # a matrix.backends entry's own scenario: overrides these key by key
      concurrency: 1             # each of name, concurrency, rates, latency_bound_ms may be a list (an axis)
      rates: null                # server: requests/s (required for server)
      arrival: poisson           # poisson | constant
      latency_bound_ms: null     # p99 bound: required for find-peak, optional for server (generation: TTFT's)
      tpot_bound_ms: null        # generation trials, server and find-peak: p99 time per output token bound
      min_duration_s: 2          # offline, server: at least this long...
      min_requests: 200          # ...and at least this many requests
      confident: false           # find-peak: judge each rate on the p99's upper confidence bound
    budgets:                     # limits a trial must meet (JUnit: a missed one fails the case)
      - {max_latency_ms: 50}     # every trial: median latency at most 50 ms
      - {model: resnet50, batch_size: 1, max_p99_ms: 8, min_throughput: 150}
    measure:
      warmup_iters: 10           # untimed iterations first, then windows until steady:
      warmup_window: 10          #   iterations per warm-up window
      warmup_rel_tol: 0.02       #   steady = two consecutive windows' medians within 2%
      warmup_max_iters: 1000     #   cap (= warmup_iters: a fixed warm-up)
      warmup_max_s: 10           #   time cap
      iters: 50                  # at least this many timed iterations...
      min_time_s: 0              # ...and at least this long...
      target_rel_ci: 0.01        # ...and the 95% CI of the median within 1% of it (null: don't wait)
      max_time_s: 60             # but never longer than this
      max_iters: 20000           # nor more iterations than this
      repeats: 1                 # measure N times, a fresh runner each time
      process_repeats: 1         # measure in N fresh processes, one after another on the trial's GPU
      interleave: null           # A/B in one worker: {rounds: 20, round_s: 0.5, warmup_s: 0.2, base: LABEL,
                                 #   by: label | model, threshold: 0.01, confidence: 0.99} (docs/measuring.md)
    parity:
      check: true                # compare each output with torch eager fp32 on the same device
      tolerance: {fp32: 0.05, fp16: 0.1, bf16: 0.25}  # max |y - ref| / max |ref|
    timeout_s: 900               # a trial running longer is killed (worker replaced): status timeout
    retries: 0                   # tries again of a trial whose worker died or that timed out
                                 # (both may also be set on a matrix.backends entry)
    max_trials: 100000           # a plan expanding to more (counted before exclude) is refused
    prices: {H100: 3.50}         # USD per GPU-hour (an example), for report's cost per million requests

Numbers have ranges a result column can hold and that make sense (batch sizes and dims up to
MAX_DIM, iterations up to MAX_ITERS, no infinities); any other integer is at most 64 bits.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal, Union

from pydantic import BeforeValidator, Field, ValidationInfo, create_model, model_validator

from orchestrator.plan.forms import model_from_yaml
from workers import scenarios
from workers.config import StrictModel
from workers.contract import ARRIVALS, MAX_DIM, Dtype, Io, Math, MeasureSpec, ModelSpec, ParitySpec, Trial

#: The most trials a plan may expand to (counted before ``exclude``) unless it sets ``max_trials``:
#: expanding and checking 100,000 takes a few seconds; millions took minutes and gigabytes.
MAX_TRIALS = 100_000
#: The most requests a load scenario keeps in flight, and the most retries of a trial.
MAX_CONCURRENCY = 4096
MAX_RETRIES = 100

EXCLUDE_KEYS = ("model", "backend", "label", "batch_size", "dtype", "io", "axes", "scenario", "concurrency", "rate",
                "math")


def exclude_value(trial: Trial, key: str) -> Any:
    """What an exclude rule's ``key`` (any of EXCLUDE_KEYS but ``axes``) is compared with in ``trial``."""
    if key == "math":  # fp32 trials only: an fp16 trial has no math mode to match
        return trial.math if trial.dtype == "fp32" else None
    return trial.model.name if key == "model" else getattr(trial, key)


Strict = StrictModel
ScenarioName = scenarios.Name
Arrival = Literal[ARRIVALS]  # type: ignore[valid-type]


def _listify(v: Any) -> Any:
    """A scalar where a list (an axis) is accepted: a list of one."""
    return v if isinstance(v, list) or v is None else [v]


PosInts = Annotated[list[Annotated[int, Field(ge=1, le=MAX_CONCURRENCY)]], BeforeValidator(_listify),
                    Field(min_length=1)]
PosFloats = Annotated[list[Annotated[float, Field(gt=0)]], BeforeValidator(_listify), Field(min_length=1)]


class ScenarioSettings(Strict):
    """A load scenario and its parameters (``scenario:`` of the plan or of a backend entry); a list
    is an axis, swept like batch sizes. Parameters a scenario doesn't use don't multiply its trials."""

    name: Annotated[list[ScenarioName], BeforeValidator(_listify), Field(min_length=1)] | None = None
    concurrency: PosInts | None = None
    rates: PosFloats | None = None
    """server: arrival rates, requests/s."""
    arrival: Annotated[list[Arrival], BeforeValidator(_listify), Field(min_length=1)] | None = None
    latency_bound_ms: PosFloats | None = None
    """The p99 latency bound, ms: required for find-peak; for server, a row over it is not valid.
    Generation trials: the bound on the p99 time to first token."""
    tpot_bound_ms: PosFloats | None = None
    """Generation trials, server and find-peak: the bound on the p99 time per output token, ms."""
    min_duration_s: float | None = Field(None, gt=0)
    min_requests: int | None = Field(None, ge=1, le=10_000_000)
    confident: bool | None = None
    """find-peak: judge each probe on the p99's 95% upper confidence bound, not its point estimate."""


def _scenario_from_yaml(v: Any) -> Any:
    """``scenario: offline`` is short for ``scenario: {name: offline}``."""
    return {"name": v} if isinstance(v, str | list) else v


ScenarioField = Annotated[ScenarioSettings, BeforeValidator(_scenario_from_yaml)]


class TrialMatch(Strict):
    """The keys that pick trials (``EXCLUDE_KEYS``): an exclude rule's and a plan-wide budget's. A
    trial matches when it has one of the listed values for every key given."""

    model: str | list[str] | None = None
    backend: str | list[str] | None = None
    label: str | list[str] | None = None
    batch_size: int | list[int] | None = None
    dtype: Dtype | list[Dtype] | None = None
    io: Io | list[Io] | None = None
    axes: dict[str, int | list[int]] | None = None
    """Named axes' values, e.g. {seq: 384}: matches trials whose axes have these values."""
    scenario: ScenarioName | list[ScenarioName] | None = None
    concurrency: int | list[int] | None = None
    rate: float | list[float] | None = None
    math: Math | list[Math] | None = None

    def matches(self, trial: Trial) -> bool:
        for key in EXCLUDE_KEYS:
            want = getattr(self, key)
            if want is None:
                continue
            if key == "axes":
                if not _axes_match(want, trial.axes):
                    return False
                continue
            if exclude_value(trial, key) not in (want if isinstance(want, list) else [want]):
                return False
        return True


class ExcludeRule(TrialMatch):
    @model_validator(mode="after")
    def _not_empty(self) -> ExcludeRule:
        if all(getattr(self, k) is None for k in EXCLUDE_KEYS):
            raise ValueError(f"an exclude rule needs at least one of: {', '.join(EXCLUDE_KEYS)}")
        return self


BUDGET_LIMITS = ("max_latency_ms", "max_p99_ms", "min_throughput")


class Budget(Strict):
    """Limits one trial's results must meet; a row that misses one fails its JUnit case."""

    max_latency_ms: float | None = Field(None, gt=0)
    """Median latency per inference, ms."""
    max_p99_ms: float | None = Field(None, gt=0)
    min_throughput: float | None = Field(None, gt=0)
    """Samples per second (at the median latency)."""

    @model_validator(mode="after")
    def _some_limit(self) -> Budget:
        if all(getattr(self, k) is None for k in BUDGET_LIMITS):
            raise ValueError(f"a budget needs at least one of: {', '.join(BUDGET_LIMITS)}")
        return self

    def limits(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in BUDGET_LIMITS if getattr(self, k) is not None}


class BudgetRule(TrialMatch, Budget):
    """A plan-wide budget for the trials matching its keys (all trials when it names none)."""


class BackendEntry(Strict):
    """Common part of a matrix.backends entry; ``options`` is typed per backend (see below)."""

    backend: str
    label: str | None = None
    io: list[Io] | None = None
    math: list[Math] | None = Field(None, min_length=1)  # overrides matrix.math for this entry's fp32 trials
    timeout_s: float | None = Field(None, gt=0)  # overrides the plan's for this entry's trials
    retries: int | None = Field(None, ge=0, le=MAX_RETRIES)
    budgets: Budget | None = None
    profile: bool = False  # a profile of a few iterations after the timed ones (not part of the trial id)
    #: a known slowdown injected into each step, a fraction of it (workers/measure/slowdown.py): gate testing
    slowdown: float = Field(0.0, ge=0, le=1)
    scenario: ScenarioField | None = None  # overrides the plan's scenario settings, key by key


@functools.cache
def backend_entry_type() -> Any:
    """The discriminated union of backend entries, one member per registered backend."""
    from workers.backends import registry

    members = []
    for name, runner in sorted(registry().items()):
        members.append(
            create_model(
                f"Entry_{name.replace('-', '_')}",
                __base__=BackendEntry,
                backend=(Literal[name], ...),
                options=(runner.Options, runner.Options()),
            )
        )
    return Annotated[Union[tuple(members)], Field(discriminator="backend")]  # noqa: UP007


class Matrix(Strict):
    batch_sizes: list[Annotated[int, Field(ge=1, le=MAX_DIM)]] = Field(min_length=1)
    dtypes: list[Dtype] = Field(default_factory=lambda: ["fp32"], min_length=1)
    io: list[Io] = Field(default_factory=lambda: ["device"], min_length=1)
    math: list[Math] = Field(default_factory=lambda: ["tf32"], min_length=1)
    """fp32 trials: tf32 | strict, an axis (workers/measure/mathmode.py); fp16/bf16 trials have one."""
    backends: list[Any] = Field(min_length=1)
    exclude: list[ExcludeRule] = Field(default_factory=list)
    axes: dict[str, list[Annotated[int, Field(ge=1, le=MAX_DIM)]]] = Field(default_factory=dict)
    """Named axes swept like batch sizes: {seq: [128, 384]}; ``seq_lens: [...]`` is short for it."""
    scenarios: Annotated[list[ScenarioName], Field(min_length=1)] | None = None
    """Load scenarios as an axis (the same as the plan's ``scenario.name`` as a list)."""
    concurrency: PosInts | None = None
    rates: PosFloats | None = None
    prompt_lens: Annotated[list[Annotated[int, Field(ge=1, le=MAX_DIM)]], BeforeValidator(_listify)] | None = None
    """Generation trials: prompt tokens per sequence (orchestrator.plan.generation)."""
    new_tokens: Annotated[list[Annotated[int, Field(ge=0, le=MAX_DIM)]], BeforeValidator(_listify)] | None = None


def _model(item: Any, info: ValidationInfo) -> Any:
    """A model in any of its forms (``orchestrator.plan.forms``), paths relative to the plan's folder."""
    return model_from_yaml(item, (info.context or {}).get("base_dir", "."))


class Plan(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    device: Literal["cuda", "cpu", "auto"] = "auto"
    accelerator_type: str | None = None
    cpus_per_worker: float | None = Field(None, gt=0)
    builders: int | None = Field(None, ge=0, le=1024)
    """Build-ahead tasks per node (orchestrator/run/ahead.py); None: the node's spare CPUs."""
    builders: int | None = Field(None, ge=0, le=1024)
    """Build-ahead tasks per node (orchestrator/run/ahead.py); None: the node's spare CPUs."""
    seed: int = Field(0, ge=0, le=2**32 - 1)
    models: list[Annotated[ModelSpec, BeforeValidator(_model)]] = Field(min_length=1)
    matrix: Matrix
    measure: MeasureSpec = Field(default_factory=MeasureSpec)
    parity: ParitySpec = Field(default_factory=ParitySpec)
    timeout_s: float = Field(900.0, gt=0)
    retries: int = Field(0, ge=0, le=MAX_RETRIES)
    budgets: list[BudgetRule] = Field(default_factory=list)
    scenario: ScenarioField = Field(default_factory=ScenarioSettings)
    max_trials: int = Field(MAX_TRIALS, ge=1, le=100_000_000)
    """A plan expanding to more trials than this (before ``exclude``) is refused before expanding."""
    prices: dict[str, Annotated[float, Field(gt=0)]] | None = None
    """USD per GPU-hour by accelerator (a word of the row's ``device_name``): ``report``'s cost per million
    requests."""


def _axes_match(want: dict[str, int | list[int]], got: dict[str, int]) -> bool:
    return all(k in got and got[k] in (v if isinstance(v, list) else [v]) for k, v in want.items())

