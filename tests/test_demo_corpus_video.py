"""`mawsflow demo-corpus --video-out`: the demo video datasets of the pipeline's video branch,
written in the Kinetics and SSv2 annotation formats and converted by prepare-eval's code into
video datasets (K400-style labels: the item's class; SSv2-style: the direction of motion), every
video long enough for SSv2's probe. Without PyAV the option refuses before writing anything."""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path

import pytest

from mawsflow.cli import main as cli_main
from mawsflow.data.fashion_mnist import CLASSES, DEBIAN_FASHION_MNIST
from mawsflow.data.shards import samples_in_order
from mawsflow.data.video import video_member
from mawsflow.data.video_shards import open_video_split

pytestmark = pytest.mark.skipif(
    not Path(DEBIAN_FASHION_MNIST, "train-images-idx3-ubyte.gz").is_file(),
    reason="Debian's dataset-fashion-mnist is not installed",
)
SMALL = ["--num-images", "40", "--eval-train-images", "20", "--eval-test-images", "20"]


def _demo(root: Path, *extra: str) -> int:
    out = ["--corpus-out", str(root / "corpus"), "--eval-out", str(root / "eval")]
    return cli_main(["demo-corpus", *out, *SMALL, *extra])


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> tuple[Path, dict]:
    pytest.importorskip("av")
    root = tmp_path_factory.mktemp("demo_video")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = _demo(
            root, "--video-out", str(root / "video"), "--video-train", "12", "--video-test", "6"
        )
    assert code == 0
    return root / "video", json.loads(printed.getvalue())


def test_both_video_datasets_are_written_and_counted(videos):
    out, summary = videos
    for name in ("k400", "ssv2"):
        conversion = json.loads((out / name / "conversion.json").read_text())
        assert conversion["probed"], name
        # Nothing skipped: every demo video is longer than half the paper's clip (SSv2: 2 s).
        for split, written in (("train", 12), ("val", 6)):
            counts = conversion["splits"][split]
            assert counts["written"] == written, (name, split)
            assert sum(v for k, v in counts.items() if k.startswith("skipped_")) == 0, counts
            assert open_video_split(str(out / name), split).num_samples == written
        assert summary["video"][name] == conversion["splits"]
    assert conversion["min_seconds"] == pytest.approx(2.0)  # ssv2's limit applied


def test_labels_need_one_frame_for_k400_and_time_for_ssv2(videos):
    out, _ = videos
    k400 = json.loads((out / "k400" / "classes.json").read_text())
    assert set(k400) <= set(CLASSES) and len(k400) > 1
    ssv2 = json.loads((out / "ssv2" / "classes.json").read_text())
    assert ssv2 == [
        "Moving something up",
        "Moving something down",
        "Moving something from left to right",
        "Moving something from right to left",
    ]

    # The same encoded videos under both annotations, bytes unchanged.
    def members(name: str) -> set[bytes]:
        split = open_video_split(str(out / name), "train")
        return {video_member(raw) for raw in samples_in_order(split.shards)}

    assert members("k400") == members("ssv2")
    assert all(video[4:8] == b"ftyp" for video in members("k400"))  # MP4 files


def test_video_out_without_pyav_refuses_before_writing(tmp_path, monkeypatch, capsys):
    # As in the CPU-only demo-corpus image: `import av` fails.
    monkeypatch.setitem(sys.modules, "av", None)
    assert _demo(tmp_path, "--video-out", str(tmp_path / "video")) == 1
    assert "--video-out needs PyAV" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # no corpus, no evaluation data, no videos


def test_video_counts_must_be_positive(tmp_path, capsys):
    with pytest.raises(SystemExit):
        _demo(tmp_path, "--video-out", str(tmp_path / "v"), "--video-train", "0")
    assert "expected a positive integer, got 0" in capsys.readouterr().err
