"""Whether an encoded video can be used, read with PyAV: the reasons a video is skipped and
counted (corrupt, empty, too short), the container's frame rate, size and frame count, and a
cheap check that `prepare-eval` runs on every video it converts.

This module imports PyAV and no torch: the clip decoding of the loaders (`mawsflow.data.video`)
raises the same errors from the same checks, so a video `prepare-eval` keeps is one the loaders
open, and a video it skips is one they would have skipped.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import av

from mawsflow.data.members import CorruptSample


class CorruptVideo(CorruptSample):
    """Bytes FFmpeg cannot demux or decode."""

    reason = "corrupt"


class EmptyVideo(CorruptSample):
    """A 0-byte file, a container without a video stream, or one without a decodable frame."""

    reason = "empty"


class TooShortVideo(CorruptSample):
    """Fewer frames than the clip sampling accepts (`ClipSampling.min_frames`)."""

    reason = "too_short"


SKIP_REASONS = ("corrupt", "empty", "too_short")


@dataclass(frozen=True)
class VideoInfo:
    frames: int  # the container's count (an estimate where the container does not say)
    fps: float
    width: int
    height: int
    # The packets were read to count the frames: decoding needs the container opened anew.
    packets_read: bool = False


def open_video(data: bytes) -> av.container.InputContainer:
    """The demuxer of an encoded video that has a video stream."""
    if not data:
        raise EmptyVideo("0 bytes")
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.FFmpegError, UnicodeDecodeError) as exc:
        raise CorruptVideo(f"cannot open the video: {exc}") from None
    if not container.streams.video:
        container.close()
        raise EmptyVideo("the container has no video stream")
    return container


def video_info(container: av.container.InputContainer) -> VideoInfo:
    """Frame rate, size and frame count of the first video stream. Matroska/WebM (SSv2's
    container) record no frame count: it is estimated from the stream's or the container's
    duration, or, where neither is known, counted from the packets (which decodes nothing)."""
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else 0.0
    if not fps > 0:
        raise CorruptVideo("the video stream has no frame rate")
    frames = stream.frames
    if not frames and stream.duration and stream.time_base:
        frames = round(float(stream.duration * stream.time_base) * fps)
    if not frames and container.duration:
        frames = round(container.duration / av.time_base * fps)
    packets_read = not frames
    if packets_read:
        try:
            frames = sum(1 for packet in container.demux(stream) if packet.size)
        except av.FFmpegError as exc:
            raise CorruptVideo(f"cannot read the video's packets: {exc}") from None
    return VideoInfo(int(frames), fps, stream.width, stream.height, packets_read)


def frames_for(seconds: float, fps: float) -> int:
    """The frames `seconds` of video hold at `fps` (at least one)."""
    return max(1, math.ceil(seconds * fps - 1e-6))


def probe_video(data: bytes, min_seconds: float = 0.0) -> VideoInfo:
    """The video's info if it opens, has a video stream of at least `min_seconds` (by the
    container's frame count) and its first frame decodes; else the skip error saying why.

    Only the first frame is decoded, so a stream that breaks later passes here and is cut
    short (or counted) by the loaders: this is the check a conversion of 240 K videos affords.
    Whatever else FFmpeg or PyAV raise on the bytes is `CorruptVideo`: one odd file must not stop
    a conversion.
    """
    try:
        return _probe(data, min_seconds)
    except CorruptSample:
        raise
    except (av.FFmpegError, ValueError, OverflowError, OSError) as exc:
        raise CorruptVideo(f"cannot read the video: {exc}") from None


def _probe(data: bytes, min_seconds: float) -> VideoInfo:
    container = open_video(data)
    try:
        info = video_info(container)
        if info.packets_read:  # the demuxer is at the end: open it again to decode
            container.close()
            container = open_video(data)
        if info.frames and info.frames < frames_for(min_seconds, info.fps):
            raise TooShortVideo(
                f"{info.frames} frames at {info.fps:.3g} fps, shorter than {min_seconds:g} s"
            )
        first = next(iter(container.decode(video=0)), None)
        if first is None:
            raise EmptyVideo("no frame decodes")
        return info
    finally:
        container.close()
