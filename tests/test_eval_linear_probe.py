"""Linear probe on frozen features: the classifier itself, and `mawsflow linear-probe` on a
trunk over Fashion-MNIST shards."""

from __future__ import annotations

import json

import pytest
import torch

from fashion_mnist_corpus import write_eval_dataset
from mawsflow.evaluation.linear_probe import LinearProbeConfig, train_linear_probe
from mawsflow.steps import linear_probe
from trunk_artifacts import write_trunk_output


def test_probe_standardises_features_and_separates_separable_classes():
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 16, generator=gen) * 3 + 100.0  # far from zero: needs centring
    labels = torch.arange(400) % 4
    features = centres[labels] + torch.randn(400, 16, generator=gen)
    probe = train_linear_probe(
        features[:200],
        labels[:200],
        4,
        LinearProbeConfig(epochs=30, batch_size=50, lr=0.1),
        device=torch.device("cpu"),
    )
    torch.testing.assert_close(probe.mean, features[:200].mean(dim=0))
    with torch.no_grad():
        accuracy = (probe(features[200:]).argmax(dim=1) == labels[200:]).float().mean()
    assert accuracy > 0.95
    with pytest.raises(ValueError, match="do not match"):
        train_linear_probe(features, labels[:3], 4, LinearProbeConfig(), device=torch.device("cpu"))


def test_linear_probe_step_on_fashion_mnist(tmp_path):
    trunk = write_trunk_output(tmp_path / "mae", step="mae")
    dataset = write_eval_dataset(tmp_path / "fmnist", limit=300, samples_per_shard=100)
    out = tmp_path / "probe"
    code = linear_probe.main(
        [
            "--model", str(trunk), "--dataset", str(dataset), "--output", str(out),
            "--epochs", "20", "--probe-batch-size", "64", "--num-workers", "0",
            "--name", "F-MNIST",
        ]
    )  # fmt: skip
    assert code == 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["pretraining"] == "MAE" and result["step"] == "linear-probe"
    assert result["metrics"]["train_samples"] == 300 and result["metrics"]["num_samples"] == 300
    # Even a randomly initialised ViT's features separate Fashion-MNIST well above 10% chance.
    assert result["table"]["F-MNIST Linear"] > 30.0, result["metrics"]
