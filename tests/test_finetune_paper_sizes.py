"""The finetune recipes run the paper's patch-16 models at their high resolution (issue 15,
item 1). §B: "518×518 (or 512×512 for models which use a patch size of 16)"; 518 is not a
multiple of 16, so with 518 the step refused ViT-B/16 and ViT-L/16.

Each test runs `mawsflow finetune` for one optimizer step of the real ViT-B/16 (MAE recipe,
Table 14) or ViT-L/16 (WSP recipe, Table 15) at the recipe's own resolution, from a 224px
trunk whose position embeddings are interpolated to the 32×32 patch grid. Only the lengths
shrink: two images, one step, no compilation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors import safe_open

from fashion_mnist_corpus import write_eval_dataset
from mawsflow.models.artifacts import write_model
from mawsflow.models.vit import create_trunk
from mawsflow.recipes import load_recipe
from mawsflow.steps import finetune


@pytest.fixture(scope="module")
def fmnist(tmp_path_factory) -> Path:
    return write_eval_dataset(tmp_path_factory.mktemp("fmnist"), limit=8, samples_per_shard=8)


def _pretrained_224(out: Path, arch: str, step: str) -> Path:
    trunk = create_trunk(arch, img_size=224)
    card = {"arch": arch, "img_size": 224, "step": step}
    if step == "wsp":
        card.update(init="mae", recipe={"init": "mae"})
    write_model(str(out), trunk.state_dict(), card, {"steps": 0})
    return out


@pytest.mark.slow
@pytest.mark.parametrize(
    ("arch", "step", "recipe", "table"),
    [
        ("vit_b16", "mae", "finetune-mae", "Table 14"),
        ("vit_l16", "wsp", "finetune-wsp", "Table 15"),
    ],
)
def test_patch_16_models_finetune_one_step_at_512px(fmnist, tmp_path, arch, step, recipe, table):
    assert load_recipe(recipe, arch=arch).model.img_size == 512
    trunk = _pretrained_224(tmp_path / "pretrained", arch, step)
    out = tmp_path / "ft"
    code = finetune.main(
        [
            "--set", f"model.arch={arch}",
            "--set", f"init_checkpoint={trunk}",
            "--set", f"data.train={fmnist}",
            "--set", f"output={out}",
            "--set", "schedule.samples_per_epoch=2",
            "--set", "schedule.batch_size=2",
            "--set", "schedule.epochs=1",
            "--set", "data.num_workers=0",
            "--set", "runtime.compile=false",
            "--set", "runtime.device=cpu",
            "--set", "checkpoint.every_steps=1",
            "--set", "checkpoint.keep_last=1",
        ]
    )  # fmt: skip
    assert code == 0
    card = json.loads((out / "model.json").read_text())
    assert card["recipe"]["source"] == table
    assert card["img_size"] == 512 and card["recipe"]["augment"]["crop"]["size"] == 512
    with safe_open(str(out / "model.safetensors"), "pt") as weights:
        grid = 512 // 16
        assert tuple(weights.get_slice("pos_embed").get_shape()) == (
            1,
            1 + grid * grid,
            1024 if arch == "vit_l16" else 768,
        )
    assert json.loads((out / "metrics.json").read_text())["steps"] == 1
