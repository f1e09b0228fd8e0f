"""`mawsflow prepare-eval --layout kinetics|ssv2` through the CLI, on the generated moving
Fashion-MNIST videos in both annotation formats with missing, corrupt, empty and too-short
videos planted: the usable videos are written unchanged, the others skipped and counted."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from mawsflow.cli import main as cli_main
from mawsflow.data.shards import samples_in_order
from mawsflow.data.video import ClipSampling, decode_clips, video_member
from mawsflow.data.video_probe import TooShortVideo, probe_video
from mawsflow.data.video_shards import open_video_split
from mawsflow.dataset.video_demo import MOTIONS, write_video_demo
from mawsflow.errors import ConfigError, DataFormatError
from test_video_data import ramp_video

pytestmark = pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists(),
    reason="Debian's dataset-fashion-mnist is not installed",
)

# Broken videos planted in the train split: name → (bytes, the reason it is skipped).
BROKEN = {
    "broken_corrupt": (lambda: ramp_video(12)[:700], "corrupt"),  # cut before the MP4 index
    "broken_garbage": (lambda: b"not a video at all" * 8, "corrupt"),
    "broken_empty": (lambda: b"", "empty"),
    "broken_short": (lambda: ramp_video(3), "too_short"),  # 3 frames at 12 fps: 0.25 s
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """12 train + 4 val videos in both formats, the broken ones and a missing one added to the
    train annotations of each."""
    root = tmp_path_factory.mktemp("video_demo")
    write_video_demo(root, train=12, val=4, seed=5)
    entries = json.loads((root / "ssv2" / "train.json").read_text())
    rows = (root / "kinetics" / "train.csv").read_text().splitlines()
    for name, (make, _) in [*BROKEN.items(), ("broken_missing", (None, "missing"))]:
        if make is not None:
            (root / "videos" / f"{name}.mp4").write_bytes(make())
        entries.append({"id": name, "template": MOTIONS[0][0], "label": "x"})
        rows.append(f"../videos/{name}.mp4,{rows[1].rsplit(',', 1)[1]}")
    (root / "ssv2" / "train.json").write_text(json.dumps(entries))
    (root / "kinetics" / "train.csv").write_text("\n".join(rows) + "\n")
    return root


def _prepare(*argv: str) -> int:
    return cli_main(["prepare-eval", *argv])


def _expected_skips() -> dict[str, int]:
    skips = {"skipped_corrupt": 0, "skipped_empty": 0, "skipped_too_short": 0}
    for _, reason in BROKEN.values():
        skips[f"skipped_{reason}"] += 1
    return skips


def test_kinetics_layout_skips_and_counts_broken_videos(demo, tmp_path):
    out = tmp_path / "k400"
    code = _prepare(
        "--layout", "kinetics", "--source", str(demo / "kinetics"), "--output", str(out),
        "--samples-per-shard", "5",
    )  # fmt: skip
    assert code == 0
    conversion = json.loads((out / "conversion.json").read_text())
    assert conversion["probed"] and conversion["min_seconds"] == pytest.approx(1.35)
    assert conversion["splits"] == {
        "train": {"written": 12, "missing": 1, **_expected_skips()},
        "val": {"written": 4, "missing": 0, **dict.fromkeys(_expected_skips(), 0)},
    }
    train = open_video_split(str(out), "train")
    assert train.num_samples == 12 and train.shard_sizes == (5, 5, 2)
    # The kept videos are the generated ones, bytes unchanged, and they decode.
    originals = {p.read_bytes() for p in (demo / "videos").glob("0*.mp4")}
    written = [video_member(raw) for raw in samples_in_order(train.shards)]
    assert set(written) <= originals and len(set(written)) == 12
    (clip,) = decode_clips(written[0], ClipSampling(4, 1.0), [0.0], short_side=32)
    assert clip.shape[0] == 4
    classes = json.loads((out / "classes.json").read_text())
    assert classes == sorted(classes) and len(classes) <= 10


def test_ssv2_layout_through_the_cli_with_its_video_folder(demo, tmp_path, capsys):
    out = tmp_path / "ssv2"
    code = _prepare(
        "--layout", "ssv2", "--source", str(demo / "ssv2"), "--output", str(out),
        "--video-dir", str(demo / "videos"), "--video-ext", "mp4", "--min-seconds", "1",
    )  # fmt: skip
    assert code == 0
    splits = json.loads((out / "conversion.json").read_text())["splits"]
    assert splits["train"] == {"written": 12, "missing": 1, **_expected_skips()}
    assert splits["val"]["written"] == 4 and open_video_split(str(out), "val").num_samples == 4
    assert json.loads((out / "classes.json").read_text()) == [
        template.replace("[", "").replace("]", "") for template, _ in MOTIONS
    ]
    # Each skip is logged (JSON lines on stderr) with its reason and video, and the counts.
    records = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    skipped = [r["message"].split() for r in records if r["message"].startswith("skipping")]
    assert sorted((words[1], Path(words[-1]).stem) for words in skipped) == sorted(
        (reason, name) for name, (_, reason) in BROKEN.items()
    )
    (done,) = [r for r in records if r["message"] == "videos converted"]
    assert done["splits"] == splits


def test_without_the_probe_every_existing_video_is_copied(demo, tmp_path):
    out = tmp_path / "unprobed"
    _prepare(
        "--layout", "kinetics", "--source", str(demo / "kinetics"), "--output", str(out),
        "--no-probe", "--limit", "20",
    )  # fmt: skip
    conversion = json.loads((out / "conversion.json").read_text())
    assert not conversion["probed"] and conversion["min_seconds"] is None
    # Only the missing one is left out: the loaders count the broken ones when they read them.
    assert conversion["splits"]["train"] == {"written": 12 + len(BROKEN), "missing": 1}


def test_video_layouts_refuse_bad_options_and_sources_that_leave_nothing(demo, tmp_path):
    with pytest.raises(ConfigError, match="--real-labels: image layouts only"):
        _prepare(
            "--layout", "kinetics", "--source", str(demo / "kinetics"),
            "--output", str(tmp_path / "x"), "--real-labels", "real.json",
        )  # fmt: skip
    with pytest.raises(ConfigError, match="--min-seconds needs the probe"):
        _prepare(
            "--layout", "kinetics", "--source", str(demo / "kinetics"),
            "--output", str(tmp_path / "x"), "--no-probe", "--min-seconds", "1",
        )  # fmt: skip
    with pytest.raises(DataFormatError, match="no labels.json"):
        _prepare("--layout", "ssv2", "--source", str(demo), "--output", str(tmp_path / "x"))
    # The generated videos last 2 s: a 3 s minimum leaves none, which names what happened.
    with pytest.raises(DataFormatError, match=r"split .+: none of its \d+ videos could be used"):
        _prepare(
            "--layout", "kinetics", "--source", str(demo / "kinetics"),
            "--output", str(tmp_path / "y"), "--min-seconds", "3",
        )  # fmt: skip
    with pytest.raises(TooShortVideo):
        probe_video((demo / "videos" / "000000.mp4").read_bytes(), 3.0)


def test_probing_without_pyav_names_the_way_out(demo, tmp_path, monkeypatch):
    # As in the CPU-only image: PyAV cannot be imported.
    monkeypatch.setitem(sys.modules, "av", None)
    monkeypatch.delitem(sys.modules, "mawsflow.data.video_probe")
    with pytest.raises(ConfigError, match="probing videos needs PyAV.*--no-probe"):
        _prepare(
            "--layout", "kinetics", "--source", str(demo / "kinetics"),
            "--output", str(tmp_path / "x"),
        )  # fmt: skip
    assert _prepare(
        "--layout", "kinetics", "--source", str(demo / "kinetics"),
        "--output", str(tmp_path / "y"), "--no-probe",
    ) == 0  # fmt: skip


def test_kinetics_integer_labels_take_their_names_from_a_file(tmp_path):
    source = tmp_path / "k"
    source.mkdir()
    for i in range(3):
        (source / f"v{i}.mp4").write_bytes(ramp_video(12 + i))  # 1 s at 12 fps, distinct
    (source / "val.csv").write_text("v0.mp4 2\nv1.mp4 0\nv2.mp4 1\n")  # PySlowFast's form
    (tmp_path / "names.txt").write_text("abseiling\narchery\n\nbaking cookies\n")
    out = tmp_path / "out"
    _prepare(
        "--layout", "kinetics", "--source", str(source), "--output", str(out),
        "--class-names", str(tmp_path / "names.txt"), "--min-seconds", "0.5",
    )  # fmt: skip
    assert json.loads((out / "classes.json").read_text()) == [
        "abseiling",
        "archery",
        "baking cookies",
    ]
    split = open_video_split(str(out), "val")
    by_bytes = {(source / f"v{i}.mp4").read_bytes(): label for i, label in enumerate((2, 0, 1))}
    assert sorted(
        (by_bytes[video_member(raw)], int(raw["cls"])) for raw in samples_in_order(split.shards)
    ) == [(0, 0), (1, 1), (2, 2)]
    (tmp_path / "short.txt").write_text("abseiling\n")
    with pytest.raises(DataFormatError, match="labels go up to 2 but 1 classes are named"):
        _prepare(
            "--layout", "kinetics", "--source", str(source), "--output", str(tmp_path / "x"),
            "--class-names", str(tmp_path / "short.txt"),
        )  # fmt: skip
