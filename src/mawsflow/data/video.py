"""Video clips: decoding with PyAV, the paper's clip sampling, and the multi-view test protocol.

A clip is `num_frames` frames spread evenly over `clip_seconds` of the video (Appendix B: 32
frames of a 2.7 s clip for K400, of a 4 s clip for SSv2). Where the paper is silent this follows
facebookresearch/mae_st (its `util/decoder`, from PySlowFast):

- the frame indices of a clip are `linspace(start, start + clip_frames − 1, num_frames)` rounded
  down and clamped to the video, so a video shorter than the clip repeats its last frame;
- training draws the start uniformly over the video; test view k of K starts at
  `(frames − clip_frames) · k / K`;
- training frames are scaled so the short side is `augment.short_side_scale` (Table 16: 256)
  and then cropped by one RandomResizedCrop for the whole clip; test frames are scaled so the
  short side is the crop size and cut into `test_crops` crops along the long side
  (left/top, centre, right/bottom for 3); the model's logits are averaged over the
  K temporal × `test_crops` spatial views.

Augmentations are the same for every frame of a clip: one crop box, one flip, and RandAugment's
operations and magnitudes drawn once (its generators are re-seeded identically before each
frame). Random erasing (one box through all frames, mae_st's "cube" erasing) and mixup/cutmix
act on the normalised batch on the device (`erase_clips`), as timm's loaders do.

Decoding stops after the last frame a clip needs, and only the frames a clip uses are converted
to RGB, scaled by FFmpeg's swscale in the same pass (`bench/bench_video_decode.py` measures
this against a plain PyAV loop). A video that cannot be used raises a `CorruptSample` subclass
(`CorruptVideo`, `EmptyVideo`, `TooShortVideo`, from `mawsflow.data.video_probe`, which
`prepare-eval` checks videos with): the training loader skips and counts it, and
the evaluation counts it by reason.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from mawsflow.data.eval_shards import EvalSplit, parse_label
from mawsflow.data.shards import samples_in_order
from mawsflow.data.transforms import RandomResizedCropFlip, seeded_host_rngs
from mawsflow.data.video_probe import (
    CorruptVideo,
    EmptyVideo,
    TooShortVideo,
    frames_for,
    open_video,
    video_info,
)
from mawsflow.data.video_shards import VIDEO_EXTENSIONS
from mawsflow.errors import ConfigError
from mawsflow.recipes import AugmentConfig

log = logging.getLogger(__name__)


def video_member(raw: Mapping[str, Any]) -> bytes:
    """The encoded video of a raw shard sample."""
    for ext in VIDEO_EXTENSIONS:
        if ext in raw:
            return raw[ext]
    raise CorruptVideo(f"no video member ({'/'.join(VIDEO_EXTENSIONS)})")


@dataclass(frozen=True)
class ClipSampling:
    """Which frames a clip holds: `num_frames` over `clip_seconds`.

    `min_seconds` is the shortest usable video; shorter ones are `TooShortVideo`. None (the
    default) means half the clip: below that, repeated last frames would be more than half of
    every clip."""

    num_frames: int
    clip_seconds: float
    min_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.num_frames < 1:
            raise ConfigError(f"video.num_frames must be positive, got {self.num_frames}")
        if not self.clip_seconds > 0:
            raise ConfigError(f"video.clip_seconds must be positive, got {self.clip_seconds}")

    def clip_frames(self, fps: float) -> float:
        return self.clip_seconds * fps

    def min_frames(self, fps: float) -> int:
        seconds = self.clip_seconds / 2 if self.min_seconds is None else self.min_seconds
        return frames_for(seconds, fps)

    def indices(self, start: float, fps: float, total: int) -> np.ndarray:
        """Frame indices of the clip that starts at frame `start` of a `total`-frame video."""
        end = start + max(self.clip_frames(fps) - 1, 0)
        index = np.linspace(start, end, self.num_frames)
        return np.clip(np.floor(index).astype(np.int64), 0, total - 1)

    def random_start(self, fps: float, total: int, rng: np.random.Generator) -> float:
        return float(rng.uniform(0, max(total - self.clip_frames(fps), 0)))

    def test_start(self, view: int, views: int, fps: float, total: int) -> float:
        return max(total - self.clip_frames(fps), 0) * view / views


def scaled_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) with the short side at `short_side`, aspect ratio kept."""
    factor = short_side / min(width, height)
    return max(short_side, round(width * factor)), max(short_side, round(height * factor))


