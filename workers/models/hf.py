"""``hf:`` models: transformer architectures built from their config class with random weights.

No download, ever: a name of :data:`ARCHS` builds the architecture from ``transformers``' own
config defaults (BERT-base is ``BertConfig()``), with the plan's ``overrides`` (fewer layers, a
smaller hidden size), and seeded random weights; a local folder with a ``config.json`` (what
``save_pretrained`` writes) is loaded with ``from_pretrained`` from that folder.

The driver checks an ``hf:`` model with this table alone: the names, the inputs each architecture
takes, the config keys a plan may override, the vocabulary size (token ids are drawn below it) and
the longest sequence it accepts. Importing transformers costs seconds (it imports torch); only
workers do. ``tests/test_hf.py`` keeps the table true against the installed library.

Every model runs without a KV cache (``use_cache=False``) and returns its tensor outputs only:
``last_hidden_state`` and, where the architecture has one, ``pooler_output``; outputs that are
not tensors (None, a cache object) are dropped before timing ends, so parity compares tensors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

if TYPE_CHECKING:
    import torch
    from pydantic import JsonValue

#: The model types a local folder's config.json may name (``model_type``), by table entry.
_SEQ = ("batch", "seq")


class ArchInput(TypedDict):
    """One input an architecture takes: its shape in axis names (``batch``, ``seq``, ``image``) and ints."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]
    fill: str


class Settings(TypedDict, total=False):
    """The config values the driver needs (those the architecture has)."""

    vocab_size: int  # token ids are drawn below it
    max_seq: int  # the longest sequence it takes
    image: int  # the image side


#: ``hf:`` config values a plan replaces (``num_hidden_layers: 2``), as ``ModelSpec.overrides``.
Overrides = dict[str, bool | int | float | str]
#: A local model folder's config.json.
Config = dict[str, "JsonValue"]


@dataclass(frozen=True)
class Arch:
    """One architecture: its transformers classes, the inputs it takes, what a plan may change."""

    config: str  # transformers config class
    model: str  # transformers model class (the base model, no task head)
    model_type: str  # config.json's model_type
    inputs: tuple[ArchInput, ...]
    overridable: tuple[str, ...]  # config keys a plan may override (sizes and structure)
    vocab_key: str | None = None  # the config key of the vocabulary size (token ids are below it)
    vocab_size: int | None = None  # its default
    max_seq_key: str | None = None  # the config key of the longest sequence
    max_seq: int | None = None  # its default
    image_key: str | None = None  # image models: the config key of the image side
    notes: str = ""
    extra: dict[str, int] = field(default_factory=dict)  # defaults the config class doesn't say (image side)


def _ids(name: str = "input_ids") -> ArchInput:
    return {"name": name, "dtype": "int64", "shape": _SEQ, "fill": "randint"}


_MASK: ArchInput = {"name": "attention_mask", "dtype": "int64", "shape": _SEQ, "fill": "ones"}
_TYPES: ArchInput = {"name": "token_type_ids", "dtype": "int64", "shape": _SEQ, "fill": "zeros"}
_BERTLIKE = ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "vocab_size",
             "max_position_embeddings", "type_vocab_size", "hidden_act", "layer_norm_eps")

