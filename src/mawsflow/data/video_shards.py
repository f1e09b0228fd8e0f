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

from typing import Any

import webdataset as wds

from mawsflow import storage
from mawsflow.data.eval_shards import SPLITS, EvalSplit, read_classes
from mawsflow.data.manifest import shard_sizes
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
    dataset = dataset.rstrip("/")
    classes = read_classes(dataset)
    uri = storage.join(dataset, split, "manifest.json")
    try:
        manifest = storage.read_json(uri)
    except storage.NotFoundError:
        raise DataFormatError(f"{dataset} has no {split!r} split ({uri} is missing)") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise DataFormatError(f"{uri}: format must be {FORMAT!r}, got {found!r}")
    shards = manifest.get("shards")
    if not isinstance(shards, list) or not shards or not all(isinstance(s, str) for s in shards):
        raise DataFormatError(f"{uri}: shards must be a non-empty list of file names")
    num_samples = manifest.get("num_samples")
    per_shard = manifest.get("samples_per_shard")
    for key, value in (("num_samples", num_samples), ("samples_per_shard", per_shard)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise DataFormatError(f"{uri}: {key} must be a positive integer, got {value!r}")
    if manifest.get("num_classes") != len(classes):
        raise DataFormatError(
            f"{uri}: num_classes {manifest.get('num_classes')} differs from the "
            f"{len(classes)} names in classes.json"
        )
    return EvalSplit(
        dataset=dataset,
        split=split,
        classes=tuple(classes),
        shards=tuple(storage.join(dataset, split, s) for s in shards),
        shard_sizes=shard_sizes(num_samples, per_shard, len(shards), source=uri),
        num_samples=num_samples,
        label_subset=None,
    )


class VideoSplitWriter:
    """Writes one split's shards and, on `close()`, its manifest (last, so a split with a
    manifest is complete). Each shard appears whole or not at all (`storage.open_write`)."""

    def __init__(
        self,
        dataset: str,
        split: str,
        num_classes: int,
        *,
        samples_per_shard: int = DEFAULT_VIDEOS_PER_SHARD,
    ) -> None:
        if split not in SPLITS:
            raise DataFormatError(f"split must be one of {SPLITS}, got {split!r}")
        if samples_per_shard < 1:
            raise DataFormatError(f"samples_per_shard must be positive, got {samples_per_shard}")
        self.dataset = dataset.rstrip("/")
        self.split = split
        self.num_classes = num_classes
        self.samples_per_shard = samples_per_shard
        self.shards: list[str] = []
        self.num_samples = 0
        self._pending: list[dict[str, Any]] = []

    def write(self, key: str, video: bytes, ext: str, label: int) -> None:
        if ext not in VIDEO_EXTENSIONS:
            raise DataFormatError(
                f"sample {key}: video extension {ext!r} not in {VIDEO_EXTENSIONS}"
            )
        if not 0 <= label < self.num_classes:
            raise DataFormatError(f"sample {key}: label {label} outside {self.num_classes} classes")
        if "." in key or "/" in key:
            raise DataFormatError(
                f"sample key {key!r} must not contain '.' or '/' (webdataset splits on them)"
            )
        self._pending.append({"__key__": key, ext: video, "cls": str(label).encode("ascii")})
        if len(self._pending) == self.samples_per_shard:
            self._flush()

    def _flush(self) -> None:
        name = f"shard-{len(self.shards):06d}.tar"
        with storage.open_write(storage.join(self.dataset, self.split, name)) as stream:
            # A fixed integer mtime: a rerun writes identical bytes (steps are idempotent).
            writer = wds.TarWriter(stream, mtime=0)
            for sample in self._pending:
                writer.write(sample)
            writer.close()
        self.shards.append(name)
        self.num_samples += len(self._pending)
        self._pending = []

    def close(self) -> dict[str, Any]:
        """Write the last shard and the manifest; returns the manifest."""
        if self._pending:
            self._flush()
        if not self.num_samples:
            raise DataFormatError(f"split {self.split!r} of {self.dataset} received no videos")
        manifest = {
            "format": FORMAT,
            "shards": self.shards,
            "num_samples": self.num_samples,
            "num_classes": self.num_classes,
            "samples_per_shard": self.samples_per_shard,
        }
        storage.write_json(storage.join(self.dataset, self.split, "manifest.json"), manifest)
        return manifest
