"""Decoder models with their LM head: random weights, seeded, offline; or a local ``save_pretrained`` folder.

The table :data:`CAUSAL` names the causal-LM architectures a generation may use, with what the
driver needs to check a request without importing transformers (or torch): the config keys a plan
may override, the vocabulary size, the longest sequence (positions), the end-of-sequence id, and
whether ONNX Runtime GenAI's model builder builds the architecture. ``tests/test_generation.py``
keeps the table true against the installed transformers.

A name builds ``<Config>(**overrides)`` and ``<ForCausalLM>(config)`` under ``torch.manual_seed``;
a folder with a ``config.json`` of a ``model_type`` in the table loads its own weights. The ``hf:``
forms of ``workers.models.hf`` (base model, no head, one forward pass) are separate and keep their meaning.

A ~1B Llama shape, for example: ``llama`` with ``hidden_size: 2048, num_hidden_layers: 16,
num_attention_heads: 32, num_key_value_heads: 8, intermediate_size: 8192, vocab_size: 32000``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class GenerationInputError(ValueError):
    """A generation request this model can't serve. ``key`` names the input as a plan writes it
    (``model``, ``new_tokens``, ``prompt_lens``), so plan validation can locate the message."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


@dataclass(frozen=True)
class CausalArch:
    """One causal-LM architecture: its transformers classes and the defaults the driver needs."""

    config: str  # transformers config class
    model: str  # transformers class with the LM head
    model_type: str  # config.json's model_type
    overridable: tuple[str, ...]
    keys: dict[str, str]  # our name -> config key: layers, hidden, heads, kv_heads, vocab, positions
    defaults: dict[str, int]  # our name -> default value of the config class
    eos_token_id: int | None  # None: the config class names none (nothing to mask)
    genai_builder: bool  # ONNX Runtime GenAI's model builder builds it


_LLAMA_KEYS = {"layers": "num_hidden_layers", "hidden": "hidden_size", "heads": "num_attention_heads",
               "kv_heads": "num_key_value_heads", "vocab": "vocab_size", "positions": "max_position_embeddings",
               "ffn": "intermediate_size"}
_LLAMA_OVERRIDES = tuple(_LLAMA_KEYS.values()) + ("head_dim", "hidden_act", "rms_norm_eps", "tie_word_embeddings")

CAUSAL: dict[str, CausalArch] = {
    "gpt2": CausalArch("GPT2Config", "GPT2LMHeadModel", "gpt2",
                       ("n_layer", "n_embd", "n_head", "n_inner", "vocab_size", "n_positions", "activation_function"),
                       {"layers": "n_layer", "hidden": "n_embd", "heads": "n_head", "vocab": "vocab_size",
                        "positions": "n_positions"},
                       {"layers": 12, "hidden": 768, "heads": 12, "vocab": 50257, "positions": 1024},
                       eos_token_id=50256, genai_builder=False),
    "llama": CausalArch("LlamaConfig", "LlamaForCausalLM", "llama", _LLAMA_OVERRIDES, _LLAMA_KEYS,
                        {"layers": 32, "hidden": 4096, "heads": 32, "kv_heads": 32, "vocab": 32000,
                         "positions": 2048, "ffn": 11008}, eos_token_id=2, genai_builder=True),
    "qwen2": CausalArch("Qwen2Config", "Qwen2ForCausalLM", "qwen2", _LLAMA_OVERRIDES, _LLAMA_KEYS,
                        {"layers": 32, "hidden": 4096, "heads": 32, "kv_heads": 32, "vocab": 151936,
                         "positions": 32768, "ffn": 22016}, eos_token_id=None, genai_builder=True),
    "mistral": CausalArch("MistralConfig", "MistralForCausalLM", "mistral", _LLAMA_OVERRIDES, _LLAMA_KEYS,
                          {"layers": 32, "hidden": 4096, "heads": 32, "kv_heads": 8, "vocab": 32000,
                           "positions": 131072, "ffn": 14336}, eos_token_id=2, genai_builder=True),
}
BY_MODEL_TYPE = {a.model_type: name for name, a in CAUSAL.items()}


@dataclass(frozen=True)
class Shape:
    """The sizes of one causal LM that a generation's checks and byte counts need."""

    arch: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    vocab: int
    positions: int
    head_dim: int
    eos_token_id: int | None  # None when the vocabulary (overridden smaller) has no such id: nothing to mask

    def kv_bytes(self, batch: int, tokens: int, itemsize: int) -> int:
        """Bytes of the KV cache holding ``tokens`` positions for ``batch`` sequences (keys and values)."""
        return 2 * self.layers * batch * self.kv_heads * tokens * self.head_dim * itemsize


def resolve(ref: str, base_dir: str = ".") -> tuple[str, CausalArch, dict[str, Any]]:
    """(table name, arch, the folder's config.json or {}) for a table name or a model folder.

    Raises GenerationInputError naming ``model`` when ``ref`` is neither (a base model, an encoder,
    an image model: anything that does not generate)."""
    if ref in CAUSAL:
        return ref, CAUSAL[ref], {}
    path = Path(ref) if Path(ref).is_absolute() else Path(base_dir) / ref
    cfg_file = path / "config.json"
    if cfg_file.is_file():
        cfg = json.loads(cfg_file.read_text())
        if cfg.get("model_type") in BY_MODEL_TYPE:
            name = BY_MODEL_TYPE[cfg["model_type"]]
            return name, CAUSAL[name], cfg
        raise GenerationInputError("model", f"{ref}: model_type {cfg.get('model_type')!r} is not a decoder this "
                                   f"can generate with; accepted: {', '.join(BY_MODEL_TYPE)}")
    raise GenerationInputError("model", f"{ref!r} is not a decoder model: use one of {', '.join(CAUSAL)} "
                               "or a save_pretrained folder of one of them")


