"""The contract between driver and worker: what a trial is, what a row is, what a status means.

Both sides import this module (the driver to build trials and failure rows, the worker to run
trials and build rows); it lives in ``workers`` because workers never import ``orchestrator``.
It imports neither torch nor Ray::

    driver: plan --expand--> Trial --Ray--> worker: run_trial(Trial) --> row (workers.rows.checked_row)
            scheduler: a trial whose worker died --> workers.rows.failure_row(Trial, Status, error)

- ``Trial``: a frozen dataclass, the unit of work. Its id (``trial_id``) hashes what decides what
  is measured (see :func:`trial_id`); labels, plan names, budgets and fault settings stay out.
- ``Status``: how a trial ended. The strings are the ones stored in every run so far.
- ``MeasureSpec`` and ``ParitySpec``: how a trial is timed and judged, with their defaults written
  once, here (the plan's ``measure`` and ``parity`` sections are these types).
- Rows are plain dicts whose keys are columns of ``workers.schema.SCHEMA`` (``workers.rows``:
  ``spec_columns`` gives the columns that come from the trial alone; ``checked_row`` turns a row with
  a column the schema lacks into a failed row that names it, so one bad column costs one trial).

Adding a result column takes two edits: its entry in ``workers/schema.py`` (name, type, meaning:
the docs' table is generated from it) and the code that sets it in the row.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Annotated, Any, Literal, TypedDict

from pydantic import Field, JsonValue, model_serializer, model_validator

from workers import scenarios
from workers.config import StrictModel

#: a backend's name -> the fp32 math mode it ran before the ``math`` field (``workers.backends.math_before``)
MathBefore = Callable[[str], "str | None"]


class Status(str, enum.Enum):
    """How a trial ended (the row's ``status`` column); compares equal to its string."""

    OK = "ok"
    SKIPPED = "skipped"  # the backend can't run this trial here (dtype, provider, library): not a failure
    FAILED = "failed"
    PARITY_FAILED = "parity_failed"  # it ran, but its output is wrong: no latency published
    TIMEOUT = "timeout"
    OOM = "oom"

    def __str__(self) -> str:
        return self.value

    @property
    def succeeded(self) -> bool:
        return self.value in SUCCESS


#: The statuses that count as success (as the strings rows hold): a run of only these exits 0.
SUCCESS = frozenset({Status.OK.value, Status.SKIPPED.value})


def succeeded(status: str) -> bool:
    """True for a status string (a row's) that counts as success."""
    return status in SUCCESS


Dtype = Literal["fp32", "fp16", "bf16"]
Io = Literal["device", "host"]
#: The arithmetic of an fp32 trial (``workers.measure.mathmode``): TF32 allowed, or IEEE fp32.
Math = Literal["tf32", "strict"]


#: The most iterations a trial may time or warm up with: the timed ones are stored, one sample each.
MAX_ITERS = 10_000_000
#: The largest batch size, named-axis value or input dim a plan may give (a row stores it as int64;
#: one that fits no device is still that trial's failed row at run time).
MAX_DIM = 2**24


class Interleave(StrictModel):
    """``measure.interleave``: the trials of several arms that share everything else are measured as one
    unit in one worker process, in rounds (``workers/scenarios/_interleave.py``; docs/measuring.md)."""

    rounds: int = Field(20, ge=3, le=1000)
    #: how many times each arm's runner is built over the rounds: the rounds split into this many
    #: blocks, every arm built afresh for each, and the ratio's interval counts the blocks, so it
    #: holds the spread between builds of one configuration (kernel choices, buffer placement:
    #: 2 runners of one GPU-bound configuration measured up to 3.3% apart in one process)
    builds: int = Field(1, ge=1, le=100)
    #: the timed window of each arm in each round, seconds (at least ``min_round_iters`` iterations)
    round_s: float = Field(0.5, gt=0, le=600)
    #: each arm's own warm-up before its window in every round, seconds (at least one iteration)
    warmup_s: float = Field(0.2, ge=0, le=600)
    min_round_iters: int = Field(5, ge=1, le=MAX_ITERS)
    #: what tells the arms apart: the backend entries' labels, or the models (a model-code change)
    by: Literal["label", "model"] = "label"
    #: the arm every other is compared with (a label, or a model's name); default: each unit's first
    base: str | None = None
    #: which arms are measured together: lists of labels (or models), a unit per list and shape; default:
    #: every arm of a shape in one unit
    sets: tuple[tuple[str, ...], ...] | None = Field(None, min_length=1)
    #: the paired ratio's verdict: beyond 1 +- threshold, with the interval at this confidence clear of 1
    threshold: float = Field(0.01, gt=0, lt=1)
    confidence: float = Field(0.99, ge=0.5, lt=1)


class MeasureSpec(StrictModel):
    """How each trial is timed (``workers.measure.timing.measure`` documents the policy). The defaults live here."""

    warmup_iters: int = Field(10, ge=0, le=MAX_ITERS)
    warmup_window: int = Field(10, ge=1, le=MAX_ITERS)
    warmup_rel_tol: float = Field(0.02, gt=0)
    warmup_max_iters: int = Field(1000, ge=0, le=MAX_ITERS)
    warmup_max_s: float = Field(10.0, ge=0)
    iters: int = Field(50, ge=1, le=MAX_ITERS)
    min_time_s: float = Field(0.0, ge=0)
    target_rel_ci: float | None = Field(0.01, gt=0, lt=1)
    max_time_s: float = Field(60.0, gt=0)
    max_iters: int = Field(20_000, ge=1, le=MAX_ITERS)
    repeats: int = Field(1, ge=1, le=100)
    #: fresh worker processes the trial is measured in, one after another on its GPU (``workers.processes``):
    #: the row's interval then includes the spread between processes. Like ``repeats`` it is in the trial id
    #: (at its default it stays out, so existing ids hold): it changes what the row's samples are
    process_repeats: int = Field(1, ge=1, le=100)
    #: generation trials (workers/generation): timed generations (each gives new_tokens - 1 decode samples)
    #: after untimed warm-up ones; the single-pass keys above do not apply to them
    generations: int = Field(3, ge=1, le=1000)
    warmup_generations: int = Field(1, ge=0, le=1000)
    #: distinct seeded inputs staged on the device before timing, cycled through (``workers.measure.pool``)
    input_pool: int = Field(1, ge=1, le=1024)
    #: time the trial again on one repeated input and flag a row faster there (MLPerf TEST04)
    repeat_check: bool = False
    #: interleaved A/B: the arms of one unit measured in alternating rounds in one worker (``Interleave``)
    interleave: Interleave | None = None

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        """``interleave`` only where set: a plan without it dumps as it always has."""
        out = handler(self)
        if self.interleave is None:
            out.pop("interleave", None)
        return out

    @model_validator(mode="after")
    def _bounds(self) -> MeasureSpec:
        if self.min_time_s > self.max_time_s:
            raise ValueError(f"min_time_s ({self.min_time_s}) is larger than max_time_s ({self.max_time_s})")
        if self.iters > self.max_iters:
            raise ValueError(f"iters ({self.iters}) is larger than max_iters ({self.max_iters})")
        if self.repeat_check and self.input_pool < 2:
            raise ValueError("repeat_check: true compares a pool of inputs with one repeated input; "
                             "set input_pool to 2 or more")
        if self.warmup_max_iters < self.warmup_iters:
            raise ValueError(
                f"warmup_max_iters ({self.warmup_max_iters}) is smaller than warmup_iters ({self.warmup_iters}); "
                "set them equal for a fixed warm-up"
            )
        if self.interleave is not None and (self.repeats > 1 or self.input_pool > 1):
            raise ValueError("interleave: its rounds are its repeats, on the trial's own input; "
                             "leave repeats and input_pool at 1")
        if self.interleave is not None and self.interleave.rounds < 3 * self.interleave.builds:
            raise ValueError(f"interleave: builds ({self.interleave.builds}) needs at least "
                             f"{3 * self.interleave.builds} rounds, 3 for each build (a build's median round "
                             f"leaves out a stalled one); rounds is {self.interleave.rounds}")
        if self.interleave is not None and getattr(self, "process_repeats", 1) > 1:  # the cross-run design's key
            raise ValueError("interleave: its arms share one worker process; process_repeats is the other design, "
                             "for comparing runs: leave it at 1")
        return self


#: max |y - ref| / max |ref|. Random-weight ResNet-50 on a CPU gives ~0.035 in fp16 and ~0.13 in
#: bf16 (its logits are small and close together); a wrong output gives ~1. fp32 on an H100 gives
#: 0.021-0.028 (torch and ORT alike): both use TF32 for convolutions by default, the reference doesn't.
DEFAULT_TOLERANCE = {"fp32": 0.05, "fp16": 0.1, "bf16": 0.25}


class ParityTolerance(StrictModel):
    fp32: float = Field(DEFAULT_TOLERANCE["fp32"], gt=0)
    fp16: float = Field(DEFAULT_TOLERANCE["fp16"], gt=0)
    bf16: float = Field(DEFAULT_TOLERANCE["bf16"], gt=0)


class ParitySpec(StrictModel):
    """Each trial's output against a torch eager fp32 reference (``workers.measure.parity``)."""

    check: bool = True
    tolerance: ParityTolerance = Field(default_factory=ParityTolerance)


InputDtype = Literal["float32", "float16", "bfloat16", "int64", "int32", "bool"]
FLOAT_INPUT_DTYPES = frozenset({"float32", "float16", "bfloat16"})
#: The batch axis: in an input's shape, the trial's batch size.
BATCH_AXIS = "batch"


class InputSpec(StrictModel):
    """One named input of a model with several (or typed) inputs: its dtype, its shape with named
    axes (``batch`` is the batch size, other names take their value from the model's or the matrix's
    ``axes``; ints are fixed dims) and how it is filled. Floating inputs are fed in the trial's dtype."""

    name: str
    dtype: InputDtype = "float32"
    shape: tuple[int | str, ...]
    fill: Literal["normal", "randint", "ones", "zeros", "constant"]
    low: float | None = None
    high: float | None = None
    value: float | None = None

    def resolved_shape(self, batch_size: int, axes: dict[str, int]) -> list[int]:
        return [d if isinstance(d, int) else batch_size if d == BATCH_AXIS else axes[d] for d in self.shape]

    def fed_dtype(self, trial_dtype: str) -> str:
        """The dtype this input is fed in: floating inputs follow the trial's dtype."""
        if self.dtype in FLOAT_INPUT_DTYPES:
            return {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}[trial_dtype]
        return self.dtype


class ModelSpec(StrictModel):
    """A model as a trial carries it: ``kind`` torchvision, onnx or python; ``ref`` the torchvision
    name, the ONNX file's path or ``package.module:factory``; ``input_shape`` the per-sample shape.

    ``kind`` hf-causal: a decoder with its LM head for generation trials (``workers.generation.models``:
    gpt2, llama, qwen2, mistral or a ``save_pretrained`` folder of one), with ``overrides``.

    ``kind`` hf: ``ref`` is an architecture name of ``workers.models.hf.ARCHS`` or a local model folder,
    built with ``overrides`` applied to its config.

    A model with several (or non-float, or named-axis) inputs lists them in ``inputs`` (then
    ``input_shape`` is empty); ``axes`` holds the values the plan fixes for this model's axes, and
    ``pass_inputs`` says whether a ``python:`` model's forward takes them by name or by position."""

    kind: Literal["torchvision", "onnx", "python", "hf", "hf-causal"]
    ref: str
    name: str
    input_shape: tuple[Annotated[int, Field(ge=1, le=MAX_DIM)], ...] = ()
    #: the one-input form's input: the ONNX file's own name for it (other models' input has none)
    input_name: str = "input"
    inputs: tuple[InputSpec, ...] = ()
    axes: dict[str, int] = Field(default_factory=dict)
    pass_inputs: Literal["kwargs", "positional"] = "kwargs"
    #: ``hf:`` models: config values that replace the architecture's defaults (``num_hidden_layers: 2``)
    overrides: dict[str, bool | int | float | str] = Field(default_factory=dict)

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        """The fields of the inputs form only where set: a one-input model dumps as it always has."""
        out = handler(self)
        for k, default in (("inputs", ()), ("axes", {}), ("pass_inputs", "kwargs"), ("overrides", {}),
                           ("input_name", "input")):
            if getattr(self, k) == default:
                out.pop(k, None)
        return out

    def axis_names(self) -> list[str]:
        """The named axes the inputs use, besides ``batch``, in order of first use."""
        names = [d for i in self.inputs for d in i.shape if isinstance(d, str) and d != BATCH_AXIS]
        return list(dict.fromkeys(names))

    def _inputs_ident(self) -> list[Any]:
        return [i.model_dump(mode="json", exclude_none=True) for i in self.inputs]

    @property
    def key(self) -> str:
        """A stable key (the worker's model cache key and part of the export cache key)."""
        ident: dict[str, JsonValue] = {"kind": self.kind, "ref": self.ref, "input_shape": list(self.input_shape)}
        if self.inputs:  # only models of the inputs form: every other key stays what it was
            ident.update(inputs=self._inputs_ident(), pass_inputs=self.pass_inputs)
        if self.overrides:
            ident["overrides"] = self.overrides
        return json.dumps(ident, sort_keys=True)


class BudgetLimits(TypedDict, total=False):
    """One budget a trial is held to: where the plan set it (``budgets[0]``,
    ``matrix.backends[1].budgets``) and its limits (those the plan gave)."""

    where: str
    max_latency_ms: float
    max_p99_ms: float
    min_throughput: float


@dataclass(frozen=True)
class Trial:
    """One measurement to make: a model, a backend configuration and one point of the matrix.

    Built by ``orchestrator.plan.expand`` (which fills ``trial_id``), sent to a worker as it is.
    """

    plan: str
    model: ModelSpec
    backend: str
    label: str
    options: dict[str, JsonValue]  # the backend's options, resolved with their defaults
    batch_size: int
    dtype: str
    io: str
    device: str  # the plan's device setting: cuda, cpu or auto
    measure: MeasureSpec = field(default_factory=MeasureSpec)
    parity: ParitySpec = field(default_factory=ParitySpec)
    seed: int = 0
    accelerator_type: str | None = None
    #: the values of the model's named axes in this trial (``{"seq": 128}``); empty for models without
    axes: dict[str, int] = field(default_factory=dict)
    #: the load scenario and its parameters (``workers.scenarios``; docs/measuring.md#load-scenarios).
    #: At their defaults (the default scenario) they stay out of the id, so existing trials keep theirs.
    scenario: str = scenarios.DEFAULT
    concurrency: int = 1  # requests in flight at most (offline, server, find-peak)
    rate: float | None = None  # server: the target arrival rate, requests/s
    arrival: str = "poisson"  # server, find-peak: poisson | constant inter-arrival times
    latency_bound_ms: float | None = None  # server (optional), find-peak (required): the p99 bound
    #: generation trials under server (optional) and find-peak: the bound on the p99 time per output token
    #: (their latency_bound_ms bounds the p99 time to first token)
    tpot_bound_ms: float | None = None
    min_duration_s: float = 2.0  # offline, server: a run lasts at least this long...
    min_requests: int = 200  # ...and completes at least this many requests
    confident: bool = False  # find-peak: judge each probe on the p99's upper confidence bound
    #: generation trials (``hf-causal`` models, the generate scenario): the prompt's tokens and the
    #: tokens generated after it; 0 for every other trial (out of the id, like the scenario's fields)
    prompt_len: int = 0
    new_tokens: int = 0
    #: fp32 trials: tf32 | strict (``workers.measure.mathmode``); in the id as ``math_id`` says
    math: str = "tf32"
    #: interleaved trials (``measure.interleave``): the arm's name in its unit, its label or its model's
    #: name (in the id where set, so two arms of one configuration, an A/A pair, are two trials)
    arm: str = ""
    #: a known slowdown injected into each step, a fraction of the step (``workers.measure.slowdown``)
    slowdown: float = 0.0
    # How to survive faults, and what to hold the results to: not part of the id.
    timeout_s: float | None = None
    retries: int = 0
    budgets: tuple[BudgetLimits, ...] = ()
    #: record a profile of PROFILE_ITERS more iterations after the timed ones (not part of the id:
    #: the measurement is the same with or without it)
    profile: bool = False
    trial_id: str = ""
    #: the other trials of an interleaved unit, carried by its first trial to the one worker that
    #: measures them all (``orchestrator.plan.interleave.units``; not part of the id)
    arms: tuple[Trial, ...] = ()

    def with_id(self, math_before: MathBefore, model_digest: Callable[[ModelSpec], str] | None = None) -> Trial:
        """This trial with its ``trial_id`` filled in (see :func:`trial_id`)."""
        from dataclasses import replace

        return replace(self, trial_id=trial_id(self, math_before, model_digest))

    def summary(self) -> dict[str, JsonValue]:
        """The trial as JSON-ready data (dry runs, scripts)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out.update(model=self.model.model_dump(mode="json"), measure=self.measure.model_dump(mode="json"),
                   parity=self.parity.model_dump(mode="json"), budgets=list(self.budgets),
                   arms=[a.trial_id for a in self.arms])
        return out


ID_LEN = 16
#: The fields every trial id has hashed since the first schema, always included (ids stay stable).
_ID_FIELDS = ("backend", "options", "batch_size", "dtype", "io", "device", "measure", "seed")
#: Fields added to ``Trial`` since then, with their defaults. A field at its default stays out of the
#: hash, so every existing run keeps its ids (``compare`` and ``--resume`` keep matching) and only
#: trials that use the new field get new ids. Add a new trial field here when you add it to Trial.
ID_FIELDS_ADDED: dict[str, JsonValue] = {"axes": {}, "scenario": scenarios.DEFAULT, "concurrency": 1, "rate": None,
                                   "arrival": "poisson", "latency_bound_ms": None, "min_duration_s": 2.0,
                                   "min_requests": 200, "confident": False,
                                   "prompt_len": 0, "new_tokens": 0, "tpot_bound_ms": None, "arm": "",
                                   "slowdown": 0.0}
ARRIVALS = ("poisson", "constant")
#: Backend options added after the first schema, with their defaults: at their default they stay out
#: of the hash (the ``options`` column still lists them), so adding an option keeps every id.
OPTIONS_ADDED: dict[str, JsonValue] = {"dynamic_shapes": False, "repeat_discount": 1.0, "build_s": 0.0}
#: Likewise for keys added to ``measure`` after the first schema (all of today's are always hashed).
_MEASURE_KEYS_V1 = frozenset({"warmup_iters", "warmup_window", "warmup_rel_tol", "warmup_max_iters", "warmup_max_s",
                              "iters", "min_time_s", "target_rel_ci", "max_time_s", "max_iters", "repeats"})


#: Keys added to ``measure.interleave`` since it came, with their defaults (kept out of the id there).
_INTERLEAVE_KEYS_ADDED: dict[str, JsonValue] = {"builds": 1}


def trial_id(trial: Trial, math_before: MathBefore, model_digest: Callable[[ModelSpec], str] | None = None) -> str:
    """A hash of everything that decides what ``trial`` measures.

    The model counts by kind, reference and input shape; ``model_digest(model)`` replaces the
    reference where the content matters (an ONNX file's bytes). ``math_before(backend)`` is the fp32
    math its backend ran before the ``math`` field existed (``workers.backends.math_before``: the
    backends know it, and they import this module, so the caller passes it in). The plan's name, the label, the
    budgets, ``timeout_s``, ``retries``, ``profile`` and the ``parity`` section are not part of it:
    renaming, re-judging or profiling keeps the ids.
    """
    m = trial.model
    ref = model_digest(m) if model_digest else m.ref
    measure = _measure_ident(trial.measure)
    ident: dict[str, JsonValue] = {"model": [m.kind, ref, list(m.input_shape)]}
    if m.inputs:  # models of the inputs form only: the ids of every other model stay what they were
        ident["inputs"] = [m._inputs_ident(), m.pass_inputs]
    if m.overrides:  # hf: models with overrides only
        ident["overrides"] = m.overrides
    options = {k: v for k, v in trial.options.items() if k not in OPTIONS_ADDED or v != OPTIONS_ADDED[k]}
    ident.update({k: getattr(trial, k) for k in _ID_FIELDS}, measure=measure, options=options)
    for name, default in ID_FIELDS_ADDED.items():
        value = getattr(trial, name)
        if value != default:
            ident[name] = value
    math = math_id(trial, math_before)
    if math is not None:
        ident["math"] = math
    blob = json.dumps(ident, sort_keys=True, separators=(",", ":"), default=_jsonable)
    return hashlib.sha256(blob.encode()).hexdigest()[:ID_LEN]


def math_id(trial: Trial, math_before: MathBefore) -> str | None:
    """What of the trial's math mode its id hashes: nothing for fp16/bf16 trials (their ids never
    changed), nothing for an fp32 trial at the mode its backend ran before the field existed
    (``Runner.math_before``: ORT's CUDA provider and TensorRT use TF32 by default, so their tf32 ids
    stay), else the mode. Torch backends ran neither mode before (IEEE matmuls, TF32 convolutions):
    every torch fp32 trial's id changes."""
    if trial.dtype != "fp32":
        return None
    return None if trial.math == math_before(trial.backend) else trial.math


@functools.lru_cache(maxsize=64)
def _measure_ident(measure: MeasureSpec) -> dict[str, JsonValue]:
    """What of ``measure`` a trial id hashes (read-only: shared by every trial of a plan, computed once)."""
    dump = measure.model_dump(mode="json")
    defaults = type(measure)().model_dump(mode="json")
    if dump.get("interleave"):  # keys added to interleave since it came, at their defaults: out of the id
        dump["interleave"] = {k: v for k, v in dump["interleave"].items()
                              if k not in _INTERLEAVE_KEYS_ADDED or v != _INTERLEAVE_KEYS_ADDED[k]}
    return {k: v for k, v in dump.items() if k in _MEASURE_KEYS_V1 or v != defaults.get(k)}


def _jsonable(v: Any) -> Any:
    if hasattr(v, "model_dump"):
        return v.model_dump(mode="json")
    if isinstance(v, tuple | set | frozenset):
        return list(v)
    raise TypeError(f"{type(v).__name__} is not JSON data")


#: Iterations a profiled trial runs under the profiler, after its timed ones (and not among them).
PROFILE_ITERS = 5
#: A trace larger than this is not kept (the row's profile_error says its size): it travels in the
#: row through Ray and the driver holds it until it is written.
PROFILE_MAX_BYTES = 64 * 2**20
#: The key under which a worker's row carries files for the run directory ({relative path: bytes});
#: the driver's sink writes them and drops the key before the row is stored.
FILES_KEY = "_files"
#: The key under which an interleaved unit's row carries its other trials' rows (``Trial.arms``, in order);
#: the driver's scheduler stores each as a row of its own.
ARMS_KEY = "_arms"
#: The folder of a run directory that holds its profiles.
PROFILES_DIR = "_profiles"


def profile_path(trial: Trial) -> str:
    """Where a trial's profile lands, relative to the run directory: under ``_profiles``, which
    Arrow datasets skip (a leading ``_``), so ``pandas.read_parquet(run_dir)`` reads the rows alone.
    Runs of earlier versions used ``profiles/`` (docs/results.md says how to read those)."""
    return f"{PROFILES_DIR}/{trial.trial_id}.{trial.backend}.json"


