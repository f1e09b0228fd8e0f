"""`mawsflow eval-video` through the CLI: a finetuned video model (an inflated tiny trunk, written
as `finetune-video` writes its output) scored with the multi-view protocol on real encoded
videos, the broken ones counted, the result in the form the report reads. And the KFP
components of the video branch (video-dataset, finetune-video, evaluate-video), their bodies
run on those files (the training job stood in for)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mawsflow.cli import main as cli_main
from mawsflow.data.eval_shards import SplitWriter, write_classes
from mawsflow.data.members import CorruptSample
from mawsflow.data.shards import samples_in_order
from mawsflow.data.video import ClipSampling, MultiView, video_member
from mawsflow.data.video_shards import open_video_split
from mawsflow.errors import DataFormatError
from mawsflow.evaluation.results import model_lineage, read_result
from mawsflow.evaluation.video_classify import evaluate_video_classifier, normalize_clips
from mawsflow.evaluation.video_converters import VideoSource, write_video_dataset
from mawsflow.models.artifacts import write_model
from mawsflow.models.video_vit import from_image_trunk, load_video_classifier
from mawsflow.models.vit import create_trunk
from mawsflow.orchestration import components, task_runtime
from mawsflow.orchestration.artifact_uris import dataset_location, write_reference
from test_video_data import ramp_video
from trunk_artifacts import write_trunk_output

NUM_CLASSES = 4
FAVOURED = 2  # the class the model is made to predict for every video
VIDEO = {
    "num_frames": 4,
    "clip_seconds": 0.5,
    "tubelet_size": 2,
    "inflation": "average",
    "relative_position": True,
    "test_clips": 2,
    "test_crops": 3,
    "normalize": True,
}


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory) -> Path:
    """A finetune-video output of a MAE→WSP trunk whose head always says FAVOURED: zero weights,
    a bias on that class, so the expected accuracy follows from the labels alone."""
    root = tmp_path_factory.mktemp("video_eval_model")
    wsp = write_trunk_output(root / "wsp", step="wsp", init="mae")
    torch.manual_seed(0)
    model = from_image_trunk(
        create_trunk("vit_tiny_p4", img_size=32),
        num_frames=VIDEO["num_frames"],
        tubelet_size=VIDEO["tubelet_size"],
        num_classes=NUM_CLASSES,
        inflation=VIDEO["inflation"],
        relative_position=VIDEO["relative_position"],
    )
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.nn.functional.one_hot(torch.tensor(FAVOURED), NUM_CLASSES))
    out = root / "finetuned"
    card = {
        "step": "finetune-video",
        "arch": "vit_tiny_p4",
        "img_size": 32,
        "num_classes": NUM_CLASSES,
        "init_checkpoint": str(wsp),
        "dataset": str(root / "k400"),
        "recipe": {"init_checkpoint": str(wsp)},
        "video": VIDEO,
    }
    write_model(str(out), model.state_dict(), card, {"steps": 1})
    return out


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """A video dataset: 6 good videos (labels 0, 1, 2, 2, 3, 2) and a corrupt, an empty and a
    too-short one in val, copied unchecked as --no-probe would."""
    root = tmp_path_factory.mktemp("video_eval_data")
    labels = [0, 1, 2, 2, 3, 2]
    files = []
    for i, label in enumerate(labels):
        files.append((f"good{i}.mp4", ramp_video(12 + i), label))
    files += [
        ("corrupt.mp4", ramp_video(12)[:700], 0),
        ("empty.mp4", b"", 1),
        ("short.mp4", ramp_video(1), 3),
    ]
    sources = []
    for name, data, label in files:
        (root / name).write_bytes(data)
        sources.append(VideoSource(str(root / name), label))
    out = root / "dataset"
    write_video_dataset(
        str(out), [f"c{k}" for k in range(NUM_CLASSES)], {"val": sources}, samples_per_shard=4
    )
    return out


def _records(err: str) -> list[dict]:
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


def test_eval_video_scores_every_video_over_its_views_and_counts_the_broken(
    finetuned, videos, tmp_path, capsys
):
    out = tmp_path / "result"
    code = cli_main(
        [
            "eval-video", "--model", str(finetuned), "--test-set", f"K400={videos}",
            "--output", str(out), "--num-workers", "0", "--device", "cpu",
        ]
    )  # fmt: skip
    assert code == 0
    result = read_result(str(out))
    assert result.step == "eval-video" and result.pretraining == "MAE→WSP"
    # Every prediction is FAVOURED: 3 of the 6 usable videos are labelled so.
    assert result.table == {"K400": pytest.approx(50.0)}
    metrics = result.metrics
    assert metrics["k400_top1"] == pytest.approx(50.0)
    assert metrics["k400_num_samples"] == 6
    assert metrics["k400_skipped_corrupt"] == 1
    assert metrics["k400_skipped_empty"] == 1
    assert metrics["k400_skipped_too_short"] == 1
    # The views are the card's: 2 temporal clips × 3 spatial crops.
    (evaluated,) = [r for r in _records(capsys.readouterr().err) if r["message"] == "evaluated"]
    assert evaluated["views"] == 6
    # A finetune-video output has a lineage: the report and the model publishing read it.
    assert model_lineage(str(finetuned)) == "MAE→WSP"


def test_views_can_be_changed_and_the_logits_are_averaged_over_them(finetuned, videos, tmp_path):
    # Another head: its score depends on the views, so the averaging is what is checked.
    model, _ = load_video_classifier(str(finetuned))
    torch.manual_seed(1)
    with torch.no_grad():
        model.head.weight.normal_(std=1.0)
    split = open_video_split(str(videos), "val")
    views = MultiView(1, 2, 32)
    sampling = ClipSampling(VIDEO["num_frames"], VIDEO["clip_seconds"])
    metrics = evaluate_video_classifier(
        model, split, sampling, views, device=torch.device("cpu"), num_workers=0
    )
    # Reference: each good video's views through the model one at a time, logits averaged.
    correct = 0
    for raw in samples_in_order(split.shards):
        try:
            video_views = views(video_member(raw), sampling)
        except CorruptSample:  # the broken ones, counted above
            continue
        logits = torch.stack([model(normalize_clips(v[None]))[0] for v in video_views])
        correct += int(logits.mean(0).argmax() == int(raw["cls"]))
    assert metrics["num_samples"] == 6
    assert metrics["top1"] == pytest.approx(100 * correct / 6)
    with pytest.raises(SystemExit):
        cli_main(
            [
                "eval-video", "--model", str(finetuned), "--test-set", f"K400={videos}",
                "--output", str(tmp_path / "r"), "--test-clips", "0",
            ]
        )  # fmt: skip


# --------------------------------------------------------------------------------------------
# The components: video-dataset, finetune-video and evaluate-video, their bodies run here.


class _Artifact:
    """What a component body sees of a KFP artifact: its URI and metadata (and, for Metrics,
    log_metric)."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.metadata: dict = {}
        self.logged: dict[str, float] = {}

    def log_metric(self, metric: str, value: float) -> None:
        self.logged[metric] = value


