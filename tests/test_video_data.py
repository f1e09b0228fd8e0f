"""Video clips: PyAV decoding, the clip sampling, the multi-view test protocol, augmentations
that are the same on every frame, and videos that are skipped and counted."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest
import torch

from mawsflow.data.members import CORRUPT_SAMPLE_ERRORS
from mawsflow.data.video import (
    ClipAugment,
    ClipSampling,
    CorruptVideo,
    EmptyVideo,
    MultiView,
    TooShortVideo,
    VideoTrainDecoder,
    decode_clips,
    erase_clips,
    spatial_crops,
)
from mawsflow.dataset.video_demo import encode_h264
from mawsflow.recipes import load_recipe

FPS = 12


def ramp_video(frames: int, height: int = 32, width: int = 48) -> bytes:
    """Frame i is a flat gray of 10 + 10·i: a decoded frame tells its own index."""
    pixels = np.stack([np.full((height, width, 3), 10 + 10 * i, np.uint8) for i in range(frames)])
    return encode_h264(pixels, FPS)


def encoded(frames: int, container: str, codec: str) -> bytes:
    """A ramp video in another container (Matroska/WebM record no frame count)."""
    out = io.BytesIO()
    with av.open(out, mode="w", format=container) as sink:
        stream = sink.add_stream(codec, rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv420p"
        for i in range(frames):
            pixels = np.full((32, 48, 3), 10 + 10 * i, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                sink.mux(packet)
        for packet in stream.encode():
            sink.mux(packet)
    return out.getvalue()


def frame_index(clip: np.ndarray) -> list[int]:
    return [round((float(f.mean()) - 10) / 10) for f in clip]


def audio_only() -> bytes:
    out = io.BytesIO()
    with av.open(out, mode="w", format="mp4") as container:
        stream = container.add_stream("aac", rate=44100)
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
        )
        frame.sample_rate = 44100
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    return out.getvalue()


def test_clip_indices_spread_over_the_clip_and_clamp_to_the_video():
    # The paper's K400 clip: 32 frames of 2.7 s; at 30 fps that is 81 frames, every ~2.5th.
    k400 = ClipSampling(32, 2.7)
    index = k400.indices(10.0, 30.0, 300)
    assert len(index) == 32 and index[0] == 10 and index[-1] == 10 + 80
    assert np.all(np.diff(index) >= 2) and np.all(np.diff(index) <= 3)
    # A video shorter than the clip repeats its last frame (mae_st / PySlowFast).
    short = k400.indices(0.0, 30.0, 40)
    assert short.max() == 39 and (short == 39).sum() > 1
    rng = np.random.default_rng(0)
    starts = [k400.random_start(30.0, 300, rng) for _ in range(200)]
    assert min(starts) >= 0 and max(starts) <= 300 - 81
    assert [k400.test_start(k, 3, 30.0, 300) for k in range(3)] == [0, 73, 146]
    assert k400.min_frames(30.0) == 41  # half the clip
    with pytest.raises(Exception, match="video.num_frames must be positive"):
        ClipSampling(0, 2.7)


def test_decoded_clips_hold_the_sampled_frames_scaled_to_the_short_side():
    data = ramp_video(12)
    sampling = ClipSampling(4, 4 / FPS)
    (clip,) = decode_clips(data, sampling, [3.0], short_side=24)
    assert clip.shape == (4, 24, 36, 3) and clip.dtype == np.uint8
    assert frame_index(clip) == [3, 4, 5, 6]
    # Several clips from one decode (the test views).
    first, last = decode_clips(data, sampling, [0.0, 8.0], short_side=32)
    assert frame_index(first) == [0, 1, 2, 3] and frame_index(last) == [8, 9, 10, 11]


@pytest.mark.parametrize(("container", "codec"), [("webm", "libvpx"), ("matroska", "libx264")])
def test_containers_without_a_frame_count_sample_the_same_frames(container, codec):
    data = encoded(12, container, codec)
    sampling = ClipSampling(4, 4 / FPS)
    first, last = decode_clips(data, sampling, [0.0, 8.0], short_side=32)
    assert frame_index(first) == [0, 1, 2, 3] and frame_index(last) == [8, 9, 10, 11]
    views = MultiView(clips=2, crops=1, size=32)(data, sampling)
    assert frame_index(views[1].permute(1, 2, 3, 0).numpy()) == [4, 5, 6, 7]  # (12 − 4)·1/2


def test_multi_view_protocol_gives_temporal_clips_times_spatial_crops():
    data = ramp_video(24, height=32, width=48)
    sampling = ClipSampling(4, 4 / FPS)
    views = MultiView(clips=2, crops=3, size=32)(data, sampling)
    assert views.shape == (6, 3, 4, 32, 32) and views.dtype == torch.uint8
    # Views 0–2 are the first clip (frames 0–3), 3–5 the second, starting at (24 − 4)·1/2.
    assert frame_index(views[0].permute(1, 2, 3, 0).numpy()) == [0, 1, 2, 3]
    assert frame_index(views[3].permute(1, 2, 3, 0).numpy()) == [10, 11, 12, 13]
    wide = np.arange(2 * 32 * 48 * 3, dtype=np.uint8).reshape(2, 32, 48, 3)
    left, centre, right = spatial_crops(wide, 32, 3)
    assert np.array_equal(left, wide[:, :, :32]) and np.array_equal(right, wide[:, :, 16:])
    assert np.array_equal(centre, wide[:, :, 8:40])
    (middle,) = spatial_crops(wide, 32, 1)
    assert np.array_equal(middle, centre)


def test_augmentation_is_the_same_on_every_frame_of_a_clip():
    augment = load_recipe("finetune-video", preset="tiny").augment  # RandAugment m7 n5
    assert augment.rand_augment is not None
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, size=(36, 48, 3), dtype=np.uint8)
    clip = np.stack([frame] * 4)
    transform = ClipAugment(augment)
    outputs = [transform(clip, seed) for seed in range(6)]
    for out in outputs:
        assert out.shape == (3, 4, 32, 32)
        for t in range(1, 4):
            assert torch.equal(out[:, t], out[:, 0]), "one crop and one RandAugment per clip"
    assert len({o.sum().item() for o in outputs}) > 1, "different seeds draw different views"
    assert torch.equal(transform(clip, 3), outputs[3]), "the seed decides the view"


def test_random_erasing_puts_one_box_through_every_frame():
    clips = torch.zeros(8, 3, 4, 16, 16)
    erase_clips(clips, 1.0, generator=torch.Generator().manual_seed(0))
    for clip in clips:
        erased = clip.abs().sum(dim=0) > 0  # [T, H, W]
        assert erased[0].any()
        assert all(torch.equal(erased[t], erased[0]) for t in range(4))
        assert torch.equal(clip[:, 0], clip[:, 3])
    untouched = torch.zeros(4, 3, 2, 8, 8)
    assert not erase_clips(untouched, 0.0).any()


@pytest.mark.parametrize(
    ("make", "error", "reason"),
    [
        (lambda: b"definitely not a video" * 4, CorruptVideo, "corrupt"),
        (lambda: ramp_video(12)[:600], CorruptVideo, "corrupt"),  # cut before its index
        (lambda: b"", EmptyVideo, "empty"),
        (audio_only, EmptyVideo, "empty"),
        (lambda: ramp_video(2), TooShortVideo, "too_short"),
    ],
    ids=["garbage", "truncated", "zero-bytes", "no-video-stream", "two-frames"],
)
def test_unusable_videos_raise_what_the_loaders_skip_and_count(make, error, reason):
    sampling = ClipSampling(4, 0.5)  # usable from half the clip: 3 frames at 12 fps
    with pytest.raises(error) as info:
        decode_clips(make(), sampling, [0.0], short_side=32)
    assert info.value.reason == reason
    assert isinstance(info.value, CORRUPT_SAMPLE_ERRORS), "the training loader counts it"
    decoder = VideoTrainDecoder(sampling, load_recipe("finetune-video", preset="tiny").augment, 4)
    with pytest.raises(error):
        decoder({"__key__": "x", "mp4": make(), "cls": b"1"}, 0)
