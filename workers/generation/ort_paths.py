"""ONNX Runtime generation paths, both on the ``model.onnx`` that ORT GenAI's model builder writes.

``ort`` (ONNX Runtime with IO binding): a plain ``InferenceSession`` over the decoder with past
key/values in and present key/values out. Every buffer lives on the device: the prompt and the
token buffer, an all-ones attention mask (one flat buffer; each step binds its first
``batch * length`` elements as [batch, length]), the logits (a torch buffer bound by pointer, so the
masked argmax that picks the next token runs on the device and writes the next step's input), and
a static KV cache: one buffer per layer's key and value, ``prompt_len + new_tokens`` positions long,
allocated in setup and bound as both the past input and the present output of every run, as ORT
GenAI binds it (``past_present_share_buffer``). The builder's attention op
(``GroupQueryAttention``) then writes each step's keys and values in place and reads the valid
length from the attention mask. (Binding ORT-allocated present values as the next step's past
instead gave wrong logits on CUDA at batch 8 and 32 for a 1B Llama in fp16, with batch 1 right.)
No host copy per token. On CUDA the session runs on torch's current stream (the
``user_compute_stream`` provider option) and ORT's end-of-run synchronization is off, so the steps
queue like the torch paths' and CUDA events time them.

``ort-genai`` (ONNX Runtime GenAI): its ``Generator`` loop, greedy, ``min_length = max_length`` (its
way of masking the end-of-sequence token), with and without its CUDA graph (``ort-genai-graph``).
``generate_next_token`` is a synchronous call and the library runs on its own stream behind it, so
each step is timed on the host clock around that call (the step is complete when it returns: on
CUDA the session's run synchronizes its stream at its end, which ORT GenAI leaves on). The
Generator (and its KV cache, allocated to ``max_length``) is made before the clock starts, as the
torch paths allocate their static cache in setup.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from workers.faults import oom_message
from workers.generation.base import Generation, GenerationRunner, HostMarks, SkipTrial, marks_for

T = TypeVar("T")

#: ONNX element type -> (numpy type, torch dtype name)
_TYPES = {"tensor(float)": (np.float32, "float32"), "tensor(float16)": (np.float16, "float16")}


def _ep(device: str) -> str:
    return "cuda" if str(device).startswith("cuda") else "cpu"


def _shares_past_and_present(folder: Any) -> bool:
    """Whether the builder wrote a decoder whose attention takes one max-length KV buffer as both its
    past and its present (``past_present_share_buffer`` in ``genai_config.json``: its
    GroupQueryAttention does; the packed attention of other precisions and devices grows its present)."""
    import json

    try:
        config = json.loads((folder / "genai_config.json").read_text())
    except (OSError, ValueError):
        return False
    return bool(config.get("search", {}).get("past_present_share_buffer"))


def _loaded(load: Callable[[], T], dtype: str, ep: str) -> T:
    """``load()`` of the builder's model; a model ONNX Runtime refuses to load is a ``SkipTrial`` with
    its reason (ORT GenAI 0.18's builder writes fp32 CUDA decoders with packed ``Attention`` whose
    present key/values it leaves unwired: "Graph output (present.0.key) does not exist in the graph").
    Out of memory stays an error (an ``oom`` row)."""
    try:
        return load()
    except Exception as exc:
        if oom_message(exc):
            raise
        text = " ".join(str(exc).split())
        why = re.search(r"(This is an invalid model\..*)", text)
        raise SkipTrial(f"ONNX Runtime can't load the {dtype} {ep} decoder that ORT GenAI's model builder wrote: "
                        f"{why.group(1) if why else text[-300:]}") from exc


class OrtIoBinding(GenerationRunner):
    """A plain ORT session with IO binding over the builder's decoder (see the module docstring)."""

    name = "ort"
    dtypes = frozenset({"fp32", "fp16"})  # bfloat16 has no numpy element type for bind_input/bind_output

    def _setup(self) -> None:
        import onnxruntime as ort
        import torch

        self.torch, self.ort = torch, ort
        folder = self.source.onnx_model(self.dtype, _ep(self.device))
        if not _shares_past_and_present(folder):
            raise SkipTrial(f"the builder's {self.dtype} {_ep(self.device)} decoder does not take its past and present "
                            "in one buffer (past_present_share_buffer in its genai_config.json), which this path binds")
        so = ort.SessionOptions()
        so.log_severity_level = 3
        self.dev_type, self.dev_id = "cpu", 0
        if _ep(self.device) == "cuda":
            torch.cuda.init()
            self.dev_id = torch.device(self.device).index or 0
            opts = {"device_id": self.dev_id, "user_compute_stream": str(torch.cuda.current_stream().cuda_stream)}
            providers: list[Any] = [("CUDAExecutionProvider", opts)]
            self.dev_type = "cuda"
        else:
            providers = ["CPUExecutionProvider"]
        self.sess = _loaded(lambda: ort.InferenceSession(str(folder / "model.onnx"), so, providers=providers),
                            self.dtype, _ep(self.device))
        if _ep(self.device) == "cuda" and self.sess.get_providers()[0] != "CUDAExecutionProvider":
            raise SkipTrial(f"onnxruntime has no CUDA provider here ({', '.join(self.sess.get_providers())})")
        self.run_options = ort.RunOptions()
        self.run_options.add_run_config_entry("disable_synchronize_execution_providers", "1")
        names = [i.name for i in self.sess.get_inputs()]
        self.past_names = [n for n in names if n.startswith("past_key_values.")]
        self.present_names = [n.replace("past_key_values.", "present.") for n in self.past_names]
        self.has_positions = "position_ids" in names
        unknown = set(names) - {"input_ids", "attention_mask", "position_ids", *self.past_names}
        if unknown:
            raise SkipTrial(f"the decoder's inputs {sorted(unknown)} are not fed by this path")
        shape, b, dev = self.source.shape, self.batch, self.device
        # the builder may keep the logits in fp32 for an fp16 model: each buffer takes the type the graph says
        types = {i.name: i.type for i in [*self.sess.get_inputs(), *self.sess.get_outputs()]}
        if types["logits"] not in _TYPES or types[self.past_names[0]] not in _TYPES:
            raise SkipTrial(f"the decoder's logits are {types['logits']} and its past {types[self.past_names[0]]}; "
                            f"this path binds {', '.join(_TYPES)}")
        self.np_dtype, tname = _TYPES[types["logits"]]
        tdt = getattr(torch, tname)
        past_np, past_t = _TYPES[types[self.past_names[0]]]
        self.max_len = self.prompt_len + self.new_tokens
        self.mask = torch.ones(b * self.max_len, dtype=torch.long, device=dev)
        self.prompt = torch.zeros((b, self.prompt_len), dtype=torch.long, device=dev)
        self.tok = torch.zeros((b, 1), dtype=torch.long, device=dev)
        self.prompt_pos = torch.arange(self.prompt_len, device=dev).repeat(b, 1)
        self.step_pos = torch.zeros((b, 1), dtype=torch.long, device=dev)  # advanced in place on the device
        self.out = torch.zeros((b, self.new_tokens), dtype=torch.long, device=dev)
        self.prefill_logits = torch.empty((b, self.prompt_len, shape.vocab), dtype=tdt, device=dev)
        self.step_logits = torch.empty((b, 1, shape.vocab), dtype=tdt, device=dev)
        # the static KV cache, each buffer both past and present of every run (see the module's doc)
        self.kv_shape = (b, shape.kv_heads, self.max_len, shape.head_dim)
        self.kv = [torch.zeros(self.kv_shape, dtype=getattr(torch, past_t), device=dev) for _ in self.past_names]
        self.binding = self.sess.io_binding()
        for past, present, buf in zip(self.past_names, self.present_names, self.kv, strict=True):
            self._bind(past, buf, self.kv_shape, past_np)  # bound once: every run reads and writes them in place
            self._bind(present, buf, self.kv_shape, past_np, output=True)

    def _bind(self, name: str, t: Any, shape: tuple[int, ...], dtype: Any, output: bool = False) -> None:
        f = self.binding.bind_output if output else self.binding.bind_input
        f(name, self.dev_type, self.dev_id, dtype, list(shape), t.data_ptr())

    def _run(self, ids: Any, pos: Any, length: int, logits: Any) -> None:
        """One run over ``ids`` at positions ``pos`` with ``length`` positions in all, its keys and
        values written into the static cache (bound in setup). Binding a name again replaces its
        binding: only what changes between runs is bound here."""
        self._bind("input_ids", ids, tuple(ids.shape), np.int64)
        if self.has_positions:
            self._bind("position_ids", pos, tuple(pos.shape), np.int64)
        self._bind("attention_mask", self.mask, (self.batch, length), np.int64)
        self._bind("logits", logits, tuple(logits.shape), self.np_dtype, output=True)
        self.sess.run_with_iobinding(self.binding, self.run_options)

    def generate(self, prompt_ids: np.ndarray, keep_logits: int = 0) -> Generation:
        torch = self.torch
        from workers.generation.torch_paths import _host_logits, _next_token, _sync

        self.prompt.copy_(torch.as_tensor(prompt_ids))
        kept: list[np.ndarray] = []
        marks = marks_for(self.device)
        _sync(self.device)
        marks.mark()
        self._run(self.prompt, self.prompt_pos, self.prompt_len, self.prefill_logits)
        self.step_pos.fill_(self.prompt_len)
        tok = _next_token(self.prefill_logits, self.eos)
        self.tok[:, 0] = tok
        self.out[:, 0] = tok
        marks.mark()
        if keep_logits:
            kept.append(_host_logits(self.prefill_logits))
        for i in range(1, self.new_tokens):
            self._run(self.tok, self.step_pos, self.prompt_len + i, self.step_logits)
            self.step_pos.add_(1)
            tok = _next_token(self.step_logits, self.eos)
            self.tok[:, 0] = tok
            self.out[:, i] = tok
            marks.mark()
            if i < keep_logits:
                kept.append(_host_logits(self.step_logits))
        ms = marks.intervals_ms()
        return Generation(self.out.cpu().numpy(), ms[0], ms[1:], kept, marks.clock, marks.t0)

    def teardown(self) -> None:
        self.sess = self.binding = self.kv = None
        self.prefill_logits = self.step_logits = self.mask = None
        self.prompt = self.tok = self.prompt_pos = self.step_pos = self.out = None
        if _ep(self.device) == "cuda":
            self.torch.cuda.empty_cache()  # the KV cache back to the device, not kept by torch's allocator


