"""The WSP head continuation's fallbacks (mawsflow.steps.wsp.continue_head): a warm start from
a WSP model carries its head over only from that model's last complete checkpoint, matched by
its dataset's vocabulary. Without a complete checkpoint, or with a vocabulary that cannot be
read, the head starts afresh: left as initialised, nothing reported carried, and a warning that
says why. The source here is a real model folder: a model card naming a real dataset, and a
checkpoint the engine's own Checkpointer wrote."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch

from mawsflow.engine.checkpoint import COMPLETE_FILE, Checkpointer
from mawsflow.engine.distributed import DistributedContext
from mawsflow.recipes import load_recipe
from mawsflow.steps.wsp import WSPTask, continue_head
from mawsflow.typed_config import to_dict
from pretrain_shards import write_pretrain_dataset


class _TrainState:
    def state_dict(self) -> dict[str, int]:
        return {"step": 1}


def _task(dataset: Path) -> WSPTask:
    recipe = load_recipe("wsp", preset="tiny", overrides=[f"data.train={dataset}"])
    vocabulary = [entry["wnid"] for entry in json.loads((dataset / "vocab.json").read_text())]
    return WSPTask(recipe, num_classes=len(vocabulary), vocabulary=vocabulary)


@pytest.fixture
def source(tmp_path) -> dict:
    """A WSP output: its card (whose recipe names its dataset) and one complete checkpoint
    whose head is unlike a fresh one (fc is zero-initialised; here it is not)."""
    dataset = write_pretrain_dataset(tmp_path / "data", num_samples=8, samples_per_shard=8)
    task = _task(dataset)
    model = task.build_model()
    with torch.no_grad():
        for parameter in model.head.parameters():
            parameter.copy_(torch.randn_like(parameter))
    output = tmp_path / "wsp-before"
    output.mkdir()
    # The card's recipe as the trainer writes it (engine.trainer): what names the dataset.
    card = {"step": "wsp", "recipe": to_dict(task.recipe)}
    (output / "model.json").write_text(json.dumps(card))
    ctx = DistributedContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    checkpointer = Checkpointer(str(output), every_steps=1, keep_last=1, ctx=ctx)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    step = checkpointer.save(1, model, optimizer, _TrainState(), {})
    head = {k: v.clone() for k, v in model.head.state_dict().items()}
    return {"output": output, "dataset": dataset, "step": Path(step), "head": head}


def _fresh(dataset: Path) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = _task(dataset).build_model()
    return model, {k: v.clone() for k, v in model.head.state_dict().items()}


def _continue(model, source, dataset, caplog) -> tuple[dict, list[logging.LogRecord]]:
    vocabulary = _task(dataset).vocabulary
    with caplog.at_level(logging.INFO, logger="mawsflow.steps.wsp"):
        carried = continue_head(model, str(source["output"]), vocabulary)
    return carried, [r for r in caplog.records if r.name == "mawsflow.steps.wsp"]


def _assert_head(model, expected: dict[str, torch.Tensor]) -> None:
    head = model.head.state_dict()
    assert head.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(head[name], tensor), name


def test_an_intact_source_carries_its_head_over(source, caplog):
    # The control: the same source as below, intact, is copied from (so a fallback that
    # copied anyway would show in the tests below).
    model, _ = _fresh(source["dataset"])
    carried, records = _continue(model, source, source["dataset"], caplog)
    assert carried["classes_carried"] == len(_task(source["dataset"]).vocabulary)
    assert carried["checkpoint"].endswith(source["step"].name)
    _assert_head(model, source["head"])
    assert [r.getMessage() for r in records] == ["head continued"]


def test_without_a_complete_checkpoint_the_head_starts_afresh(source, caplog):
    # An interrupted save: the tensors are there, the mark that they are whole is not.
    (source["step"] / COMPLETE_FILE).unlink()
    model, initial = _fresh(source["dataset"])
    carried, records = _continue(model, source, source["dataset"], caplog)
    assert carried == {}
    _assert_head(model, initial)
    (warning,) = records
    assert warning.levelno == logging.WARNING
    assert warning.getMessage() == "the head starts afresh"
    assert warning.source == str(source["output"])
    assert warning.why == "it has no complete checkpoint, which holds the head"


@pytest.mark.parametrize("damage", ["dataset removed", "vocab.json of the wrong length"])
def test_with_an_unreadable_vocabulary_the_head_starts_afresh(source, damage, tmp_path, caplog):
    # The new run's data (and its vocabulary) is a copy; the source's own dataset is damaged.
    new_data = shutil.copytree(source["dataset"], tmp_path / "new-data")
    if damage == "dataset removed":
        shutil.rmtree(source["dataset"])
    else:
        vocab = json.loads((source["dataset"] / "vocab.json").read_text())
        (source["dataset"] / "vocab.json").write_text(json.dumps(vocab[:-1]))
    model, initial = _fresh(new_data)
    carried, records = _continue(model, source, new_data, caplog)
    assert carried == {}
    _assert_head(model, initial)
    (warning,) = records
    assert warning.levelno == logging.WARNING
    assert warning.getMessage() == "the head starts afresh"
    assert warning.why.startswith("its dataset's vocabulary cannot be read (")
    assert str(source["dataset"]) in warning.why
