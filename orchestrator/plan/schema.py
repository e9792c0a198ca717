"""Plans: a YAML file read with a safe loader (``PlanLoader``: ``yaml.safe_load``'s, refusing a key
given twice) and validated into typed, frozen objects.

Every error names the file, the key path (``matrix.backends[2].options.io_binding``) and what
was expected. Validation is pure: it reads the plan (and an ONNX file's header) and nothing
else; no device, no network, no environment writes.

A plan, all keys shown::

    name: quickstart
    device: auto                 # cuda | cpu | auto (cuda where the cluster has GPUs)
    accelerator_type: null       # e.g. T4, H100: run only on that GPU model
    cpus_per_worker: null        # CPUs per worker actor (default: an even split of its node)
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
      latency_bound_ms: null     # p99 bound: required for find-peak, optional for server
      min_duration_s: 2          # offline, server: at least this long...
      min_requests: 200          # ...and at least this many requests
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
    parity:
      check: true                # compare each output with torch eager fp32 on the same device
      tolerance: {fp32: 0.05, fp16: 0.1, bf16: 0.25}  # max |y - ref| / max |ref|
    timeout_s: 900               # a trial running longer is killed (worker replaced): status timeout
    retries: 0                   # tries again of a trial whose worker died or that timed out
                                 # (both may also be set on a matrix.backends entry)
    max_trials: 100000           # a plan expanding to more (counted before exclude) is refused

Numbers have ranges a result column can hold and that make sense (batch sizes and dims up to
MAX_DIM, iterations up to MAX_ITERS, no infinities); any other integer is at most 64 bits.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
import reprlib
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BeforeValidator,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    create_model,
    model_validator,
)
from pydantic_core import PydanticCustomError

from orchestrator.errors import PlanError
from workers import scenarios
from workers.config import StrictModel, did_you_mean
from workers.contract import (
    ARRIVALS,
    MAX_DIM,
    Dtype,
    Io,
    MeasureSpec,
    ModelSpec,
    ParitySpec,
    Trial,
)
from workers.models import zoo

#: The most trials a plan may expand to (counted before ``exclude``) unless it sets ``max_trials``:
#: expanding and checking 100,000 takes a few seconds; millions took minutes and gigabytes.
MAX_TRIALS = 100_000
#: The most requests a load scenario keeps in flight, and the most retries of a trial.
MAX_CONCURRENCY = 4096
MAX_RETRIES = 100

EXCLUDE_KEYS = ("model", "backend", "label", "batch_size", "dtype", "io", "axes", "scenario", "concurrency", "rate")


def exclude_value(trial: Trial, key: str) -> Any:
    """What an exclude rule's ``key`` (any of EXCLUDE_KEYS but ``axes``) is compared with in ``trial``."""
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
    """The p99 latency bound, ms: required for find-peak; for server, a row over it is not valid."""
    min_duration_s: float | None = Field(None, gt=0)
    min_requests: int | None = Field(None, ge=1, le=10_000_000)


def _scenario_from_yaml(v: Any) -> Any:
    """``scenario: offline`` is short for ``scenario: {name: offline}``."""
    return {"name": v} if isinstance(v, str | list) else v


ScenarioField = Annotated[ScenarioSettings, BeforeValidator(_scenario_from_yaml)]


class ExcludeRule(Strict):
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

    @model_validator(mode="after")
    def _not_empty(self) -> ExcludeRule:
        if all(getattr(self, k) is None for k in EXCLUDE_KEYS):
            raise ValueError(f"an exclude rule needs at least one of: {', '.join(EXCLUDE_KEYS)}")
        return self

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


class BudgetRule(Budget):
    """A plan-wide budget for the trials matching its keys (all trials when it names none)."""

    model: str | list[str] | None = None
    backend: str | list[str] | None = None
    label: str | list[str] | None = None
    batch_size: int | list[int] | None = None
    dtype: Dtype | list[Dtype] | None = None
    io: Io | list[Io] | None = None
    axes: dict[str, int | list[int]] | None = None
    scenario: ScenarioName | list[ScenarioName] | None = None
    concurrency: int | list[int] | None = None
    rate: float | list[float] | None = None

    matches = ExcludeRule.matches


class BackendEntry(Strict):
    """Common part of a matrix.backends entry; ``options`` is typed per backend (see below)."""

    backend: str
    label: str | None = None
    io: list[Io] | None = None
    timeout_s: float | None = Field(None, gt=0)  # overrides the plan's for this entry's trials
    retries: int | None = Field(None, ge=0, le=MAX_RETRIES)
    budgets: Budget | None = None
    profile: bool = False  # a profile of a few iterations after the timed ones (not part of the trial id)
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
    backends: list[Any] = Field(min_length=1)
    exclude: list[ExcludeRule] = Field(default_factory=list)
    axes: dict[str, list[Annotated[int, Field(ge=1, le=MAX_DIM)]]] = Field(default_factory=dict)
    """Named axes swept like batch sizes: {seq: [128, 384]}; ``seq_lens: [...]`` is short for it."""
    scenarios: Annotated[list[ScenarioName], Field(min_length=1)] | None = None
    """Load scenarios as an axis (the same as the plan's ``scenario.name`` as a list)."""
    concurrency: PosInts | None = None
    rates: PosFloats | None = None