def shape_of(ref: str, overrides: dict[str, Any] | None = None, base_dir: str = ".") -> Shape:
    """The model's sizes from the table's defaults, the folder's config and the overrides (no imports)."""
    name, arch, cfg = resolve(ref, base_dir)
    overrides = overrides or {}
    bad = sorted(set(overrides) - set(arch.overridable))
    if bad:
        raise GenerationInputError("overrides", f"{', '.join(bad)} can't be overridden for {name}; "
                                   f"accepted: {', '.join(arch.overridable)}")
    merged = {**cfg, **overrides}
    got = {k: int(merged.get(key, arch.defaults.get(k, 0)) or 0) for k, key in arch.keys.items()}
    heads = got["heads"]
    eos = merged.get("eos_token_id", arch.eos_token_id)
    eos = eos[0] if isinstance(eos, list) else eos
    eos = int(eos) if eos is not None and 0 <= int(eos) < got["vocab"] else None
    head_dim = int(merged.get("head_dim") or got["hidden"] // heads)
    return Shape(name, got["layers"], got["hidden"], heads, got.get("kv_heads") or heads, got["vocab"],
                 got["positions"], head_dim, eos)


def check_request(shape: Shape, batch: int, prompt_len: int, new_tokens: int) -> None:
    """Raise GenerationInputError for a request the model can't serve; the message names the key."""
    if new_tokens < 1:
        raise GenerationInputError("new_tokens", f"{new_tokens} new tokens; a generation makes at least 1")
    if prompt_len < 1:
        raise GenerationInputError("prompt_lens", f"prompt of {prompt_len} tokens; at least 1")
    if batch < 1:
        raise GenerationInputError("batch_sizes", f"batch {batch}; at least 1")
    if prompt_len + new_tokens > shape.positions:
        raise GenerationInputError(
            "prompt_lens", f"prompt {prompt_len} + new_tokens {new_tokens} = {prompt_len + new_tokens} tokens is "
            f"longer than the model's {shape.positions} positions ({shape.arch})")


#: Random weights of a model up to this size (fp32) are drawn on the CPU and then moved to the device,
#: so every device, and a build-ahead task with no GPU (``workers.generation.source.build_ahead``),
#: makes the same ones: the ~1B shape above (4.4 GB) took 18 s on one core of a 2-vCPU VM. A larger
#: model's are drawn on the device itself (host memory and minutes of one core per worker otherwise),
#: and its ONNX builds stay with the worker that drew them.
CPU_DRAW_MAX_BYTES = 8 << 30


def drawn_on_cpu(ref: str, overrides: dict[str, Any] | None) -> bool:
    """Whether ``build`` draws this table model's random weights on the CPU (False for a folder)."""
    import torch
    import transformers

    if ref not in CAUSAL:
        return False
    arch = CAUSAL[ref]
    with torch.device("meta"):  # sizes only: nothing allocated, nothing drawn
        model = getattr(transformers, arch.model)(getattr(transformers, arch.config)(**dict(overrides or {})))
    return sum(p.numel() for p in model.parameters()) * 4 <= CPU_DRAW_MAX_BYTES


def build(ref: str, overrides: dict[str, Any] | None, seed: int, device: str = "cpu") -> Any:
    """The fp32 causal LM in eval mode on ``device``: seeded random weights (a table name; drawn where
    :data:`CPU_DRAW_MAX_BYTES` says) or the folder's weights."""
    import torch
    import transformers

    name, arch, local = resolve(ref)
    overrides = dict(overrides or {})
    torch.manual_seed(seed)
    if local:
        model = transformers.AutoModelForCausalLM.from_pretrained(ref, dtype=torch.float32, **overrides)
        return model.to(device).eval()
    config = getattr(transformers, arch.config)(**overrides)
    with torch.device("cpu" if drawn_on_cpu(ref, overrides) else device):
        model = getattr(transformers, arch.model)(config)
    return model.float().to(device).eval()


def save_folder(model: Any, path: str | Path) -> Path:
    """``model.save_pretrained(path)`` plus a word-level tokenizer of three tokens, which ONNX Runtime
    GenAI's model builder wants in the folder; nothing is downloaded."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    path = Path(path)
    model.save_pretrained(path)
    tok = Tokenizer(models.WordLevel({"<unk>": 0, "<s>": 1, "</s>": 2}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                            eos_token="</s>").save_pretrained(path)
    return path


def weight_bytes(model: Any, itemsize: int) -> int:
    """Bytes of the weights one decode step reads, at ``itemsize``: every parameter once, except the
    input embedding table, of which a step gathers only the new tokens' rows (when it is tied to the
    LM head, the head reads it whole, so it counts)."""
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    tied = head is not None and head.weight.data_ptr() == emb.data_ptr()
    seen: set[int] = set() if tied else {emb.data_ptr()}
    n = 0
    for p in model.parameters():
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            n += p.numel()
    return n * itemsize
