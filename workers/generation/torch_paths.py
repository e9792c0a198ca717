"""Torch generation paths: eager with transformers' dynamic cache; a static KV cache driven eagerly,
by one hand-captured CUDA graph per decode step, or by ``torch.compile(mode="reduce-overhead")``.

Static-cache decode step (``cudagraph``): the KV cache holds ``prompt_len + new_tokens`` positions;
the step's inputs are device tensors (the last token, its position; the cache keeps its own write
position as a device tensor too), so one graph per (batch, cache length) serves every step. The
graph runs the model, masks the end-of-sequence logit, takes the argmax into the token buffer,
writes it into the output buffer at its position and advances the position: a token costs one
``replay()`` and no host work. The prefill runs eagerly into the same cache (its shape is seen once per generation).

``compile`` compiles the same decode step (model, mask, argmax) with ``reduce-overhead``; the
position advances outside it, as gpt-fast does, so the compiled function never mutates its inputs.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from workers import torch_threads
from workers.generation.base import Generation, GenerationRunner, SkipTrial, marks_for


def _next_token(logits: Any, eos: int | None) -> Any:
    """Greedy token of the last position with the end-of-sequence logit masked: int64 [batch]. No import
    in here: torch.compile traces it."""
    last = logits[:, -1, :].float()
    if last.dtype == logits.dtype:  # fp32: .float() returned the logits themselves; mask a copy
        last = last.clone()
    if eos is not None:
        last[:, eos] = float("-inf")
    return last.argmax(-1)


def _host_logits(logits: Any) -> np.ndarray:
    """The last position's logits as a host fp32 copy (never a view of a buffer the next step reuses)."""
    import torch

    return logits[:, -1, :].to("cpu", torch.float32, copy=True).numpy()


class TorchEager(GenerationRunner):
    """transformers' model called token by token with its ``DynamicCache`` (the library's own eager loop)."""

    name = "torch-eager"
    shared_lanes = True  # the weights are only read; each generation makes its own dynamic cache

    def _setup(self) -> None:
        import torch

        self.torch = torch
        self.model = self.source.torch_model(self.dtype)

    def generate(self, prompt_ids: np.ndarray, keep_logits: int = 0) -> Generation:
        from transformers import DynamicCache

        torch, model, eos = self.torch, self.model, self.eos
        ids = torch.as_tensor(prompt_ids, device=self.device)
        out = torch.empty((self.batch, self.new_tokens), dtype=torch.long, device=self.device)
        kept: list[np.ndarray] = []
        marks = marks_for(self.device)
        _sync(self.device)
        with torch.inference_mode():
            cache = {_cache_kw(model): DynamicCache(config=model.config), "use_cache": True}
            marks.mark()
            logits = model(input_ids=ids, **cache).logits
            tok = _next_token(logits, eos)
            out[:, 0] = tok
            marks.mark()
            if keep_logits:
                kept.append(_host_logits(logits))
            for i in range(1, self.new_tokens):
                logits = model(input_ids=tok[:, None], **cache).logits
                tok = _next_token(logits, eos)
                out[:, i] = tok
                marks.mark()
                if i < keep_logits:
                    kept.append(_host_logits(logits))
        ms = marks.intervals_ms()
        return Generation(out.cpu().numpy(), ms[0], ms[1:], kept, marks.clock, marks.t0)

    def teardown(self) -> None:
        self.model = None