def decode_clips(
    data: bytes,
    sampling: ClipSampling,
    starts: Sequence[float] | None,
    *,
    short_side: int,
    rng: np.random.Generator | None = None,
) -> list[np.ndarray]:
    """Clips of an encoded video as uint8 [T, H, W, 3] arrays, frames scaled (swscale) so the
    short side is `short_side`.

    `starts` are clip starts in frames, or None for one random start drawn from `rng` once the
    video's length is known. The video is decoded once, up to the last frame any clip needs."""
    container = open_video(data)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "SLICE"  # no frame threads: one core per loader worker
        info = video_info(container)
        if info.packets_read:  # raw streams cannot seek back: open them again
            container.close()
            container = open_video(data)
            stream = container.streams.video[0]
            stream.thread_type = "SLICE"
        if info.frames and info.frames < sampling.min_frames(info.fps):
            raise TooShortVideo(
                f"{info.frames} frames at {info.fps:.3g} fps; the clip sampling needs at least "
                f"{sampling.min_frames(info.fps)}"
            )
        total = info.frames or 1
        if starts is None:
            if rng is None:
                raise ValueError("a random clip start needs an rng")
            starts = [sampling.random_start(info.fps, total, rng)]
        wanted = [sampling.indices(s, info.fps, total) for s in starts]
        needed = set(np.concatenate(wanted).tolist())
        last_needed = max(needed)
        width, height = scaled_size(info.width, info.height, short_side)
        frames: dict[int, np.ndarray] = {}
        last: av.VideoFrame | None = None
        decoded = 0
        try:
            for frame in container.decode(stream):
                if decoded in needed:
                    frames[decoded] = frame.to_ndarray(width=width, height=height, format="rgb24")
                last = frame
                decoded += 1
                if decoded > last_needed:
                    break
        except av.FFmpegError as exc:
            if not decoded:
                raise CorruptVideo(f"cannot decode the video: {exc}") from None
            # A stream cut short after some good frames: use what decoded (mae_st does too).
        if last is None:
            raise EmptyVideo("no frame decodes")
        if decoded < sampling.min_frames(info.fps):
            raise TooShortVideo(
                f"{decoded} decodable frames at {info.fps:.3g} fps; the clip sampling needs at "
                f"least {sampling.min_frames(info.fps)}"
            )
        if decoded <= last_needed:
            # Fewer frames than the container announced: clamp to the last one, as a video
            # shorter than the clip is clamped.
            frames[decoded - 1] = last.to_ndarray(width=width, height=height, format="rgb24")
        return [np.stack([frames[min(int(i), decoded - 1)] for i in clip]) for clip in wanted]
    finally:
        container.close()


class ClipAugment:
    """The training view of a clip: RandomResizedCrop, horizontal flip and RandAugment, each
    drawn once per clip (as the image augmentation draws them for an image) and applied to
    every frame. Returns uint8 [3, T, size, size]."""

    def __init__(self, augment: AugmentConfig) -> None:
        self.image = RandomResizedCropFlip(augment)

    def __call__(self, clip: np.ndarray, seed: int) -> torch.Tensor:
        frames = [Image.fromarray(f) for f in clip]
        image = self.image
        with seeded_host_rngs(seed):
            top, left, h, w, flip = image.draw_crop_flip(frames[0])
            augment_seed = int(torch.randint(0, 2**31 - 1, ()))
            out = []
            for img in frames:
                img = img.resize(
                    (image.size, image.size),
                    image.resample,
                    box=(left, top, left + w, top + h),
                    reducing_gap=3.0,
                )
                if flip:
                    img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
                if image.rand_augment is not None:
                    # The same draws for every frame: one set of operations per clip.
                    random.seed(augment_seed)
                    np.random.seed(augment_seed)
                    img = image.rand_augment(img)
                out.append(np.asarray(img, dtype=np.uint8))
        return torch.from_numpy(np.stack(out)).permute(3, 0, 1, 2).contiguous()


