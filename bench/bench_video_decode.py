"""Clip decode throughput: the video loader's decoding vs a plain PyAV loop, in one process.

Both decode the same clips (`--num-frames` frames over `--clip-seconds`, start drawn per video)
from the same encoded videos, one core (OMP_NUM_THREADS=1, FFmpeg slice threads only), and
produce the same uint8 arrays scaled so the short side is `--short-side`:

- **loader**: `mawsflow.data.video.decode_clips`: stops decoding after the clip's last frame and
  converts only the clip's frames to RGB, scaled by swscale in the same pass;
- **baseline**: the plain loop: decode every frame to an RGB array, then pick the clip's frames
  and resize them (PIL, bilinear) to the short side.

Prints clips/s per core for each and their ratio. Videos are generated (moving Fashion-MNIST,
H.264) at `--height`×`--width` and `--frames` frames at `--fps`: a K400-like 10 s clip at 30 fps
by default, at a reduced resolution so the run takes well under a minute.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_video_decode.py
"""

from __future__ import annotations

import argparse
import io
import time

import av
import numpy as np
from PIL import Image

from mawsflow.data.fashion_mnist import DEBIAN_FASHION_MNIST, load_fashion_mnist
from mawsflow.data.video import ClipSampling, decode_clips, scaled_size
from mawsflow.dataset.video_demo import MOTIONS, VideoDemoSpec, encode_h264, render_frames


def plain_pyav_clip(
    data: bytes, sampling: ClipSampling, start: float, short_side: int
) -> np.ndarray:
    container = av.open(io.BytesIO(data))
    stream = container.streams.video[0]
    stream.thread_type = "SLICE"
    fps = float(stream.average_rate)
    frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    container.close()
    index = sampling.indices(start, fps, len(frames))
    height, width = frames[0].shape[:2]
    size = scaled_size(width, height, short_side)
    return np.stack(
        [
            np.asarray(Image.fromarray(frames[i]).resize(size, Image.Resampling.BILINEAR))
            for i in index
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=12)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--num-frames", type=int, default=32)
    parser.add_argument("--clip-seconds", type=float, default=2.7)
    parser.add_argument("--short-side", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    images, _ = load_fashion_mnist(DEBIAN_FASHION_MNIST, "train")
    spec = VideoDemoSpec(height=args.height, width=args.width, frames=args.frames, fps=args.fps)
    videos = []
    for i in range(args.videos):
        rng = np.random.default_rng(i)
        _, step = MOTIONS[i % len(MOTIONS)]
        videos.append(encode_h264(render_frames(images[i], step, 3, spec, rng), args.fps))
    sampling = ClipSampling(args.num_frames, args.clip_seconds)
    starts = np.random.default_rng(0).uniform(
        0, args.frames - sampling.clip_frames(args.fps), size=args.videos
    )

    # Same frames from both paths (up to the resampling filter).
    ours = decode_clips(videos[0], sampling, [starts[0]], short_side=args.short_side)[0]
    plain = plain_pyav_clip(videos[0], sampling, starts[0], args.short_side)
    assert ours.shape == plain.shape, (ours.shape, plain.shape)
    assert np.abs(ours.astype(int) - plain.astype(int)).mean() < 8

    timings = {"loader": 0.0, "plain PyAV loop": 0.0}
    for _ in range(args.repeats):
        for name in timings:
            begin = time.perf_counter()
            for data, start in zip(videos, starts, strict=True):
                if name == "loader":
                    decode_clips(data, sampling, [start], short_side=args.short_side)
                else:
                    plain_pyav_clip(data, sampling, start, args.short_side)
            timings[name] += time.perf_counter() - begin
    clips = args.videos * args.repeats
    print(
        f"{args.videos} videos of {args.frames} frames {args.width}x{args.height} "
        f"@ {args.fps} fps, clips of {args.num_frames} frames over {args.clip_seconds} s, "
        f"short side "
        f"{args.short_side}, one core"
    )
    for name, seconds in timings.items():
        print(f"{name:>16}: {clips / seconds:7.2f} clips/s per core")
    print(f"{'ratio':>16}: {timings['plain PyAV loop'] / timings['loader']:7.2f}x")


if __name__ == "__main__":
    main()