class Plan(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    device: Literal["cuda", "cpu", "auto"] = "auto"
    accelerator_type: str | None = None
    cpus_per_worker: float | None = Field(None, gt=0)
    builders: int | None = Field(None, ge=0, le=1024)
    """Build-ahead tasks per node (orchestrator/run/ahead.py); None: the node's spare CPUs."""
    seed: int = Field(0, ge=0, le=2**32 - 1)
    models: list[Annotated[ModelSpec, BeforeValidator(lambda v, info: _model_from_yaml(v, info))]] = Field(
        min_length=1
    )
    matrix: Matrix
    measure: MeasureSpec = Field(default_factory=MeasureSpec)
    parity: ParitySpec = Field(default_factory=ParitySpec)
    timeout_s: float = Field(900.0, gt=0)
    retries: int = Field(0, ge=0, le=MAX_RETRIES)
    budgets: list[BudgetRule] = Field(default_factory=list)
    scenario: ScenarioField = Field(default_factory=ScenarioSettings)
    max_trials: int = Field(MAX_TRIALS, ge=1, le=100_000_000)
    """A plan expanding to more trials than this (before ``exclude``) is refused before expanding."""


def _parse_backends(raw: Any) -> Any:
    """Expand the ``- torch-eager`` shorthand to ``{backend: torch-eager}``."""
    if isinstance(raw, list):
        return [{"backend": b} if isinstance(b, str) else b for b in raw]
    return raw


def _model_from_yaml(item: Any, info: ValidationInfo) -> Any:
    """Turn the shorthand and mapping forms of a model into ModelSpec fields (or leave for errors)."""
    base_dir = (info.context or {}).get("base_dir", ".")
    if isinstance(item, str):
        if item.startswith(("torchvision:", "python:", "onnx:", "hf:")):
            kind, _, ref = item.partition(":")
            item = {kind: ref}
        elif item.endswith(".onnx"):
            item = {"onnx": item}
        else:
            raise PydanticCustomError(
                "model_form",
                "'{item}' is not a model: expected torchvision:<name>, hf:<architecture>, python:<module>:<factory> "
                "or a .onnx path",
                {"item": item},
            )
    if not isinstance(item, dict):
        return item
    kinds = [k for k in ("torchvision", "onnx", "python", "hf") if k in item]
    if len(kinds) != 1:
        if "kind" in item:
            return item
        raise PydanticCustomError(
            "model_form",
            "a model mapping needs exactly one of the keys torchvision, onnx, python, hf (got: {keys})",
            {"keys": ", ".join(map(str, item)) or "none"},
        )
    kind = kinds[0]
    rest = {k: v for k, v in item.items() if k != kind}
    if "input_name" in rest:  # set from an ONNX file, not by the plan
        raise _err("unknown key 'input_name'; a model mapping takes {kind}, name, input_shape, inputs, axes, "
                   "axes_map, pass_inputs", kind=kind)
    ref = str(item[kind]).strip()
    if kind == "hf":
        return _hf_model(ref, rest, base_dir)
    if "overrides" in rest:
        raise _err("overrides: config values of an hf: model's architecture; a {kind} model has none", kind=kind)
    if _uses_inputs_form(kind, ref, rest, base_dir):
        return _inputs_form_model(kind, ref, rest, base_dir)
    if kind == "torchvision":
        _check_torchvision(ref)
        shape = rest.pop("input_shape", zoo.default_shape(ref))
        name = rest.pop("name", ref)
    elif kind == "python":
        module, sep, attr = ref.partition(":")
        if not sep or not all(p.isidentifier() for p in module.split(".")) or not attr.isidentifier():
            raise PydanticCustomError(
                "model_form", "python model '{ref}' must be written package.module:factory", {"ref": ref}
            )
        if "input_shape" not in rest:
            raise PydanticCustomError("model_form", "python model '{ref}' needs an input_shape", {"ref": ref})
        shape = rest.pop("input_shape")
        name = rest.pop("name", attr)
    else:
        path = Path(ref) if os.path.isabs(ref) else Path(base_dir) / ref
        ref = str(path.resolve())
        file_shape = _onnx_input_shape(path)
        shape = rest.pop("input_shape", file_shape)
        if shape is None:
            raise PydanticCustomError(
                "model_form",
                "the ONNX model {ref} has symbolic input dimensions; declare input_shape",
                {"ref": ref},
            )
        if file_shape is not None and tuple(shape) != tuple(file_shape):
            raise PydanticCustomError(
                "model_form",
                "input_shape {declared} does not match the ONNX model's input {found} in {ref}",
                {"declared": list(shape), "found": list(file_shape), "ref": ref},
            )
        name = rest.pop("name", path.stem)
        rest["input_name"] = _onnx_file_inputs(path)[0][0]  # the inputs column names it as the file does
    return {"kind": kind, "ref": ref, "name": name, "input_shape": shape, **rest}


def _hf_model(ref: str, rest: dict[str, Any], base_dir: str) -> dict[str, Any]:
    """ModelSpec fields of an ``hf:`` model: its inputs from the architecture's table entry
    (``workers.models.hf``), token ids drawn below its vocabulary size; no transformers import."""
    from workers.models import hf

    rest = dict(rest)
    found = hf.arch_of(ref, base_dir)
    if found is None:
        close = difflib.get_close_matches(ref, list(hf.ARCHS), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise _err("hf:{ref} is not a known architecture ({names}) nor a local model folder with a config.json "
                   "of one of their model types{hint}", ref=ref, names=", ".join(hf.ARCHS), hint=hint)
    arch_name, arch, local = found
    if local:
        path = Path(ref) if os.path.isabs(ref) else Path(base_dir) / ref
        ref = str(path.resolve())
    overrides = rest.pop("overrides", {}) or {}
    if not isinstance(overrides, dict) or not all(
            isinstance(v, (int, float, str, bool)) for v in overrides.values()):
        raise _err("hf:{ref}: overrides: a mapping of config key to a number, string or boolean, e.g. "
                   "{{num_hidden_layers: 2}}", ref=ref)
    unknown = [k for k in overrides if k not in arch.overridable]
    if unknown:
        raise _err("hf:{ref}: overrides.{key}: not a config key infer-orch lets a plan change for {arch} "
                   "(it may: {keys})", ref=ref, key=unknown[0], arch=arch_name, keys=", ".join(arch.overridable))
    for k in ("inputs", "input_shape", "axes_map", "pass_inputs"):
        if k in rest:
            raise _err("hf:{ref}: {key}: an hf model's inputs come from its architecture ({names}); set "
                       "sequence lengths with axes: {{seq: N}} or matrix.seq_lens", ref=ref, key=k,
                       names=", ".join(i["name"] for i in arch.inputs))
    axes = _model_axes(rest)
    conf = hf.settings(arch, local, overrides)
    if "image" in conf:
        axes = {"image": conf["image"], **axes}
    inputs = []
    for i in arch.inputs:
        entry = {**i, "shape": tuple(i["shape"]), "low": None, "high": None, "value": None}
        if i["fill"] == "randint":
            entry.update(low=0, high=conf["vocab_size"])
        inputs.append(entry)
    name = rest.pop("name", Path(ref).name if local else ref)
    return {"kind": "hf", "ref": ref, "name": name, "inputs": inputs, "axes": axes, "overrides": overrides, **rest}


def _check_hf_axes(plan: Plan, source: str) -> None:
    """An ``hf:`` text model takes sequences no longer than its position table."""
    from workers.models import hf

    for i, m in enumerate(plan.models):
        if m.kind != "hf":
            continue
        found = hf.arch_of(m.ref)
        if found is None:
            continue
        arch_name, arch, local = found
        longest = hf.settings(arch, local, m.overrides).get("max_seq")
        seqs = [m.axes["seq"]] if "seq" in m.axes else list(plan.matrix.axes.get("seq", []))
        too_long = [s for s in seqs if longest is not None and s > longest]
        if too_long:
            raise PlanError(f"{source}: models[{i}]: hf:{m.ref} takes sequences of at most {longest} tokens "
                            f"({arch.max_seq_key}); seq {too_long[0]} is longer")


def _check_torchvision(ref: str) -> None:
    if ref in zoo.NAMES:  # the table: the driver imports no torchvision for a name it knows
        return
    known = zoo.torchvision_names()  # another torchvision version may know it (that costs one import)
    if ref not in known:
        close = difflib.get_close_matches(ref, known, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise PydanticCustomError(
            "model_name", "unknown torchvision model '{ref}'{hint}", {"ref": ref, "hint": hint}
        )


def _onnx_input_shape(path: Path) -> tuple[int, ...] | None:
    """The per-sample input shape stored in an ONNX file, or None when it is symbolic."""
    if not path.is_file():
        raise PydanticCustomError("model_file", "ONNX file not found: {path}", {"path": str(path)})
    inputs = _onnx_file_inputs(path)
    if len(inputs) != 1:
        raise PydanticCustomError(
            "model_file", "{path} has {n} inputs; infer-orch feeds models with one",
            {"path": str(path), "n": len(inputs)},
        )
    dims = inputs[0][2][1:]
    if any(not isinstance(d, int) for d in dims):
        return None
    return tuple(dims)


def _onnx_file_inputs(path: Path) -> tuple[tuple[str, int, tuple[int | str | None, ...]], ...]:
    """(name, ONNX element type, dims) of each input the file takes (initializers left out), after
    the file checks; a dim is an int, its symbolic name, or None. Read once per file and version of
    it: deciding a model's form and then reading its shape would otherwise parse the file twice."""
    stat = path.stat()
    return _read_onnx_inputs(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=32)
def _read_onnx_inputs(path: str, mtime_ns: int, size: int) -> tuple[tuple[str, int, tuple[int | str | None, ...]], ...]:
    import onnx

    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and friends
        raise PydanticCustomError(
            "model_file", "{path} is not a readable ONNX model ({exc})", {"path": path, "exc": str(exc)}
        ) from None
    _check_onnx_file(model, Path(path))
    inits = {i.name for i in model.graph.initializer}
    return tuple((i.name, i.type.tensor_type.elem_type,
                  tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                        for d in i.type.tensor_type.shape.dim))
                 for i in model.graph.input if i.name not in inits)


def _check_onnx_file(model: Any, path: Path) -> None:
    """External data inside the model's folder; the IR version kept for the runtime check."""
    from orchestrator.plan.onnxfile import check_loaded

    check_loaded(model, path)


# --- Models with several named inputs (the ``inputs`` form) and named axes -------------------------

INPUTS_FORM_KEYS = ("inputs", "axes", "axes_map", "pass_inputs")
#: ONNX element types infer-orch can feed, as the plan's dtype names.
ONNX_DTYPES = {1: "float32", 10: "float16", 16: "bfloat16", 7: "int64", 6: "int32", 9: "bool"}
_FLOATS = ("float32", "float16", "bfloat16")
UNNAMED = "?"


class PlanInput(Strict):
    """One entry of a model's ``inputs`` as the plan writes it (an ONNX file's supplies the rest)."""

    name: str
    dtype: Literal["float32", "float16", "bfloat16", "int64", "int32", "bool"] | None = None
    shape: list[int | str] | None = None
    fill: Literal["normal", "randint", "ones", "zeros", "constant"] | None = None
    low: float | None = None
    high: float | None = None
    value: float | None = None


def _err(msg: str, **ctx: Any) -> PydanticCustomError:
    """A model's error; ``msg`` a ``str.format`` template (``{{`` for a brace: pydantic's own
    templates keep it doubled), formatted here."""
    return PydanticCustomError("model_form", msg.format(**ctx))


def _uses_inputs_form(kind: str, ref: str, rest: dict[str, Any], base_dir: str) -> bool:
    """The inputs form: asked for by its keys, or an ONNX file the one-input form can't feed
    (several inputs, or one that is not floating point)."""
    if any(k in rest for k in INPUTS_FORM_KEYS):
        return True
    if kind != "onnx" or "input_shape" in rest:
        return False
    path = Path(ref) if os.path.isabs(ref) else Path(base_dir) / ref
    if not path.is_file():
        return False  # the one-input path says it is missing
    found = _onnx_graph_inputs(path)
    return len(found) != 1 or found[0][1] not in ("float32", "float16")


def _onnx_graph_inputs(path: Path) -> list[tuple[str, str, list[int | str | None]]]:
    """(name, dtype, dims) of each input an ONNX file takes (initializers left out); a dim is an
    int, its symbolic name, or None when it has neither."""
    out = []
    for name, elem_type, dims in _onnx_file_inputs(path):
        dtype = ONNX_DTYPES.get(elem_type)
        if dtype is None:
            import onnx

            raise _err("input '{name}' of {path} has ONNX element type {t}; infer-orch feeds "
                       "float32, float16, bfloat16, int64, int32 and bool",
                       name=name, path=str(path), t=onnx.TensorProto.DataType.Name(elem_type))
        out.append((name, dtype, list(dims)))
    return out


def _default_fill(name: str, dtype: str) -> str:
    """Attention masks are ones (a random 0/1 mask can blank whole rows and give NaN); floats are
    normal; integers are random in [low, high); booleans are ones."""
    if "mask" in name.lower() or dtype == "bool":
        return "ones"
    return "normal" if dtype in _FLOATS else "randint"


def _input_entry(where: str, raw: PlanInput, dtype: str, shape: list[int | str]) -> dict[str, Any]:
    """An ``InputSpec``'s fields for one input, its fill checked against its dtype."""
    fill = raw.fill or _default_fill(raw.name, dtype)
    low, high = raw.low, raw.high
    if fill == "normal" and dtype not in _FLOATS:
        raise _err("{where}: fill normal is for floating-point inputs; this one is {dtype} (use randint, ones, "
                   "zeros or constant)", where=where, dtype=dtype)
    if fill == "randint":
        if dtype in _FLOATS:
            raise _err("{where}: fill randint is for integer inputs; this one is {dtype}", where=where, dtype=dtype)
        if dtype == "bool":
            low, high = (0 if low is None else low), (2 if high is None else high)
        if high is None:
            raise _err("{where}: an integer input filled with randint needs high (values are drawn from "
                       "[low, high), low default 0): for token ids, the vocabulary size", where=where)
        low = 0 if low is None else low
        if low >= high:
            raise _err("{where}: empty integer bounds: low {low} >= high {high} (values are drawn from "
                       "[low, high))", where=where, low=f"{low:g}", high=f"{high:g}")
    if fill == "constant" and raw.value is None:
        raise _err("{where}: fill constant needs value", where=where)
    for d in shape:
        if isinstance(d, int) and not 1 <= d <= MAX_DIM or isinstance(d, str) and not d.isidentifier():
            raise _err("{where}: shape {shape}: each dim is an int from 1 to {most} or an axis name", where=where,
                       shape=list(shape), most=MAX_DIM)
    return {"name": raw.name, "dtype": dtype, "shape": tuple(shape), "fill": fill, "low": low, "high": high,
            "value": raw.value}


def _plan_inputs(raw: Any) -> list[PlanInput]:
    if not isinstance(raw, list) or not raw:
        raise _err("inputs: a list of inputs, each {{name, dtype, shape, fill}}")
    out = []
    for i, item in enumerate(raw):
        try:
            out.append(PlanInput.model_validate(item))
        except ValidationError as exc:
            e = exc.errors()[0]
            loc = "".join(f".{p}" for p in e["loc"])
            raise _err("inputs[{i}]{loc}: {msg}", i=i, loc=loc, msg=_describe(e)) from None
    names = [p.name for p in out]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise _err("inputs: '{name}' is listed twice", name=dup)
    return out


def _model_axes(rest: dict[str, Any]) -> dict[str, int]:
    """A model's own ``axes`` (taken out of ``rest``): fixed values of its named axes, checked."""
    axes = rest.pop("axes", {}) or {}
    if not isinstance(axes, dict) or not all(isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
                                             and 1 <= v <= MAX_DIM for k, v in axes.items()):
        raise _err("axes: a mapping of axis name to an int from 1 to {most}, e.g. {{seq: 128}} (to sweep values, "
                   "use matrix.axes)", most=MAX_DIM)
    if "batch" in axes:
        raise _err("axes: batch is the batch axis: its values are matrix.batch_sizes")
    return axes


def _inputs_form_model(kind: str, ref: str, rest: dict[str, Any], base_dir: str) -> dict[str, Any]:
    """ModelSpec fields for a model of the inputs form (a ``python:`` factory or an ONNX file)."""
    rest = dict(rest)
    if kind == "torchvision":
        raise _err("torchvision models take one image input: {keys} are for python: and onnx: models",
                   keys=", ".join(k for k in INPUTS_FORM_KEYS if k in rest))
    if "input_shape" in rest and "inputs" in rest:
        raise _err("give either input_shape (one float input) or inputs, not both")
    axes = _model_axes(rest)
    axes_map = rest.pop("axes_map", {}) or {}
    if not isinstance(axes_map, dict) or not all(isinstance(v, str) for v in axes_map.values()):
        raise _err("axes_map: a mapping of the ONNX file's dim name to a plan axis, e.g. {{sequence: seq}}")
    if axes_map and kind != "onnx":
        raise _err("axes_map renames an ONNX file's dims; a python model names its axes in inputs")
    pass_inputs = rest.pop("pass_inputs", "kwargs")
    if pass_inputs not in ("kwargs", "positional"):
        raise _err("pass_inputs: kwargs (forward(name=tensor, ...)) or positional (forward(t0, t1, ...)), "
                   "got {got}", got=str(pass_inputs))
    if pass_inputs != "kwargs" and kind != "python":
        raise _err("pass_inputs is for python models; an ONNX file's inputs are fed by name")
    raw = _plan_inputs(rest.pop("inputs")) if "inputs" in rest else None
    if kind == "python":
        if raw is None:
            raise _err("python model '{ref}': {keys} need inputs (a list of {{name, dtype, shape}})", ref=ref,
                       keys=", ".join(k for k in INPUTS_FORM_KEYS if k in {"axes": axes, "pass_inputs": 1}) or "axes")
        inputs = []
        for i, p in enumerate(raw):
            if p.shape is None:
                raise _err("inputs[{i}] ({name}): a python model's input needs a shape, e.g. [batch, seq]",
                           i=i, name=p.name)
            inputs.append(_input_entry(f"inputs[{i}] ({p.name})", p, p.dtype or "float32", p.shape))
        name = rest.pop("name", ref.partition(":")[2])
    else:
        path = Path(ref) if os.path.isabs(ref) else Path(base_dir) / ref
        if not path.is_file():
            raise _err("ONNX file not found: {path}", path=str(path))
        ref = str(path.resolve())
        inputs = _onnx_inputs(ref, _onnx_graph_inputs(path), raw or [], axes_map)
        name = rest.pop("name", path.stem)
    if "input_shape" in rest:
        raise _err("input_shape is the one-input form; with inputs, each input has its shape")
    return {"kind": kind, "ref": ref, "name": name, "inputs": inputs, "axes": axes, "pass_inputs": pass_inputs,
            **rest}


def _onnx_inputs(ref: str, found: list[tuple[str, str, list[int | str | None]]], raw: list[PlanInput],
                 axes_map: dict[str, str]) -> list[dict[str, Any]]:
    """The file's inputs with the plan's declarations applied: dims named by the file become plan axes
    (a leading dim every input shares is ``batch``; ``axes_map`` renames the others)."""
    names = [n for n, _, _ in found]
    by_name = {p.name: p for p in raw}
    for i, p in enumerate(raw):
        if p.name not in names:
            raise _err("inputs[{i}]: the ONNX model {ref} has no input '{name}'{hint}; its inputs: {names}",
                       i=i, ref=ref, name=p.name, hint=did_you_mean(p.name, names), names=", ".join(names))
    leads = {dims[0] if dims else None for _, _, dims in found}
    batch_dim = next(iter(leads)) if len(leads) == 1 and isinstance(next(iter(leads)), str) else None
    out = []
    for name, dtype, dims in found:
        p = by_name.get(name, PlanInput(name=name))
        where = f"input '{name}'"
        if p.dtype is not None and p.dtype != dtype:
            raise _err("inputs[{i}] ({name}): dtype {plan} contradicts the ONNX model, whose input is {file}",
                       i=raw.index(p), name=name, plan=p.dtype, file=dtype)
        shape: list[int | str] = []
        for k, d in enumerate(dims):
            if isinstance(d, int) and d > 0:
                shape.append(d)
            elif d is None or d == 0:
                shape.append(UNNAMED)
            elif d in axes_map:
                shape.append(axes_map[d])
            else:
                shape.append("batch" if k == 0 and d == batch_dim else d)
        if p.shape is not None:
            if len(p.shape) != len(shape):
                raise _err("inputs[{i}] ({name}): shape {plan} has {n} dims; the ONNX model's input has {m}",
                           i=raw.index(p), name=name, plan=list(p.shape), n=len(p.shape), m=len(shape))
            for k, (mine, file) in enumerate(zip(p.shape, shape)):
                if isinstance(file, int) and mine != file:
                    raise _err("inputs[{i}] ({name}): dim {k} is {plan}; the ONNX model fixes it to {file}",
                               i=raw.index(p), name=name, k=k, plan=mine, file=file)
            shape = list(p.shape)
        if UNNAMED in shape:
            k = shape.index(UNNAMED)
            raise _err("{where} of {ref}: dim {k} has no size and no name in the file; declare it: inputs: "
                       "[{{name: {name}, shape: [...]}}] with an int or an axis name there",
                       where=where, ref=ref, k=k, name=name)
        out.append(_input_entry(where, p, dtype, shape))
    return out


def _axes_shorthand(matrix: dict[str, Any], source: str) -> dict[str, Any]:
    """``matrix.<axis>_lens: [...]`` is short for ``matrix.axes: {<axis>: [...]}`` (``seq_lens`` fills ``seq``)."""
    short = [k for k in matrix if isinstance(k, str) and k.endswith("_lens") and len(k) > 5]
    if not short:
        return matrix
    matrix = dict(matrix)
    axes = dict(matrix.get("axes") or {}) if isinstance(matrix.get("axes") or {}, dict) else matrix.get("axes")
    for k in short:
        if isinstance(axes, dict):
            if k[:-5] in axes:
                raise PlanError(f"{source}: matrix.{k}: axis '{k[:-5]}' is also in matrix.axes; give it once")
            axes[k[:-5]] = matrix.pop(k)
    matrix["axes"] = axes
    return matrix


def _check_axes(plan: Plan, source: str, aliases: dict[str, str] | None = None) -> None:
    """Every named axis of every model has a value (the model's axes or the matrix's), and every
    value given names an axis some model has (``aliases``: the axes given by a ``<axis>_lens`` key)."""
    swept = plan.matrix.axes
    if "batch" in swept:
        raise PlanError(f"{source}: matrix.axes.batch: the batch axis's values are matrix.batch_sizes")
    used: set[str] = set()
    for i, m in enumerate(plan.models):
        names = m.axis_names()
        used.update(names)
        for a in m.axes:
            if a not in names:
                raise PlanError(f"{source}: models[{i}].axes.{a}: model '{m.name}' has no axis '{a}' "
                                f"(its axes: {', '.join(['batch', *names])})")
        for inp in m.inputs:
            for k, d in enumerate(inp.shape):
                if isinstance(d, str) and d != "batch" and d not in m.axes and d not in swept:
                    hint = (f"; or map the file's dim to a plan axis with axes_map: {{{d}: <axis>}}"
                            if m.kind == "onnx" else "")
                    raise PlanError(f"{source}: models[{i}]: input '{inp.name}' dim {k} '{d}' has no value: set it "
                                    f"with axes: {{{d}: N}} on the model or sweep it with matrix.axes: "
                                    f"{{{d}: [...]}}{hint}")
    for a in swept:
        if a not in used:
            key = (aliases or {}).get(a, f"axes.{a}")
            raise PlanError(f"{source}: matrix.{key}: no model has an axis named '{a}'"
                            + (f" (their axes: {', '.join(sorted(used))})" if used else ""))


def _axes_match(want: dict[str, Any], got: dict[str, int]) -> bool:
    return all(k in got and got[k] in (v if isinstance(v, list) else [v]) for k, v in want.items())


def format_loc(loc: tuple[Any, ...]) -> str:
    """('matrix', 'backends', 2, 'ort', 'options', 'x') -> 'matrix.backends[2].options.x'."""
    out = ""
    prev: Any = None
    for part in loc:
        in_backends = out.startswith("matrix.backends") and isinstance(prev, int)
        if isinstance(part, int):
            out += f"[{part}]"
        elif in_backends and part in _backend_names():
            pass  # the discriminator's tag: the index already says which entry
        elif str(part).startswith("function-") or _is_union_tag(part):
            pass
        else:
            out += f".{part}" if out else str(part)
        prev = part
    return out or "(top level)"


_UNION_TAG = re.compile(r"^(int|float|str|bool|none|(list|tuple|dict|literal)\[.*\])$")


def _is_union_tag(part: Any) -> bool:
    """Whether a location part names a member of a union (``int`` of ``int | list[int]``), not a key."""
    return isinstance(part, str) and bool(_UNION_TAG.match(part))


_SHORT = reprlib.Repr()  # (keyword arguments only from Python 3.12)
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict = 3, 4, 4
_SHORT.maxstring = _SHORT.maxlong = _SHORT.maxother = 56


def _yaml_repr(value: Any) -> str:
    """A value as the plan would write it: null, true, 'abc', [1, 2] (long or deep ones cut, never
    written out whole: a YAML alias bomb is billions of items)."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    text = _SHORT.repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _backend_names() -> set[str]:
    from workers.backends import registry

    return set(registry())


#: Validator messages reworded where they speak the validator's language (a class name, "after
#: validation", "Field"); the others ("Input should be greater than 0") already say what is accepted.
_REWORDED = {
    "int_parsing": "Input should be a valid integer", "float_parsing": "Input should be a valid number",
    "model_type": "Input should be a valid dictionary", "model_attributes_type": "Input should be a valid dictionary",
    "dataclass_type": "Input should be a valid dictionary",
    "too_short": "Input should have at least {min_length} {items}",
    "too_long": "Input should have at most {max_length} {items}",
    "missing": "this key is required",
}


def _describe(err: dict[str, Any]) -> str:
    msg = err["msg"]
    kind = err["type"]
    ctx = err.get("ctx", {})
    if kind in ("union_tag_invalid",):
        from workers.backends import registry

        tag = ctx.get("tag", "")
        return f"unknown backend '{tag}'{did_you_mean(tag, registry())}; known: {', '.join(sorted(registry()))}"
    if kind == "union_tag_not_found":
        from workers.backends import registry

        return f"an entry needs `backend:`, one of: {', '.join(sorted(registry()))}"
    if kind in _REWORDED:
        n = ctx.get("min_length", ctx.get("max_length"))
        msg = _REWORDED[kind].format(**{**ctx, "items": "item" if n == 1 else "items"})
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if kind not in ("unknown_key", "model_form", "model_name", "model_file", "missing", "value_error"):
        msg += f" (got {_yaml_repr(err.get('input'))})"
    return msg


def parse_plan(data: Any, source: str = "<plan>", base_dir: str = ".") -> Plan:
    """Validate an already-loaded YAML document into a Plan, or raise PlanError."""
    if not isinstance(data, dict):
        raise PlanError(
            f"{source}: a plan must be a mapping of keys (name, models, matrix, ...), got {type(data).__name__}"
        )
    raw, data = data, dict(data)
    aliases: dict[str, str] = {}
    if isinstance(data.get("matrix"), dict):
        matrix = dict(data["matrix"])
        matrix["backends"] = _parse_backends(matrix.get("backends"))
        _check_backend_forms(matrix["backends"], source)
        aliases = {k[:-5]: k for k in matrix if isinstance(k, str) and k.endswith("_lens") and len(k) > 5}
        data["matrix"] = _axes_shorthand(matrix, source)
    try:
        plan = Plan.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise PlanError(_format_errors(source, exc, prefix=(), aliases=aliases)) from None
    try:
        entries = TypeAdapter(list[backend_entry_type()]).validate_python(plan.matrix.backends)
    except ValidationError as exc:
        raise PlanError(_format_errors(source, exc, prefix=("matrix", "backends"))) from None
    _check_int64(raw, source)
    _check_repeats(plan, entries, aliases, source)
    labels = [e.label or e.backend for e in entries]
    for i, label in enumerate(labels):
        if label in labels[:i]:
            raise PlanError(
                f"{source}: matrix.backends[{i}]: label '{label}' is already used by "
                f"matrix.backends[{labels.index(label)}]; give each entry of one backend its own `label`"
            )
    _check_timeouts(plan, entries, source)
    _check_axes(plan, source, aliases)
    _check_hf_axes(plan, source)
    names = {n for i, e in enumerate(entries) for n in scenario_settings(plan, e, i, source)["name"]}
    plan_rates = "matrix.rates" if plan.matrix.rates else "scenario.rates" if plan.scenario.rates else None
    if plan_rates and not names & set(scenarios.using("rate")):
        raise PlanError(f"{source}: {plan_rates}: rates are for the {' and '.join(scenarios.using('rate'))} scenario, "
                        "which no trial of this plan runs")
    matrix = plan.matrix.model_copy(update={"backends": entries})
    return plan.model_copy(update={"matrix": matrix})


def _check_backend_forms(backends: Any, source: str) -> None:
    """Each matrix.backends entry is a backend's name or a mapping (its other errors come later)."""
    for i, b in enumerate(backends if isinstance(backends, list) else []):
        if not isinstance(b, dict):
            raise PlanError(f"{source}: matrix.backends[{i}]: expected a backend name or a mapping "
                            f"{{backend: NAME, ...}} (got {_yaml_repr(b)})")


#: A plan's integers are stored as int64 (and passed to libraries that take C longs).
INT64 = (-(2**63), 2**63 - 1)


def _check_int64(data: Any, source: str) -> None:
    """Every integer anywhere in the plan fits in 64 bits (the keys with a range of their own are
    checked by it; this catches the rest: exclude and budget values, hf overrides). Each list or
    mapping is looked at once, however many YAML aliases share it (an alias bomb stays small)."""
    stack: list[tuple[Any, tuple[Any, ...]]] = [(data, ())]
    seen: set[int] = set()
    while stack:
        value, loc = stack.pop()
        if isinstance(value, dict | list):
            if id(value) not in seen:
                seen.add(id(value))
                items = value.items() if isinstance(value, dict) else enumerate(value)
                stack += [(v, (*loc, k)) for k, v in items]
        elif isinstance(value, int) and not INT64[0] <= value <= INT64[1]:
            raise PlanError(f"{source}: {format_loc(loc)}: {value} is out of range: a plan's integers are "
                            f"64-bit (from {INT64[0]} to {INT64[1]})")


def _check_repeats(plan: Plan, entries: list[Any], aliases: dict[str, str], source: str) -> None:
    """A value given twice in an axis (or a model listed twice) would measure the same trials twice."""
    m = plan.matrix
    axes: list[tuple[str, list[Any] | None]] = [
        ("matrix.batch_sizes", m.batch_sizes), ("matrix.dtypes", m.dtypes), ("matrix.io", m.io),
        ("matrix.scenarios", m.scenarios), ("matrix.concurrency", m.concurrency), ("matrix.rates", m.rates),
        *((f"matrix.{aliases[a]}" if a in aliases else f"matrix.axes.{a}", v) for a, v in m.axes.items()),
        *_list_settings("scenario", plan.scenario),
    ]
    for i, e in enumerate(entries):
        axes += [(f"matrix.backends[{i}].io", e.io), *_list_settings(f"matrix.backends[{i}].scenario", e.scenario)]
    keys = [mod.key + mod.name for mod in plan.models]
    for where, values in [*axes, ("models", keys)]:
        seen: dict[Any, int] = {}
        for k, v in enumerate(values or []):
            first = seen.setdefault(v, k)
            if first != k:
                what = f"model '{plan.models[k].name}'" if where == "models" else _yaml_repr(v)
                raise PlanError(f"{source}: {where}[{k}]: {what} is listed twice (also at {where}[{first}]); "
                                "give each value once")


def _check_timeouts(plan: Plan, entries: list[Any], source: str) -> None:
    """A trial's timeout must leave room for its timing loop, or every trial would time out."""
    limit = plan.measure.max_time_s
    where = [("timeout_s", plan.timeout_s)]
    where += [(f"matrix.backends[{i}].timeout_s", e.timeout_s) for i, e in enumerate(entries) if e.timeout_s]
    for key, value in where:
        if value <= limit:
            raise PlanError(f"{source}: {key}: {value:g} s leaves no time to measure: it must be larger "
                            f"than measure.max_time_s ({limit:g} s), plus setup time")


#: Matrix axes of the scenario, by the ScenarioSettings key they set.
MATRIX_SCENARIO_AXES = {"name": "scenarios", "concurrency": "concurrency", "rates": "rates"}


def scenario_settings(plan: Plan, entry: Any, i: int, source: str) -> scenarios.Settings:
    """The scenario settings of matrix.backends[i]: the plan's ``scenario``, the matrix's scenario
    axes, then the entry's own ``scenario`` (key by key); each value a list (an axis), or None.
    Raises PlanError where a scenario lacks what it needs or a setting is given twice."""
    merged: scenarios.Settings = {k: getattr(plan.scenario, k) for k in ScenarioSettings.model_fields}  # type: ignore[misc]
    for key, axis in MATRIX_SCENARIO_AXES.items():
        value = getattr(plan.matrix, axis)
        if value is None:
            continue
        if key in plan.scenario.model_fields_set and getattr(plan.scenario, key) is not None:
            raise PlanError(f"{source}: matrix.{axis}: also set as scenario.{key}; give it once")
        merged[key] = value
    own = entry.scenario
    if own is not None:
        merged.update({k: getattr(own, k) for k in own.model_fields_set if getattr(own, k) is not None})
    where = f"matrix.backends[{i}]" + (".scenario" if own is not None else " (with the plan's scenario)")
    names = merged["name"] or [scenarios.DEFAULT]
    settings = {**merged, "name": names}
    if own is not None and own.rates and not set(names) & set(scenarios.using("rate")):
        raise PlanError(f"{source}: {where}: rates are for the {' and '.join(scenarios.using('rate'))} scenario; "
                        f"this entry's scenarios are {', '.join(names)}")
    minimums = {"min_requests": merged["min_requests"] or Trial.min_requests,
                "min_duration_s": merged["min_duration_s"] or Trial.min_duration_s}
    for name in sorted(set(names), key=scenarios.names().index):  # each scenario checks its own settings
        problem = scenarios.get(name).check({**settings, **minimums}, plan.measure.max_time_s)  # type: ignore[arg-type]
        if problem:
            raise PlanError(f"{source}: {where}: {problem}")
    return settings  # type: ignore[return-value]



def _list_settings(where: str, settings: Any) -> list[tuple[str, list[Any]]]:
    """(key, values) of each setting given as a list (an axis) in a ``scenario:`` section."""
    if settings is None:
        return []
    return [(f"{where}.{k}", v) for k in type(settings).model_fields if isinstance(v := getattr(settings, k), list)]


def _format_errors(source: str, exc: ValidationError, prefix: tuple[Any, ...],
                   aliases: dict[str, str] | None = None) -> str:
    """One line per error, located as the plan wrote it: union members (``int | list[int]``) give one
    line for the member the value was meant for; ``aliases`` maps a named axis to its shorthand key."""
    lines = []
    for err, extra in _union_errors(exc.errors()):
        loc = prefix + tuple(err["loc"])
        if loc[:2] == ("matrix", "axes") and len(loc) > 2 and loc[2] in (aliases or {}):
            loc = ("matrix", (aliases or {})[loc[2]], *loc[3:])
        message = _describe(err).replace(" (got", f"{extra} (got", 1) if extra else _describe(err)
        lines.append(f"{source}: {format_loc(loc)}: {message}")
    return "\n".join(dict.fromkeys(lines))


def _union_errors(errors: list[Any]) -> list[tuple[Any, str]]:
    """The errors of a value of ``X | list[X]``, reduced to the member it was meant for: the list
    member's where the value is a list, else the scalar's (saying "or a list of them"); each with
    that extra wording ("" for errors not in such a union)."""
    groups: dict[tuple[Any, ...], list[tuple[str, Any]]] = {}
    out: list[tuple[Any, str]] = []
    for err in errors:
        k = next((i for i, part in enumerate(err["loc"]) if _is_union_tag(part)), None)
        if k is None:
            out.append((err, ""))
            continue
        groups.setdefault(tuple(err["loc"][:k]), []).append((str(err["loc"][k]), err))
    for point, members in groups.items():
        lists = [e for tag, e in members if tag.startswith("list[")]
        scalars = [e for tag, e in members if not tag.startswith("list[")]
        in_list = [e for e in lists if not (e["type"] == "list_type" and len(e["loc"]) == len(point) + 1)]
        if in_list or not scalars:
            out += [(e, "") for e in in_list or lists]
        else:
            out += [(e, " or a list of them" if lists else "") for e in _merged(scalars)]
    return out


def _merged(errors: list[Any]) -> list[Any]:
    """The scalar members' errors at one place as one: ``bool | int | str`` given a list says
    "Input should be a valid boolean, integer or string", not three lines."""
    here = [e for e in errors if len(e["loc"]) == len(errors[0]["loc"])]
    if len(here) < 2:
        return errors
    wants = [_describe(e).partition(" (got")[0].removeprefix("Input should be ").removeprefix("a valid ")
             for e in here]
    what = ", ".join(wants[:-1]) + " or " + wants[-1]
    prefix = "a valid " if all(_describe(e).startswith("Input should be a valid ") for e in here) else ""
    merged = {**here[0], "type": "union_members", "msg": f"Input should be {prefix}{what}", "ctx": {}}
    return [merged, *(e for e in errors if e not in here)]


class DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, line: int, first: int) -> None:
        super().__init__(f"{line}: duplicate key {key!r} (first at line {first}); give each key once")


class PlanLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """``yaml.safe_load``'s loader (libyaml's parser where installed: 4x faster on large plans)
    that refuses a key given twice in one mapping, at any depth: YAML keeps the last silently."""

    def flatten_mapping(self, node: Any) -> None:
        # called on every mapping before its construction and before merge keys (<<) change it
        if id(node) not in self._checked:
            self._checked.add(id(node))
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = self.construct_object(key_node)  # a scalar: hashable
                line = key_node.start_mark.line + 1
                if key in seen:
                    raise DuplicateKey(key, line, seen[key])
                seen[key] = line
        super().flatten_mapping(node)

    @property
    def _checked(self) -> set[int]:
        if not hasattr(self, "_checked_ids"):
            self._checked_ids: set[int] = set()
        return self._checked_ids


def load_plan(path: str | os.PathLike[str]) -> Plan:
    """Read and validate a plan file. Raises PlanError with a located message."""
    p = Path(path)
    if not p.is_file():
        raise PlanError(f"{p}: plan file not found" if not p.exists() else f"{p}: not a file")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanError(f"{p}: can't read the plan: {exc}") from None
    try:
        data = yaml.load(text, Loader=PlanLoader)  # noqa: S506 (a safe loader: PlanLoader is yaml's SafeLoader)
    except DuplicateKey as exc:
        raise PlanError(f"{p}:{exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise PlanError(f"{p}{where}: YAML syntax error: {problem}") from None
    if data is None:
        raise PlanError(f"{p}: the plan is empty")
    return parse_plan(data, source=str(p), base_dir=str(p.parent))