class OrtGenAI(GenerationRunner):
    """ONNX Runtime GenAI's own Generator loop (see the module docstring); host-timed per step."""

    name = "ort-genai"
    graph = False
    dtypes = frozenset({"fp32", "fp16", "bf16"})

    def _setup(self) -> None:
        try:
            import onnxruntime_genai as og
        except ImportError as exc:
            raise SkipTrial(f"onnxruntime-genai-cuda is not installed (the optional extra 'genai'): {exc}") from exc
        self.og = og
        ep = _ep(self.device)
        if self.graph and ep != "cuda":
            raise SkipTrial("ORT GenAI's CUDA graph needs a CUDA device")
        folder = self.source.onnx_model(self.dtype, ep)
        config = og.Config(str(folder))
        config.clear_providers()
        if ep == "cuda":
            config.append_provider("cuda")
            if self.graph:
                config.set_provider_option("cuda", "enable_cuda_graph", "1")
        self.model = _loaded(lambda: og.Model(config), self.dtype, ep)
        self.search = {"max_length": self.prompt_len + self.new_tokens, "min_length": self.prompt_len + self.new_tokens,
                       "do_sample": False, "batch_size": self.batch}
        self.note = ""
        if self.graph and self.batch > 1:  # older releases sized the graph by this search option
            try:
                self._generator(max_batch_size=self.batch)
                self.search["max_batch_size"] = self.batch
            except Exception as exc:  # noqa: BLE001 - kept for the reason below
                self.note = f" (search option max_batch_size: {str(exc).strip()})"
        try:
            gen = self._generator()  # the library's own checks of this shape (its graph at batch > 1) say so here
            if self.graph and self.batch > 1:  # ... or only when it runs: ORT GenAI 0.18's graph fails its prefill
                gen.append_tokens(np.zeros((self.batch, self.prompt_len), dtype=np.int32))
                gen.generate_next_token()
        except Exception as exc:  # noqa: BLE001 - the library's reason goes into the skipped row
            raise SkipTrial(f"ORT GenAI can't run batch {self.batch}{' with its CUDA graph' if self.graph else ''}: "
                            f"{' '.join(str(exc).split())}{self.note}") from exc

    def _generator(self, **extra: Any) -> Any:
        params = self.og.GeneratorParams(self.model)
        params.set_search_options(**self.search, **extra)
        return self.og.Generator(self.model, params)

    def generate(self, prompt_ids: np.ndarray, keep_logits: int = 0) -> Generation:
        gen = self._generator()
        ids = np.ascontiguousarray(prompt_ids, dtype=np.int32)
        kept: list[np.ndarray] = []
        marks = HostMarks()
        marks.mark()
        gen.append_tokens(ids)
        if keep_logits:
            kept.append(self._logits(gen))
        gen.generate_next_token()
        marks.mark()
        for i in range(1, self.new_tokens):
            if i < keep_logits:
                kept.append(self._logits(gen))  # computes this step's logits; the call below only picks
            gen.generate_next_token()
            marks.mark()
        tokens = np.stack([np.asarray(gen.get_sequence(b))[-self.new_tokens:] for b in range(self.batch)])
        ms = marks.intervals_ms()
        return Generation(tokens.astype(np.int64), ms[0], ms[1:], kept, "host (around generate_next_token)",
                          marks.t0)

    def _logits(self, gen: Any) -> np.ndarray:
        return np.asarray(gen.get_logits(), dtype=np.float32).reshape(self.batch, -1)

    def teardown(self) -> None:
        self.model = None


class OrtGenAIGraph(OrtGenAI):
    name = "ort-genai-graph"
    graph = True
    replays = True
