"""VPT (Table 17): deep prompts on a frozen trunk; only the prompts and the head train. And the
low-shot step end to end with both methods."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from fashion_mnist_corpus import write_eval_dataset
from mawsflow.engine.optim import build_optimizer, parameter_groups
from mawsflow.evaluation.lowshot import MSN_LAMBDAS
from mawsflow.models.vit import create_trunk
from mawsflow.models.vpt import VPTClassifier
from mawsflow.recipes import load_recipe
from mawsflow.steps import lowshot
from trunk_artifacts import write_trunk_output

TRAINABLE = {"prompts", "prompt_proj.weight", "prompt_proj.bias", "head.weight", "head.bias"}


def _model(drop_path: float = 0.0) -> VPTClassifier:
    torch.manual_seed(0)
    trunk = create_trunk("vit_tiny_p4", img_size=32, drop_path=drop_path)
    return VPTClassifier(trunk, 10, num_tokens=8, dim_tokens=16)


def test_vpt_trains_only_the_prompts_and_the_head():
    model = _model(drop_path=0.5)
    assert not model.trunk.training  # frozen from the start: the engine never calls train()
    recipe = load_recipe("lowshot-vpt", preset="tiny")
    optimizer = build_optimizer(
        parameter_groups(model, recipe.optimizer.weight_decay),
        recipe.optimizer,
        device=torch.device("cpu"),
    )
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images, labels = torch.randn(8, 3, 32, 32), torch.arange(8) % 10
    model.train()
    assert not model.trunk.training  # frozen: drop path stays off
    for _ in range(3):
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()
        optimizer.zero_grad()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == TRAINABLE
    assert {n for n, p in model.named_parameters() if p.requires_grad} == TRAINABLE
    assert all(p.grad is None for p in model.trunk.parameters())


def test_every_block_sees_its_own_prompts_between_class_token_and_patches():
    model = _model().eval()
    seen = []
    for block in model.trunk.blocks:
        block.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    patches = (32 // 4) ** 2
    projected = model.prompt_proj(model.prompts)
    for depth, tokens in enumerate(seen):
        assert tokens.shape == (2, 1 + 8 + patches, 64)
        torch.testing.assert_close(tokens[0, 1:9], projected[depth])


def test_bad_vpt_settings_are_rejected():
    with pytest.raises(ValueError, match="num_tokens"):
        VPTClassifier(create_trunk("vit_tiny_p4", img_size=32), 10, num_tokens=0)


@pytest.fixture(scope="module")
def lowshot_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("lowshot")
    return {
        "trunk": write_trunk_output(root / "wsp"),
        "eval": write_eval_dataset(root / "eval", limit=200, samples_per_shard=64),
        "root": root,
    }


@pytest.mark.parametrize("method", ["vpt", "logreg"])
def test_lowshot_step_reports_mean_and_spread_per_k(lowshot_inputs, method):
    out = lowshot_inputs["root"] / method
    code = lowshot.main(
        [
            "--preset", "tiny", "--method", method, "--name", "F-MNIST",
            "--set", f"init_checkpoint={lowshot_inputs['trunk']}",
            "--set", f"data.train={lowshot_inputs['eval']}",
            "--set", f"output={out}",
            "--set", "shots=[1, 5]",
            "--num-workers", "0",
        ]
    )  # fmt: skip
    assert code == 0
    result = json.loads((out / "metrics.json").read_text())
    assert set(result["lowshot"]) == {"1", "5"}
    for k in ("1", "5"):
        runs = result["lowshot"][k]["runs"]
        assert len(runs) == 2  # the tiny preset's two seeds
        assert all(0 <= r <= 100 for r in runs)
    suffix = "" if method == "vpt" else " (logreg)"
    assert set(result["table"]) == {f"F-MNIST 1-shot{suffix}", f"F-MNIST 5-shot{suffix}"}
    # The splits hold at most K per class, and each (K, seed) is written once.
    split = json.loads((out / "splits" / "k5-seed1" / "train" / "manifest.json").read_text())
    assert split["num_samples"] <= 50
    if method == "vpt":
        exported = load_file(out / "runs" / "k1-seed0" / "model.safetensors")
        assert set(exported) == TRAINABLE
    else:
        # MSN's λ is swept; each K reports the best one.
        assert {result["metrics"][f"{k}shot_lambd"] for k in (1, 5)} <= set(MSN_LAMBDAS)
