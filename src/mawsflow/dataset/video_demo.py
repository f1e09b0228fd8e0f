"""A small real video dataset for the tests and the demo: Fashion-MNIST items moving over frames.

No video data ships on the package registries, so the project makes its own. Every video is a
real encoded file (H.264 through PyAV's libx264, yuv420p, in MP4) of a real image: one
Fashion-MNIST item (Debian's dataset-fashion-mnist) on a dark, noisy background, moving at a
constant speed in one of four directions. The canvas is a torus (the item leaves one side and
comes back on the other) and the start position is uniform, so every single frame shows the
item at a uniformly random place whatever the direction: the motion labels need time, as
Something-Something-v2's do, while the item's class is visible in any one frame, as Kinetics'
appearance-heavy classes are.

Written in the two annotation formats the converters read (`mawsflow.evaluation.video_converters`):

```
<out>/videos/<id>.mp4
<out>/kinetics/{train,val}.csv           path,label (the item's class name), header row
<out>/ssv2/labels.json                   {"Moving something up": "0", ...}
<out>/ssv2/{train,validation}.json       [{"id", "label", "template", "placeholders"}, ...]
```

Everything is decided by an RNG seeded with (seed, index): the same arguments give the same
videos.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from mawsflow.data.fashion_mnist import CLASSES, DEBIAN_FASHION_MNIST, load_fashion_mnist

log = logging.getLogger(__name__)

# SSv2 templates for the four directions (real SSv2 classes), and each one's unit step (dy, dx).
MOTIONS: tuple[tuple[str, tuple[int, int]], ...] = (
    ("Moving [something] up", (-1, 0)),
    ("Moving [something] down", (1, 0)),
    ("Moving [something] from left to right", (0, 1)),
    ("Moving [something] from right to left", (0, -1)),
)


@dataclass(frozen=True)
class VideoDemoSpec:
    """Shape of the generated videos: height × width canvases, `frames` frames at `fps`,
    speeds in pixels per frame."""

    height: int = 48
    width: int = 64
    frames: int = 24
    fps: int = 12
    min_speed: int = 2
    max_speed: int = 4

    def __post_init__(self) -> None:
        if self.height < 28 or self.width < 28 or self.height % 2 or self.width % 2:
            raise ValueError(
                f"canvas {self.height}×{self.width}: sides must be even (yuv420p) and hold a "
                f"28×28 item"
            )
        if self.frames < 2 or self.fps < 1 or not 0 < self.min_speed <= self.max_speed:
            raise ValueError(f"invalid video demo spec {self}")


def template_label(template: str) -> str:
    """SSv2's labels.json key of a template: the brackets dropped (PySlowFast's rule)."""
    return template.replace("[", "").replace("]", "")


def render_frames(
    item: np.ndarray,
    step: tuple[int, int],
    speed: int,
    spec: VideoDemoSpec,
    rng: np.random.Generator,
) -> np.ndarray:
    """uint8 [frames, H, W, 3]: `item` (28×28 gray) moving by `speed`·`step` per frame."""
    background = rng.integers(0, 40, size=(spec.height, spec.width), dtype=np.uint8)
    canvas = background.copy()
    canvas[:28, :28] = np.maximum(background[:28, :28], item)
    start = (int(rng.integers(spec.height)), int(rng.integers(spec.width)))
    tint = rng.uniform(0.6, 1.0, size=3)
    frames = []
    for t in range(spec.frames):
        shift = (start[0] + step[0] * speed * t, start[1] + step[1] * speed * t)
        gray = np.roll(canvas, shift, axis=(0, 1)).astype(np.float32)
        frames.append(np.clip(gray[..., None] * tint, 0, 255).astype(np.uint8))
    return np.stack(frames)


def encode_h264(frames: np.ndarray, fps: int) -> bytes:
    """MP4 bytes of uint8 [T, H, W, 3] frames (libx264, yuv420p)."""
    out = io.BytesIO()
    with av.open(out, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        # Few threads and no lookahead: small files, written fast and the same every time.
        stream.options = {"preset": "veryfast", "crf": "20", "threads": "1"}
        for pixels in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()


def write_video_demo(
    out: str | Path,
    *,
    train: int,
    val: int,
    seed: int = 0,
    spec: VideoDemoSpec | None = None,
    fashion_mnist: str = DEBIAN_FASHION_MNIST,
) -> dict[str, int]:
    """Generate `train` + `val` videos with both annotation sets under the local folder `out`;
    returns the counts per split."""
    spec = spec or VideoDemoSpec()
    if train < 1 or val < 1:
        raise ValueError(f"need at least one video per split, got train={train} val={val}")
    root = Path(out)
    images, labels = load_fashion_mnist(fashion_mnist, "train")
    if train + val > len(images):
        raise ValueError(f"{train + val} videos asked for, Fashion-MNIST has {len(images)} items")
    (root / "videos").mkdir(parents=True, exist_ok=True)
    (root / "kinetics").mkdir(exist_ok=True)
    (root / "ssv2").mkdir(exist_ok=True)
    motion_index = {template_label(t): str(i) for i, (t, _) in enumerate(MOTIONS)}
    (root / "ssv2" / "labels.json").write_text(json.dumps(motion_index, indent=1))
    order = np.random.default_rng(seed).permutation(len(images))[: train + val]
    splits: Sequence[tuple[str, str, range]] = (
        ("train", "train", range(train)),
        ("val", "validation", range(train, train + val)),
    )
    for kinetics_name, ssv2_name, indices in splits:
        rows: list[tuple[str, str]] = []
        entries: list[dict[str, object]] = []
        for i in indices:
            rng = np.random.default_rng([seed, i])
            item = int(order[i])
            template, step = MOTIONS[int(rng.integers(len(MOTIONS)))]
            speed = int(rng.integers(spec.min_speed, spec.max_speed + 1))
            frames = render_frames(images[item], step, speed, spec, rng)
            video_id = f"{i:06d}"
            (root / "videos" / f"{video_id}.mp4").write_bytes(encode_h264(frames, spec.fps))
            name = CLASSES[int(labels[item])]
            rows.append((f"../videos/{video_id}.mp4", name))
            entries.append(
                {
                    "id": video_id,
                    "label": template.replace("[something]", name.lower()),
                    "template": template,
                    "placeholders": [name.lower()],
                }
            )
        with open(root / "kinetics" / f"{kinetics_name}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(("path", "label"))
            writer.writerows(rows)
        (root / "ssv2" / f"{ssv2_name}.json").write_text(json.dumps(entries, indent=1))
    log.info("video demo written", extra={"out": str(root), "train": train, "val": val})
    return {"train": train, "val": val}
