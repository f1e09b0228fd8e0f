"""The one checked loader of pretrained artifacts (mawsflow.models.pretrained): every artifact is
checked name by name and shape by shape, and a wrong one is refused with an error naming it."""

from __future__ import annotations

import pytest
import torch

from mawsflow import storage
from mawsflow.errors import ConfigError, DataFormatError
from mawsflow.models.artifacts import write_model
from mawsflow.models.pretrained import (
    init_from_trunk,
    load_checked,
    load_classifier,
    load_timm_checkpoint,
    load_trunk,
    load_vpt_model,
)
from mawsflow.models.vit import create_trunk
from mawsflow.models.vpt import VPTClassifier

ARCH = "vit_tiny_p4"


def _write_trunk(uri: str, *, step: str = "wsp") -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    tensors = create_trunk(ARCH, img_size=32).state_dict()
    card = {"arch": ARCH, "img_size": 32, "step": step, "recipe": {}}
    write_model(uri, tensors, card, {"steps": 0})
    return tensors


def test_a_trunk_loads_from_either_store_and_is_resampled_to_a_new_size(storage_root):
    uri = storage.join(storage_root, "wsp")
    saved = _write_trunk(uri)
    trunk, card = load_trunk(uri)
    assert card["step"] == "wsp"
    for key, value in saved.items():
        assert torch.equal(trunk.state_dict()[key], value), key
    # Finetuning at a higher resolution: a 12x12 patch grid instead of 8x8 (plus the class token).
    bigger, _ = load_trunk(uri, img_size=48)
    assert bigger.pos_embed.shape == (1, 1 + 12 * 12, 64)
    assert torch.equal(
        bigger.state_dict()["blocks.0.attn.qkv.weight"], saved["blocks.0.attn.qkv.weight"]
    )


def test_the_configuration_pointing_at_the_wrong_artifact_is_a_config_error(tmp_path):
    trunk_uri = str(tmp_path / "wsp")
    _write_trunk(trunk_uri)
    with pytest.raises(
        ConfigError, match=r"wsp holds a vit_tiny_p4 trunk but model.arch is vit_small_p4"
    ):
        load_trunk(trunk_uri, arch="vit_small_p4")
    with pytest.raises(ConfigError, match=r"output of step 'wsp', not a finetuned model"):
        load_classifier(trunk_uri)
    lit_uri = str(tmp_path / "lit")
    _write_trunk(lit_uri, step="lit")
    with pytest.raises(ConfigError, match=r"output of step 'lit', not a trunk"):
        load_trunk(lit_uri)
    with pytest.raises(ConfigError, match="no file at"):
        load_timm_checkpoint(create_trunk(ARCH, img_size=32), str(tmp_path / "absent.pth"))


def test_every_mismatch_names_the_artifact_and_the_tensor():
    trunk = create_trunk(ARCH, img_size=32)
    good = trunk.state_dict()
    missing = {k: v for k, v in good.items() if k != "norm.weight"}
    with pytest.raises(
        DataFormatError, match=r"release\.pth does not match the trunk: missing \['norm.weight'\]"
    ):
        load_checked(trunk, missing, artifact="release.pth", what="trunk")
    extra = {**good, "decoder_pred.weight": torch.zeros(1)}
    with pytest.raises(DataFormatError, match=r"unexpected \['decoder_pred.weight'\]"):
        load_checked(trunk, extra, artifact="release.pth", what="trunk")
    wrong = {**good, "norm.weight": torch.zeros(65)}
    with pytest.raises(
        DataFormatError,
        match=r"release\.pth: norm.weight has shape \(65,\), the trunk needs \(64,\)",
    ):
        load_checked(trunk, wrong, artifact="release.pth", what="trunk")
    # Nothing was loaded by the refused calls.
    assert all(torch.equal(trunk.state_dict()[k], v) for k, v in good.items())


def test_a_classifier_starts_from_the_trunk_and_keeps_its_fresh_head(tmp_path):
    uri = str(tmp_path / "mae")
    saved = _write_trunk(uri, step="mae")
    classifier = create_trunk(ARCH, img_size=32)
    classifier.reset_classifier(10)
    head = classifier.head.weight.detach().clone()
    init_from_trunk(classifier, uri, img_size=32, arch=ARCH, missing_ok=("head.",))
    assert torch.equal(classifier.head.weight, head)
    for key, value in saved.items():
        assert torch.equal(classifier.state_dict()[key], value), key
    # Without the allowance the head's absence is a mismatch.
    with pytest.raises(DataFormatError, match=r"missing \['head.bias', 'head.weight'\]"):
        init_from_trunk(classifier, uri, img_size=32, arch=ARCH)


def test_a_vpt_run_loads_its_prompts_over_its_init_trunk_and_nothing_else(tmp_path):
    trunk_uri = str(tmp_path / "wsp")
    saved = _write_trunk(trunk_uri)
    torch.manual_seed(1)
    model = VPTClassifier(create_trunk(ARCH, img_size=32), 10, num_tokens=4, dim_tokens=16)
    trained = {k: v for k, v in model.state_dict().items() if not k.startswith("trunk.")}
    card = {
        "arch": ARCH,
        "img_size": 32,
        "num_classes": 10,
        "init_checkpoint": trunk_uri,
        "step": "lowshot",
        "recipe": {"vpt": {"num_tokens": 4, "dim_tokens": 16}},
    }
    run_uri = str(tmp_path / "run")
    write_model(run_uri, trained, card, {})
    loaded = load_vpt_model(run_uri)
    for key, value in trained.items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert torch.equal(loaded.trunk.state_dict()["pos_embed"], saved["pos_embed"])

    write_model(run_uri, {**trained, "stray.weight": torch.zeros(2)}, card, {})
    with pytest.raises(
        DataFormatError, match=r"run does not match the VPT model: .*'stray.weight'"
    ):
        load_vpt_model(run_uri)