def spatial_crops(clip: np.ndarray, size: int, crops: int) -> list[np.ndarray]:
    """`crops` size × size crops of [T, H, W, 3] frames whose short side is `size`, spread along
    the long side (PySlowFast's uniform_crop: one is the centre, three are the two ends and the
    centre)."""
    _, height, width, _ = clip.shape
    if min(height, width) != size:
        raise ValueError(f"frames of {height}×{width} must have their short side at {size}")
    if crops < 1:
        raise ConfigError(f"video.test_crops must be positive, got {crops}")
    span = max(height, width) - size
    offsets = [span // 2] if crops == 1 else [round(span * i / (crops - 1)) for i in range(crops)]
    if height > width:
        return [clip[:, o : o + size] for o in offsets]
    return [clip[:, :, o : o + size] for o in offsets]


class VideoTrainDecoder:
    """Raw video shard sample + seed → {"video": uint8 [3, T, S, S], "label"} (one random clip)."""

    def __init__(self, sampling: ClipSampling, augment: AugmentConfig, num_classes: int) -> None:
        if augment.short_side_scale is None:
            raise ConfigError("augment.short_side_scale must be set for video training")
        self.sampling = sampling
        self.short_side = augment.short_side_scale
        self.augment = ClipAugment(augment)
        self.num_classes = num_classes

    def __call__(self, raw: Mapping[str, Any], seed: int) -> dict[str, torch.Tensor]:
        label = parse_label(raw, self.num_classes)
        rng = np.random.default_rng(seed)
        (clip,) = decode_clips(
            video_member(raw), self.sampling, None, short_side=self.short_side, rng=rng
        )
        video = self.augment(clip, int(rng.integers(2**31 - 1)))
        return {"video": video, "label": torch.tensor(label, dtype=torch.int64)}


@dataclass(frozen=True)
class MultiView:
    """The multi-view test protocol: `clips` temporal × `crops` spatial views per video."""

    clips: int
    crops: int
    size: int

    def __post_init__(self) -> None:
        if self.clips < 1 or self.crops < 1:
            raise ConfigError(
                f"video.test_clips and video.test_crops must be positive, got "
                f"{self.clips} and {self.crops}"
            )

    def __call__(self, data: bytes, sampling: ClipSampling) -> torch.Tensor:
        """uint8 [clips · crops, 3, T, size, size] of an encoded video (decoded once)."""
        container = open_video(data)
        try:
            info = video_info(container)
        finally:
            container.close()
        total = info.frames or 1
        starts = [sampling.test_start(k, self.clips, info.fps, total) for k in range(self.clips)]
        clips = decode_clips(data, sampling, starts, short_side=self.size)
        views = [crop for clip in clips for crop in spatial_crops(clip, self.size, self.crops)]
        return torch.from_numpy(np.stack(views)).permute(0, 4, 1, 2, 3).contiguous()


def erase_clips(
    clips: torch.Tensor, probability: float, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Random erasing (timm's defaults: area 2–33 %, aspect 0.3–3.3, per-pixel N(0, 1) values) on
    normalised clips [B, C, T, H, W], in place: each clip with `probability`, one box and one
    noise pattern through all its frames."""
    if not probability:
        return clips
    batch, chans, _, height, width = clips.shape
    draws = torch.rand(batch, 3, generator=generator).tolist()
    for index, (p, area_draw, ratio_draw) in enumerate(draws):
        if p >= probability:
            continue
        for _ in range(10):
            area = height * width * (0.02 + area_draw * (1 / 3 - 0.02))
            ratio = math.exp(math.log(0.3) + ratio_draw * (math.log(1 / 0.3) - math.log(0.3)))
            h, w = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
            if 0 < h < height and 0 < w < width:
                top = int(torch.randint(0, height - h + 1, (), generator=generator))
                left = int(torch.randint(0, width - w + 1, (), generator=generator))
                noise = torch.randn(chans, 1, h, w, generator=generator).to(clips)
                clips[index, :, :, top : top + h, left : left + w] = noise
                break
            area_draw, ratio_draw = torch.rand(2, generator=generator).tolist()
    return clips


class VideoEvalSamples(IterableDataset):
    """Each video of a split as (views uint8 [V, 3, T, S, S], label, ""), in shard order, or
    (None, label, reason) for a video skipped as one of `SKIP_REASONS`. Shards are dealt
    round-robin to (rank, loader worker) pairs, so every video is read once across a job."""

    def __init__(
        self,
        split: EvalSplit,
        sampling: ClipSampling,
        views: MultiView,
        *,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.split = split
        self.sampling = sampling
        self.views = views
        self.rank = rank
        self.world_size = world_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor | None, int, str]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        reader, readers = self.rank * workers + worker, self.world_size * workers
        for raw in samples_in_order(self.split.shards[reader::readers]):
            # A bad label is a bad dataset, not a bad video: it stops the evaluation.
            label = parse_label(raw, self.split.num_classes)
            try:
                yield self.views(video_member(raw), self.sampling), label, ""
            except (CorruptVideo, EmptyVideo, TooShortVideo) as exc:
                log.warning("skipping video %s: %s", raw.get("__key__", "?"), exc)
                yield None, label, exc.reason


def video_eval_loader(
    split: EvalSplit,
    sampling: ClipSampling,
    views: MultiView,
    *,
    num_workers: int,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """One video's views per item (a video's views are a batch of their own)."""
    dataset = VideoEvalSamples(split, sampling, views, rank=rank, world_size=world_size)
    return DataLoader(dataset, batch_size=None, num_workers=num_workers)
