"""Kinetics CSVs and SSv2's JSON labels → video shards (bytes unchanged), the video shard format,
and the generated moving-Fashion-MNIST videos whose motion labels need time."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mawsflow.data.eval_shards import SplitWriter, open_split, write_classes
from mawsflow.data.shards import samples_in_order
from mawsflow.data.video import ClipSampling, decode_clips, video_member
from mawsflow.data.video_shards import VideoSplitWriter, open_video_split
from mawsflow.dataset.video_demo import MOTIONS, encode_h264, write_video_demo
from mawsflow.errors import DataFormatError
from mawsflow.evaluation.video_converters import (
    kinetics_sources,
    read_kinetics_csv,
    ssv2_sources,
    write_video_dataset,
)
from test_video_data import ramp_video

pytestmark = pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists(),
    reason="Debian's dataset-fashion-mnist is not installed",
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("video_demo")
    write_video_demo(root, train=24, val=8, seed=3)
    return root


def _shard_videos(dataset: str, split: str) -> dict[int, list[bytes]]:
    out: dict[int, list[bytes]] = {}
    for raw in samples_in_order(open_video_split(dataset, split).shards):
        out.setdefault(int(raw["cls"]), []).append(video_member(raw))
    return out


def test_kinetics_csv_to_shards_keeps_the_bytes_and_counts_missing_videos(demo, tmp_path):
    names, splits = kinetics_sources(
        {"train": str(demo / "kinetics" / "train.csv"), "val": str(demo / "kinetics" / "val.csv")}
    )
    assert names == sorted(names) and len(names) <= 10
    rows = read_kinetics_csv(str(demo / "kinetics" / "train.csv"))
    assert len(rows) == 24 and rows[0][0] == str(demo / "videos" / "000000.mp4")
    # One listed video is gone, as in every Kinetics download.
    (demo / "videos" / "000005.mp4").rename(tmp_path / "away.mp4")
    try:
        counts = write_video_dataset(str(tmp_path / "k"), names, splits, samples_per_shard=10)
    finally:
        (tmp_path / "away.mp4").rename(demo / "videos" / "000005.mp4")
    assert counts.written == {"train": 23, "val": 8} and counts.missing == {"train": 1, "val": 0}
    split = open_video_split(str(tmp_path / "k"), "train")
    assert split.num_samples == 23 and split.shard_sizes == (10, 10, 3)
    sources = {
        (demo / "videos" / p.rsplit("/", 1)[-1]).read_bytes(): names.index(label)
        for p, label in rows
    }
    for label, videos in _shard_videos(str(tmp_path / "k"), "train").items():
        for video in videos:
            assert sources[video] == label, "bytes unchanged, label kept"


def test_slowfast_style_csv_with_label_indices_and_bad_rows(tmp_path):
    for i in range(3):
        (tmp_path / f"v{i}.mp4").write_bytes(ramp_video(6))
    (tmp_path / "train.csv").write_text("v0.mp4 2\nv1.mp4 0\n\nv2.mp4 1\n")
    names, splits = kinetics_sources({"train": str(tmp_path / "train.csv")})
    assert names == ["0", "1", "2"]
    assert [s.label for s in splits["train"]] == [2, 0, 1]
    named, _ = kinetics_sources({"train": str(tmp_path / "train.csv")}, ["a", "b", "c"])
    assert named == ["a", "b", "c"]
    (tmp_path / "bad.csv").write_text("path,label\nv0.mp4,dance,extra\n")
    with pytest.raises(DataFormatError, match=r"bad.csv, line 2: expected 'path,label'"):
        read_kinetics_csv(str(tmp_path / "bad.csv"))
    with pytest.raises(DataFormatError, match="no annotation file"):
        read_kinetics_csv(str(tmp_path / "none.csv"))
    (tmp_path / "named.csv").write_text("v0.mp4,dance\n")
    with pytest.raises(DataFormatError, match=r"labels not among the classes: \['dance'\]"):
        kinetics_sources({"train": str(tmp_path / "named.csv")}, ["swim"])


def test_ssv2_json_labels_to_shards(demo, tmp_path):
    names, splits = ssv2_sources(
        str(demo / "ssv2" / "labels.json"),
        {"train": str(demo / "ssv2" / "train.json"), "val": str(demo / "ssv2" / "validation.json")},
        str(demo / "videos"),
        ext="mp4",
    )
    assert names == [t.replace("[", "").replace("]", "") for t, _ in MOTIONS]
    counts = write_video_dataset(str(tmp_path / "s"), names, splits, samples_per_shard=16)
    assert counts.written == {"train": 24, "val": 8}
    entries = json.loads((demo / "ssv2" / "validation.json").read_text())
    by_bytes = {
        (demo / "videos" / f"{e['id']}.mp4").read_bytes(): names.index(
            e["template"].replace("[", "").replace("]", "")
        )
        for e in entries
    }
    for label, videos in _shard_videos(str(tmp_path / "s"), "val").items():
        assert all(by_bytes[v] == label for v in videos)
    (tmp_path / "labels.json").write_text(json.dumps({"Moving something up": "1"}))
    with pytest.raises(DataFormatError, match="indices must be 0"):
        ssv2_sources(str(tmp_path / "labels.json"), {}, str(demo / "videos"))
    (tmp_path / "labels.json").write_text(json.dumps({"Moving something up": "0"}))
    (tmp_path / "train.json").write_text(json.dumps([{"id": "1", "template": "Dropping [x]"}]))
    with pytest.raises(DataFormatError, match="template 'Dropping x' not in"):
        ssv2_sources(str(tmp_path / "labels.json"), {"train": str(tmp_path / "train.json")}, "v")


def test_image_and_video_datasets_are_not_read_as_each_other(tmp_path):
    images, videos = str(tmp_path / "images"), str(tmp_path / "videos")
    write_classes(images, ["a"])
    writer = SplitWriter(images, "train", 1)
    writer.write("k", b"png", "png", 0)
    writer.close()
    with pytest.raises(DataFormatError, match=r"format must be 'mawsflow.video/1'"):
        open_video_split(images, "train")
    write_classes(videos, ["a", "b"])
    writer = VideoSplitWriter(videos, "train", 2, samples_per_shard=2)
    for i in range(3):
        writer.write(f"v{i}", b"mp4 bytes", "mp4", i % 2)
    assert writer.close()["format"] == "mawsflow.video/1"
    split = open_video_split(videos, "train")
    assert split.shard_sizes == (2, 1) and split.num_samples == 3
    with pytest.raises(DataFormatError, match=r"format must be 'mawsflow.classification/1'"):
        open_split(videos, "train")


@pytest.mark.parametrize(
    ("key", "ext", "label", "message"),
    [
        ("dir/clip", "mp4", 0, r"must not contain '\.' or '/'"),
        ("clip.1", "mp4", 0, r"must not contain '\.' or '/'"),
        ("clip", "png", 0, r"video extension 'png'"),
        ("clip", "mp4", 2, r"label 2 outside 2 classes"),
    ],
)
def test_the_video_writer_refuses_bad_samples(tmp_path, key, ext, label, message):
    writer = VideoSplitWriter(str(tmp_path), "train", 2)
    with pytest.raises(DataFormatError, match=message):
        writer.write(key, b"video", ext, label)
    with pytest.raises(DataFormatError, match="received no samples"):
        writer.close()


def _shift(clip: np.ndarray) -> tuple[int, int]:
    """The translation from the first frame to the second (phase correlation)."""
    first, second = (clip[i].mean(axis=-1) - clip[i].mean() for i in (0, 1))
    corr = np.fft.ifft2(np.fft.fft2(second) * np.conj(np.fft.fft2(first))).real
    dy, dx = np.unravel_index(corr.argmax(), corr.shape)
    h, w = corr.shape
    return int(dy if dy <= h // 2 else dy - h), int(dx if dx <= w // 2 else dx - w)


def test_generated_videos_move_as_labelled_and_one_frame_does_not_tell_the_direction(demo):
    entries = json.loads((demo / "ssv2" / "train.json").read_text())
    sampling = ClipSampling(2, 2 / 12)
    positions = {t: [] for t, _ in MOTIONS}
    for entry in entries:
        data = (demo / "videos" / f"{entry['id']}.mp4").read_bytes()
        assert data[4:8] == b"ftyp", "an MP4 file"
        (clip,) = decode_clips(data, sampling, [0.0], short_side=48)
        step = dict(MOTIONS)[entry["template"]]
        dy, dx = _shift(clip)
        assert np.sign(dy) == step[0] and np.sign(dx) == step[1], entry
        assert 2 <= abs(dy) + abs(dx) <= 4
        # Where the item is in the first frame (its brightest column/row).
        gray = clip[0].mean(axis=-1)
        positions[entry["template"]].append((gray.sum(1).argmax(), gray.sum(0).argmax()))
    assert all(len(p) >= 2 for p in positions.values()), "every direction is drawn"
    # Start positions are uniform on the torus whatever the direction (not checkable exactly
    # on 24 videos; here: each direction starts in both halves of the canvas).
    starts = [x for p in positions.values() for _, x in p]
    assert min(starts) < 32 <= max(starts)
    assert encode_h264(np.zeros((2, 32, 32, 3), np.uint8), 12)[4:8] == b"ftyp"
