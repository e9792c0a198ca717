"""One generation runner interface, the clocks that time it, and what a generation records.

A request is a generation: a prompt of ``prompt_len`` tokens for each of ``batch`` sequences, then
greedy decoding of exactly ``new_tokens`` tokens with the end-of-sequence token masked (its logit
set to -inf before the argmax on every path; ORT GenAI gets ``min_length = max_length``, which masks
it the same way), so every backend does the same work.

Timing of one generation::

    t0                                        # the queue is empty (synchronized before)
    prefill(prompt) -> logits; token 1 = argmax(masked logits[:, -1])
    t1                                        # TTFT = t1 - t0 (prefill + first token)
    for i in 2..new_tokens:
        decode(token i-1) -> logits; token i = argmax(masked logits)
        t_i                                   # decode sample i-1 = t_i - t_(i-1)
    synchronize()

On a GPU the marks are CUDA events recorded on the stream the work runs on, so the host never
waits between steps (the next token stays on the device) and a sample is the device time between
two tokens, idle gaps behind a slow host included. On the CPU, and for libraries that run on their
own stream behind a synchronous call, the marks are the host clock after that call returned.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from workers.backends.base import SkipTrial

__all__ = ["DTYPES", "Generation", "GenerationRunner", "HostMarks", "SkipTrial", "TorchMarks", "summarize"]

#: dtype name -> (torch dtype name, bytes per element)
DTYPES = {"fp32": ("float32", 4), "fp16": ("float16", 2), "bf16": ("bfloat16", 2)}


@dataclass
class Generation:
    """One generation's result: tokens [batch, new_tokens], TTFT, the decode samples (new_tokens - 1),
    and, when asked for, the logits [batch, vocab] of the prefill's last position and of the first
    decode steps (for parity)."""

    tokens: np.ndarray
    ttft_ms: float
    step_ms: list[float]
    logits: list[np.ndarray] = field(default_factory=list)
    clock: str = "cuda-events"
    #: the host clock (``time.perf_counter``) at the first mark: the load scenarios place the tokens in time
    #: from it (the first token at ``t0 + ttft_ms``, each later one a decode step after the one before)
    t0: float | None = None

    @property
    def e2e_ms(self) -> float:
        return self.ttft_ms + float(sum(self.step_ms))

    def token_times(self) -> list[float]:
        """The host clock at each token: the first, then one per decode step (``t0`` must be set)."""
        return (float(self.t0) + np.cumsum([self.ttft_ms, *self.step_ms]) / 1e3).tolist()  # type: ignore[arg-type]


class HostMarks:
    """Marks on the host clock (CPU work, or a synchronous library call that waits for its stream)."""

    clock = "host"

    def __init__(self) -> None:
        self.t: list[float] = []

    @property
    def t0(self) -> float | None:
        return self.t[0] if self.t else None

    def mark(self) -> None:
        self.t.append(time.perf_counter())

    def intervals_ms(self) -> list[float]:
        return [(b - a) * 1e3 for a, b in zip(self.t, self.t[1:])]


class TorchMarks:
    """CUDA events on the current stream; read once at the end (one synchronization per generation)."""

    clock = "cuda-events"

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.t0: float | None = None  # the host clock at the first event's record (the stream is idle then)

    def mark(self) -> None:
        import torch

        e = torch.cuda.Event(enable_timing=True)
        if self.t0 is None:
            self.t0 = time.perf_counter()
        e.record()
        self.events.append(e)

    def intervals_ms(self) -> list[float]:
        self.events[-1].synchronize()
        return [a.elapsed_time(b) for a, b in zip(self.events, self.events[1:])]


def marks_for(device: str) -> HostMarks | TorchMarks:
    return TorchMarks() if str(device).startswith("cuda") else HostMarks()


class GenerationRunner(ABC):
    """One backend's generation loop on one device. ``setup`` builds what it needs for a (batch,
    prompt_len, new_tokens) shape (a session, a static cache, captured graphs), ``generate`` runs one
    generation and times it, ``teardown`` frees what setup took. A configuration the path can't run
    raises ``SkipTrial`` with the library's reason."""

    name: str = ""
    #: replays something captured (a CUDA graph): a second prompt must give other tokens
    replays: bool = False
    #: dtypes the path runs
    dtypes: frozenset[str] = frozenset(DTYPES)
    #: under load (``workers.generation.load``): ``generate`` may run on several threads at once on one
    #: runner (it only reads what setup built), so the lanes share it; False: one runner per lane
    shared_lanes: bool = False
    #: why the path can't keep several generations in flight, or None: it can (one lane per request slot)
    one_at_a_time: str | None = None

    def setup(self, source: Any, dtype: str, device: str, batch: int, prompt_len: int, new_tokens: int) -> None:
        """``source`` is a ``workers.generation.source.Source`` (the fp32 model and its folder)."""
        if dtype not in self.dtypes:
            raise SkipTrial(f"{self.name} does not run {dtype} (runs {', '.join(sorted(self.dtypes))})")
        self.source, self.dtype, self.device = source, dtype, device
        self.batch, self.prompt_len, self.new_tokens = batch, prompt_len, new_tokens
        self.eos = source.shape.eos_token_id
        self._setup()

    @abstractmethod
    def _setup(self) -> None: ...

    @abstractmethod
    def generate(self, prompt_ids: np.ndarray, keep_logits: int = 0) -> Generation:
        """Greedy-decode ``new_tokens`` tokens after ``prompt_ids`` (int64 [batch, prompt_len]); keep the
        logits of the prefill and of the first ``keep_logits - 1`` decode steps as host arrays."""

    def kv_cache_bytes(self) -> int:
        """Bytes of the KV cache at its largest (prompt_len + new_tokens positions), at the path's dtype."""
        itemsize = DTYPES[self.dtype][1]
        return self.source.shape.kv_bytes(self.batch, self.prompt_len + self.new_tokens, itemsize)

    @abstractmethod
    def teardown(self) -> None:
        """Free what setup took."""


def summarize(g: Generation, batch: int) -> dict[str, Any]:
    """The per-generation figures: TTFT, TPOT median/p99 over the decode samples, tokens/s, end-to-end."""
    steps = np.asarray(g.step_ms, dtype=np.float64)
    n_tokens = batch * g.tokens.shape[1]
    return {
        "ttft_ms": g.ttft_ms,
        "tpot_median_ms": float(np.median(steps)) if steps.size else None,
        "tpot_p99_ms": float(np.percentile(steps, 99)) if steps.size else None,
        "e2e_ms": g.e2e_ms,
        "tokens_per_s": n_tokens / (g.e2e_ms / 1e3) if g.e2e_ms > 0 else None,
        "decode_samples": int(steps.size),
        "clock": g.clock,
    }