def _video_dataset_artifact(videos: Path, tmp_path: Path) -> _Artifact:
    # video-dataset needs a train split too: the same videos serve as one.
    split = open_video_split(str(videos), "val")
    sources = [
        VideoSource(str(tmp_path / f"t{i}.mp4"), int(raw["cls"]))
        for i, raw in enumerate(samples_in_order(split.shards))
    ]
    for source, raw in zip(sources, samples_in_order(split.shards), strict=True):
        Path(source.uri).write_bytes(video_member(raw))
    dataset = tmp_path / "with-train"
    write_video_dataset(
        str(dataset), split.classes, {"train": sources, "val": sources}, samples_per_shard=4
    )
    out = _Artifact(str(tmp_path / "task" / "dataset"))
    components.video_dataset.python_func(
        uri=str(dataset), name="K400", fingerprint="f" * 64, dataset=out
    )
    return out


def test_video_dataset_component_checks_video_shards_and_refuses_images(videos, tmp_path):
    out = _video_dataset_artifact(videos, tmp_path)
    assert dataset_location(out.uri) == str(tmp_path / "with-train")
    assert out.metadata["name"] == "K400" and out.metadata["fingerprint"] == "f" * 64
    images = tmp_path / "images"
    write_classes(str(images), ["a"])
    for split in ("train", "val"):
        writer = SplitWriter(str(images), split, 1)
        writer.write("k", b"png", "png", 0)
        writer.close()
    with pytest.raises(DataFormatError, match=r"format must be 'mawsflow.video/1'"):
        components.video_dataset.python_func(
            uri=str(images), name="K400", fingerprint="", dataset=_Artifact(str(tmp_path / "x"))
        )
    with pytest.raises(ValueError, match="name is empty"):
        components.video_dataset.python_func(
            uri=str(tmp_path / "with-train"), name=" ", fingerprint="", dataset=out
        )


