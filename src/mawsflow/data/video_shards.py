"""Video datasets (K400, SSv2 and the generated demo): the evaluation-dataset layout with videos.

```
<dataset>/classes.json               class names, index = label
<dataset>/<split>/manifest.json      {"format": "mawsflow.video/1", "shards": [...],
                                      "num_samples": N, "num_classes": C, "samples_per_shard": S}
<dataset>/<split>/shard-NNNNNN.tar   <key>.<mp4|webm|mkv|avi|mov> the encoded video, bytes as
                                     the source had them; <key>.cls its class index
```

The layout is the classification format's (`mawsflow.data.eval_shards`) with another `format`,
so a video dataset is never read as images by mistake; a split reads into the same `EvalSplit`,
which the training engine streams. Videos are not re-encoded: decoding is the loader's, and a
broken video is counted there, not here. This module imports no torch and no PyAV (prepare-eval
runs in the CPU-only image).
"""

from __future__ import annotations

from mawsflow.data.eval_shards import EvalSplit, ShardSplitWriter, open_split
from mawsflow.errors import DataFormatError

FORMAT = "mawsflow.video/1"
# Encoded video members a sample may hold: the container's own extension, bytes unchanged.
VIDEO_EXTENSIONS = ("mp4", "webm", "mkv", "avi", "mov")
# Videos are ~100× an image: shards of ~100 K400 clips stay near the usual 100 MB–1 GB.
DEFAULT_VIDEOS_PER_SHARD = 100


def open_video_split(dataset: str, split: str) -> EvalSplit:
    """Read and check one split of a video dataset."""
    if not dataset:
        raise DataFormatError("no video dataset given")
    return open_split(dataset, split, format=FORMAT)


class VideoSplitWriter(ShardSplitWriter):
    """Writes a split of videos (`<key>.<ext>` as the source had it, `<key>.cls`)."""

    format = FORMAT
    default_samples_per_shard = DEFAULT_VIDEOS_PER_SHARD
    # '/' too: a key is also a file name in the tar (converters take keys from source paths).
    forbidden_key_chars = "./"

    def write(self, key: str, video: bytes, ext: str, label: int) -> None:
        if ext not in VIDEO_EXTENSIONS:
            raise DataFormatError(
                f"sample {key}: video extension {ext!r} not in {VIDEO_EXTENSIONS}"
            )
        self._check(key, label)
        self._add({"__key__": key, ext: video, "cls": str(label).encode("ascii")})