class TorchStatic(GenerationRunner):
    """A static KV cache of ``prompt_len + new_tokens`` positions; ``mode`` drives its decode step:
    ``eager`` (plain calls; runs on the CPU, the reference for the two below), ``cudagraph`` (one
    captured graph per (batch, cache length), replayed per token) or ``compile`` (torch.compile
    ``reduce-overhead``, whose CUDA graph trees capture it)."""

    mode = "eager"
    name = "torch-static"

    def _setup(self) -> None:
        import torch
        from transformers import StaticCache

        if self.mode != "eager" and not str(self.device).startswith("cuda"):
            raise SkipTrial(f"{self.name} needs a CUDA device")
        self.torch = torch
        self.model = self.source.torch_model(self.dtype)
        cfg, dev, shape = self.model.config, self.device, self.source.shape
        self.max_len = self.prompt_len + self.new_tokens
        self.kw = _cache_kw(self.model)
        # transformers < 5.2x placed a step's keys by ``cache_position``; later ones keep the position in the
        # static cache itself (a device tensor advanced in place), so either way it never leaves the device
        self.takes_cache_position = "cache_position" in inspect.signature(self.model.forward).parameters
        self.cache = StaticCache(config=cfg, max_cache_len=self.max_len)
        tdt = getattr(torch, {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}[self.dtype])
        self.cache.early_initialization(self.batch, shape.kv_heads, shape.head_dim, tdt, torch.device(dev))
        self.tok = torch.zeros((self.batch,), dtype=torch.long, device=dev)  # the last token
        self.pos = torch.zeros((1,), dtype=torch.long, device=dev)  # its position
        self.out = torch.zeros((self.batch, self.new_tokens), dtype=torch.long, device=dev)
        self.logits: Any = None
        if self.mode == "cudagraph":
            self._capture()
        elif self.mode == "compile":
            self._step = torch.compile(self._decode, mode="reduce-overhead", fullgraph=True)

    def _decode(self, tok: Any, pos: Any) -> tuple[Any, Any]:
        """One decode step: logits of ``tok`` at ``pos`` (the cache is updated in place) and the next token."""
        extra = {"cache_position": pos} if self.takes_cache_position else {}
        logits = self.model(input_ids=tok[:, None], position_ids=pos[None].expand(tok.shape[0], 1), use_cache=True,
                            **extra, **{self.kw: self.cache}).logits
        return logits, _next_token(logits, self.eos)

    def _graph_body(self) -> None:
        logits, nxt = self._decode(self.tok, self.pos)
        self.logits = logits
        self.tok.copy_(nxt)
        self.out.index_copy_(1, self.pos - (self.prompt_len - 1), nxt[:, None])
        self.pos.add_(1)

    def _capture(self) -> None:
        torch = self.torch
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.inference_mode(), torch.cuda.stream(s):
            for _ in range(3):  # warm-up on a side stream, as torch.cuda.graphs asks; the state is reset below
                self.pos.fill_(self.prompt_len)
                self._graph_body()
        torch.cuda.current_stream().wait_stream(s)
        self.graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(self.graph):
            self._graph_body()
        self.cache.reset()

    def _prefill(self, ids: Any) -> Any:
        torch = self.torch
        extra = {"cache_position": torch.arange(self.prompt_len, device=self.device)} \
            if self.takes_cache_position else {}
        logits = self.model(input_ids=ids, use_cache=True, **extra, **{self.kw: self.cache}).logits
        tok = _next_token(logits, self.eos)
        self.tok.copy_(tok)
        self.out[:, 0] = tok
        self.pos.fill_(self.prompt_len)
        return logits

    def generate(self, prompt_ids: np.ndarray, keep_logits: int = 0) -> Generation:
        torch = self.torch
        ids = torch.as_tensor(prompt_ids, device=self.device)
        kept: list[np.ndarray] = []
        marks = marks_for(self.device)
        if self.mode == "compile" and str(self.device).startswith("cuda"):  # maybe another thread than the last
            torch_threads.prepare()
        self.cache.reset()
        _sync(self.device)
        with torch.inference_mode():
            marks.mark()
            logits = self._prefill(ids)
            marks.mark()
            if keep_logits:
                kept.append(_host_logits(logits))
            for i in range(1, self.new_tokens):
                logits = self._token(i)
                marks.mark()
                if i < keep_logits:
                    kept.append(_host_logits(logits))
        ms = marks.intervals_ms()
        return Generation(self.out.cpu().numpy(), ms[0], ms[1:], kept, marks.clock, marks.t0)

    def _token(self, i: int) -> Any:
        if self.mode == "cudagraph":
            self.graph.replay()
            return self.logits
        if self.mode == "compile":
            self.torch.compiler.cudagraph_mark_step_begin()
            logits, nxt = self._step(self.tok, self.pos)  # read before the next call overwrites it
        else:
            logits, nxt = self._decode(self.tok, self.pos)
        self.tok.copy_(nxt)
        self.out[:, i] = nxt
        self.pos.add_(1)
        return logits

    def teardown(self) -> None:
        self.graph = self.model = self.cache = self._step = None
        if str(self.device).startswith("cuda"):
            self.torch.cuda.empty_cache()


class TorchCudaGraph(TorchStatic):
    name = "torch-cudagraph"
    mode = "cudagraph"
    replays = True


class TorchCompile(TorchStatic):
    name = "torch-compile"
    mode = "compile"
    replays = True
    one_at_a_time = ("torch.compile's CUDA graph trees are kept per thread and would compile the decode step once "
                     "per lane; it runs one request slot (concurrency 1)")


def _cache_kw(model: Any) -> str:
    """The keyword of the KV cache: ``cache`` where transformers renamed ``past_key_values`` (5.2x)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _sync(device: str) -> None:
    """Wait for the work queued on the current stream (a lane's own, under load: never the other lanes')."""
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.current_stream().synchronize()