def test_finetune_video_component_launches_the_variant_and_publishes_a_model_with_lineage(
    finetuned, tmp_path, monkeypatch
):
    launched = []

    def fake_launch(step, argv, launch, env=None):
        # The job: writes the finetuned model where the step's --set output= says.
        launched.append((step, list(argv), launch))
        (output,) = [a.split("=", 1)[1] for a in argv if a.startswith("output=")]
        card = json.loads((finetuned / "model.json").read_text())
        write_model(output, load_video_classifier(str(finetuned))[0].state_dict(), card, {"x": 1})

    monkeypatch.setattr(task_runtime, "launch_training", fake_launch)
    pretrained = _Artifact(str(finetuned.parent / "wsp" / "model.json"))
    dataset = _Artifact(str(tmp_path / "ref"))
    write_reference(dataset.uri, str(tmp_path / "k400"))
    model, metrics = _Artifact(str(tmp_path / "task" / "model")), _Artifact(str(tmp_path / "m"))
    launch = {
        "backend": "local", "nodes": 1, "gpus_per_node": 0, "job_image": "", "shm_size": "",
        "node_selector": {}, "tolerations": [],
    }  # fmt: skip
    components.finetune_video.python_func(
        pretrained=pretrained, video_dataset=dataset, variant="ssv2", preset="tiny",
        arch="", epochs=0.0, model=model, metrics=metrics, **launch,
    )  # fmt: skip
    ((step, argv, how),) = launched
    assert step == "finetune-video" and how.backend == "local"
    assert argv[:4] == ["--variant", "ssv2", "--preset", "tiny"]
    settings = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    assert f"init_checkpoint={finetuned.parent / 'wsp'}" in settings
    assert f"data.train={tmp_path / 'k400'}" in settings
    assert f"output={tmp_path / 'task' / 'model'}" in settings
    assert not [s for s in settings if s.startswith(("model.arch", "schedule.epochs"))]
    assert model.uri.endswith("/model.json") and model.metadata["pretraining"] == "MAE→WSP"
    assert metrics.logged == {"x": 1.0}
    with pytest.raises(ValueError, match="Table 16's columns are k400 and ssv2"):
        components.finetune_video.python_func(
            pretrained=pretrained, video_dataset=dataset, variant="in1k", preset="tiny",
            arch="", epochs=0.0, model=model, metrics=metrics, **launch,
        )  # fmt: skip


def test_evaluate_video_component_writes_the_result_the_report_reads(finetuned, videos, tmp_path):
    dataset = _video_dataset_artifact(videos, tmp_path)
    result = _Artifact(str(tmp_path / "task" / "result"))
    components.evaluate_video.python_func(
        finetuned=_Artifact(str(finetuned / "model.json")),
        video_dataset=dataset,
        eval_name="K400",
        loader_workers=0,
        result=result,
    )
    read = read_result(result.uri)
    assert read.step == "eval-video" and read.table == {"K400": pytest.approx(50.0)}
    assert result.logged["k400_top1"] == pytest.approx(50.0)
    assert result.logged["k400_skipped_corrupt"] == 1.0