ARCHS: dict[str, Arch] = {
    "bert-base": Arch("BertConfig", "BertModel", "bert", (_ids(), _MASK, _TYPES), _BERTLIKE,
                      "vocab_size", 30522, "max_position_embeddings", 512),
    "roberta-base": Arch("RobertaConfig", "RobertaModel", "roberta", (_ids(), _MASK), _BERTLIKE,
                         "vocab_size", 50265, "max_position_embeddings", 512,
                         notes="positions start after the padding index: the longest sequence is 2 shorter"),
    "distilbert": Arch("DistilBertConfig", "DistilBertModel", "distilbert", (_ids(), _MASK),
                       ("n_layers", "dim", "n_heads", "hidden_dim", "vocab_size", "max_position_embeddings",
                        "activation"),
                       "vocab_size", 30522, "max_position_embeddings", 512),
    "gpt2": Arch("GPT2Config", "GPT2Model", "gpt2", (_ids(), _MASK),
                 ("n_layer", "n_embd", "n_head", "n_inner", "vocab_size", "n_positions", "activation_function"),
                 "vocab_size", 50257, "n_positions", 1024),
    "vit-base": Arch("ViTConfig", "ViTModel", "vit",
                     ({"name": "pixel_values", "dtype": "float32", "shape": ("batch", 3, "image", "image"),
                       "fill": "normal"},),
                     ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "image_size",
                      "patch_size", "hidden_act", "layer_norm_eps"),
                     image_key="image_size", extra={"image": 224}),
}
BY_MODEL_TYPE = {a.model_type: name for name, a in ARCHS.items()}
#: Positions RoBERTa reserves before the first token (padding_idx + 1).
_POSITION_OFFSET = {"roberta": 2}


def local_config(path: Path) -> Config | None:
    """A local model folder's config.json as a dict, or None when ``path`` is not such a folder."""
    cfg = path / "config.json"
    if not cfg.is_file():
        return None
    return json.loads(cfg.read_text())


def arch_of(ref: str, base_dir: str = ".") -> tuple[str, Arch, Config] | None:
    """(table name, Arch, the local config.json or {}) for an ``hf:`` reference, or None when it is
    neither a table name nor a local folder of a model type the table knows."""
    if ref in ARCHS:
        return ref, ARCHS[ref], {}
    path = Path(ref) if Path(ref).is_absolute() else Path(base_dir) / ref
    cfg = local_config(path) if path.is_dir() else None
    if cfg is None or cfg.get("model_type") not in BY_MODEL_TYPE:
        return None
    name = BY_MODEL_TYPE[cfg["model_type"]]
    return name, ARCHS[name], cfg


def settings(arch: Arch, cfg: Config, overrides: Overrides) -> Settings:
    """The config values the driver needs: vocabulary size, longest sequence, image side."""
    merged = {**cfg, **overrides}
    out: Settings = {}
    if arch.vocab_key:
        out["vocab_size"] = int(merged.get(arch.vocab_key, arch.vocab_size))
    if arch.max_seq_key:
        out["max_seq"] = int(merged.get(arch.max_seq_key, arch.max_seq)) - _POSITION_OFFSET.get(arch.model_type, 0)
    if arch.image_key:
        out["image"] = int(merged.get(arch.image_key, arch.extra.get("image", 224)))
    return out


def build(ref: str, overrides: Overrides, seed: int) -> Any:
    """The fp32 CPU module of an ``hf:`` model, eval mode, seeded random weights (a table name) or
    the folder's weights (a local path); no KV cache; tensor outputs only."""
    import torch
    import transformers

    found = arch_of(ref)
    if found is None:  # checked at validation; a folder that changed since says so here
        raise ValueError(f"hf:{ref} is neither a known architecture ({', '.join(ARCHS)}) nor a model folder")
    _, arch, local = found
    torch.manual_seed(seed)
    if local:
        config = transformers.AutoConfig.from_pretrained(ref, **overrides)
        if hasattr(config, "use_cache"):
            config.use_cache = False
        model = transformers.AutoModel.from_pretrained(ref, config=config)
    else:
        config = getattr(transformers, arch.config)(**overrides)
        if hasattr(config, "use_cache"):
            config.use_cache = False
        model = getattr(transformers, arch.model)(config)
    return TensorOutputs(model).eval()


def TensorOutputs(model: Any) -> Any:  # noqa: N802 - builds an nn.Module
    """``model`` returning a dict of its tensor outputs only (a ModelOutput also holds None and caches)."""
    import torch

    class _TensorOutputs(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
            out = self.inner(*args, **kwargs)
            return {k: v for k, v in out.items() if isinstance(v, torch.Tensor)}

    return _TensorOutputs()


def library_version() -> str | None:
    """The installed transformers' version (package metadata: no import), part of the export key."""
    from importlib import metadata

    try:
        return metadata.version("transformers")
    except metadata.PackageNotFoundError:
        return None
