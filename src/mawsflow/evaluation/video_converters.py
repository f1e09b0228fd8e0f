"""Converters from the two video benchmarks' annotation formats to video shards
(`mawsflow.data.video_shards`).

- **Kinetics-style CSV**: one video per row, `path,label`. A first row `path,label` is a header;
  rows without a comma are split on whitespace (PySlowFast's and facebookresearch/mae_st's
  `train.csv`: `path label`). A label is a class name, or an integer index when every row has
  one (then the classes are `0 … max`, unless `classes` names them). Paths are relative to the
  CSV's folder unless absolute (or URIs). Class names are taken over every split, sorted, so a
  label means the same class in each.
- **Something-Something-v2**: `labels.json` (template without brackets → index as a string),
  `train.json` / `validation.json` (lists of {"id", "label", "template", ...}) and the videos as
  `<video_dir>/<id>.<ext>` (`webm` in the release). A template's label is its `labels.json`
  index after dropping the brackets (PySlowFast's rule).

The video bytes are copied unchanged. A listed video that does not exist is skipped, counted and
logged (Kinetics releases always miss some YouTube videos). With `min_seconds` set, every video
is also probed (`mawsflow.data.video_probe`: it opens, has a video stream at least that long by
the container's frame count, and its first frame decodes) and skipped and counted by reason
(`corrupt`, `empty`, `too_short`) when it fails; without it the bytes go in unchecked and the
loaders count what they cannot use. Videos are shuffled with a fixed seed before writing, so
class-sorted annotation files give mixed shards and a rerun writes the same bytes.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mawsflow import storage
from mawsflow.data.eval_shards import write_classes
from mawsflow.data.members import CorruptSample
from mawsflow.data.video_shards import (
    DEFAULT_VIDEOS_PER_SHARD,
    VIDEO_EXTENSIONS,
    VideoSplitWriter,
)
from mawsflow.errors import ConfigError, DataFormatError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoSource:
    uri: str
    label: int


# Appendix B's clip lengths: 32 frames of 2.7 s (K400) or of 4 s (SSv2). Half a clip is the
# shortest video the loaders take (`ClipSampling.min_frames`), so it is what the conversion keeps
# by default.
PAPER_CLIP_SECONDS = {"kinetics": 2.7, "ssv2": 4.0}
# What a conversion writes beside the shards: its counts per split and skip reason.
CONVERSION_FILE = "conversion.json"


@dataclass(frozen=True)
class ConversionCounts:
    written: dict[str, int]
    missing: dict[str, int]
    # split → reason (mawsflow.data.video_probe.SKIP_REASONS) → videos skipped; empty unprobed.
    skipped: dict[str, dict[str, int]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, dict[str, Any]]:
        """Per split: written, missing and each skip reason (what the step logs and returns)."""
        return {
            split: {
                "written": self.written[split],
                "missing": self.missing[split],
                **{f"skipped_{r}": n for r, n in self.skipped.get(split, {}).items()},
            }
            for split in self.written
        }


def _parent(uri: str) -> str:
    return uri.rsplit("/", 1)[0] if "/" in uri else "."


def _resolve(base: str, path: str) -> str:
    if "://" in path or path.startswith("/"):
        return path
    parts = [p for p in path.split("/") if p not in ("", ".")]
    while parts and parts[0] == "..":
        base, parts = _parent(base), parts[1:]
    return storage.join(base, *parts)


def _video_extension(uri: str) -> str:
    name = uri.rsplit("/", 1)[-1]
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if ext not in VIDEO_EXTENSIONS:
        raise DataFormatError(f"{uri}: not a video file of a known container {VIDEO_EXTENSIONS}")
    return ext


def read_kinetics_csv(uri: str) -> list[tuple[str, str]]:
    """(video URI, label text) of every row of a Kinetics-style CSV."""
    try:
        text = storage.read_bytes(uri).decode("utf-8")
    except storage.NotFoundError:
        raise DataFormatError(f"no annotation file at {uri}") from None
    except UnicodeDecodeError:
        raise DataFormatError(f"{uri}: not UTF-8 text") from None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = next(csv.reader(io.StringIO(line))) if "," in line else line.split()
        fields = [f.strip() for f in fields]
        if number == 1 and [f.lower() for f in fields] == ["path", "label"]:
            continue
        if len(fields) != 2 or not all(fields):
            raise DataFormatError(f"{uri}, line {number}: expected 'path,label', got {line!r}")
        rows.append((_resolve(_parent(uri), fields[0]), fields[1]))
    if not rows:
        raise DataFormatError(f"{uri}: no videos listed")
    return rows


def kinetics_sources(
    csvs: Mapping[str, str], classes: Sequence[str] | None = None
) -> tuple[list[str], dict[str, list[VideoSource]]]:
    """Class names and each split's videos from split name → CSV URI."""
    rows = {split: read_kinetics_csv(uri) for split, uri in csvs.items()}
    labels = [label for split_rows in rows.values() for _, label in split_rows]
    if all(label.isdigit() for label in labels):
        count = max(int(label) for label in labels) + 1
        names = list(classes) if classes is not None else [str(i) for i in range(count)]
        if len(names) < count:
            raise DataFormatError(f"labels go up to {count - 1} but {len(names)} classes are named")
        index = {str(i): i for i in range(len(names))}
    else:
        names = sorted(set(labels)) if classes is None else list(classes)
        index = {name: i for i, name in enumerate(names)}
        unknown = sorted(set(labels) - set(index))
        if unknown:
            raise DataFormatError(f"labels not among the classes: {unknown[:5]}")
    return names, {
        split: [VideoSource(path, index[label]) for path, label in split_rows]
        for split, split_rows in rows.items()
    }


def _read_json(uri: str) -> Any:
    try:
        return storage.read_json(uri)
    except storage.NotFoundError:
        raise DataFormatError(f"no annotation file at {uri}") from None
    except ValueError as exc:
        raise DataFormatError(f"{uri}: not JSON ({exc})") from None


def ssv2_sources(
    labels_json: str,
    annotations: Mapping[str, str],
    video_dir: str,
    *,
    ext: str = "webm",
) -> tuple[list[str], dict[str, list[VideoSource]]]:
    """Class names (by index) and each split's videos from SSv2's JSON files."""
    labels = _read_json(labels_json)
    if not isinstance(labels, dict) or not labels:
        raise DataFormatError(f"{labels_json}: expected {{template: index}}")
    try:
        index = {name: int(i) for name, i in labels.items()}
    except (TypeError, ValueError):
        raise DataFormatError(f"{labels_json}: every index must be an integer") from None
    if sorted(index.values()) != list(range(len(index))):
        raise DataFormatError(f"{labels_json}: indices must be 0 … {len(index) - 1}, each once")
    names = [""] * len(index)
    for name, i in index.items():
        names[i] = name
    splits: dict[str, list[VideoSource]] = {}
    for split, uri in annotations.items():
        entries = _read_json(uri)
        if not isinstance(entries, list) or not entries:
            raise DataFormatError(f"{uri}: expected a non-empty list of videos")
        sources = []
        for n, entry in enumerate(entries):
            if not isinstance(entry, dict) or "id" not in entry or "template" not in entry:
                raise DataFormatError(f"{uri}, entry {n}: needs 'id' and 'template'")
            template = str(entry["template"]).replace("[", "").replace("]", "")
            if template not in index:
                raise DataFormatError(
                    f"{uri}, video {entry['id']}: template {template!r} not in {labels_json}"
                )
            video = storage.join(video_dir, f"{entry['id']}.{ext}")
            sources.append(VideoSource(video, index[template]))
        splits[split] = sources
    return names, splits


KINETICS_SPLITS = {"train": "train.csv", "val": "val.csv", "test": "test.csv"}
# SSv2's annotation files, under the names PySlowFast's and the release's own ("labels.json" or
# "something-something-v2-labels.json"); its test split has no labels and is not converted.
SSV2_FILES = {"labels": "labels.json", "train": "train.json", "val": "validation.json"}
SSV2_RELEASE_PREFIX = "something-something-v2-"


def kinetics_layout(
    source: str, classes: Sequence[str] | None = None
) -> tuple[list[str], dict[str, list[VideoSource]]]:
    """A folder with `train.csv`, `val.csv` and/or `test.csv` (mae_st's and PySlowFast's
    Kinetics layout)."""
    csvs = {
        split: storage.join(source, name)
        for split, name in KINETICS_SPLITS.items()
        if storage.exists(storage.join(source, name))
    }
    if not csvs:
        raise DataFormatError(f"{source}: none of {sorted(KINETICS_SPLITS.values())} is there")
    return kinetics_sources(csvs, classes)


def _ssv2_file(source: str, name: str) -> str | None:
    for candidate in (name, SSV2_RELEASE_PREFIX + name):
        uri = storage.join(source, candidate)
        if storage.exists(uri):
            return uri
    return None


def ssv2_layout(
    source: str, video_dir: str, *, ext: str = "webm"
) -> tuple[list[str], dict[str, list[VideoSource]]]:
    """A folder with SSv2's `labels.json`, `train.json` and/or `validation.json` (or the
    release's `something-something-v2-*.json`); the videos are `<video_dir>/<id>.<ext>`."""
    labels = _ssv2_file(source, SSV2_FILES["labels"])
    if labels is None:
        raise DataFormatError(f"{source}: no labels.json (or {SSV2_RELEASE_PREFIX}labels.json)")
    annotations = {
        split: uri
        for split in ("train", "val")
        if (uri := _ssv2_file(source, SSV2_FILES[split])) is not None
    }
    if not annotations:
        raise DataFormatError(f"{source}: neither train.json nor validation.json is there")
    return ssv2_sources(labels, annotations, video_dir, ext=ext)


def write_video_dataset(
    out: str,
    classes: Sequence[str],
    splits: Mapping[str, Sequence[VideoSource]],
    *,
    samples_per_shard: int = DEFAULT_VIDEOS_PER_SHARD,
    seed: int = 0,
    limit: int | None = None,
    min_seconds: float | None = None,
) -> ConversionCounts:
    """`classes.json` and each split's shards (shuffled with `seed`, cut to the first `limit`
    videos of that order); missing videos counted, and with `min_seconds` (≥ 0) every video
    probed and the unusable ones skipped and counted by reason."""
    if not splits:
        raise DataFormatError("no splits to write")
    probe = _prober(min_seconds)
    write_classes(out, classes)
    written, missing, skipped = {}, {}, {}
    for split, sources in splits.items():
        writer = VideoSplitWriter(out, split, len(classes), samples_per_shard=samples_per_shard)
        order = np.random.default_rng(seed).permutation(len(sources))
        if limit is not None:
            order = order[:limit]
        missing[split], kept = 0, 0
        skipped[split] = dict.fromkeys(probe.reasons, 0) if probe else {}
        for position in order:
            source = sources[int(position)]
            ext = _video_extension(source.uri)
            try:
                data = storage.read_bytes(source.uri)
            except storage.NotFoundError:
                missing[split] += 1
                log.warning("video listed but missing: %s", source.uri)
                continue
            reason = probe(data) if probe else None
            if reason is not None:
                skipped[split][reason] += 1
                log.warning("skipping %s video %s", reason, source.uri)
                continue
            writer.write(f"{split}_{int(position):08d}", data, ext, source.label)
            kept += 1
        if not kept:
            raise DataFormatError(
                f"split {split!r}: none of its {len(order)} videos could be used "
                f"(missing {missing[split]}, skipped {skipped[split]})"
            )
        written[split] = writer.close()["num_samples"]
        log.info(
            "video split written",
            extra={
                "split": split,
                "videos": written[split],
                "missing": missing[split],
                **{f"skipped_{r}": n for r, n in skipped[split].items()},
            },
        )
    return ConversionCounts(written, missing, skipped if probe else {})


class _Prober:
    """`probe_video` as a skip reason (None for a usable video)."""

    def __init__(self, min_seconds: float) -> None:
        # PyAV is the `train` extra's (the CPU-only prepare-eval image has none): imported
        # only when videos are probed, and then its absence is a clear error.
        try:
            import mawsflow.data.video_probe as video_probe
        except ModuleNotFoundError as exc:
            raise ConfigError(
                f"probing videos needs PyAV ({exc.name} is not installed): install "
                "mawsflow[train], run prepare-eval in the finetune-video image, or pass "
                "--no-probe to copy the videos unchecked (the loaders then count broken ones)"
            ) from None
        self._module = video_probe
        self.reasons = video_probe.SKIP_REASONS
        self.min_seconds = min_seconds

    def __call__(self, data: bytes) -> str | None:
        try:
            self._module.probe_video(data, self.min_seconds)
        except CorruptSample as exc:  # CorruptVideo, EmptyVideo or TooShortVideo
            return str(getattr(exc, "reason", "corrupt"))
        return None


def _prober(min_seconds: float | None) -> _Prober | None:
    if min_seconds is None:
        return None
    if min_seconds < 0:
        raise ConfigError(f"min_seconds must be ≥ 0, got {min_seconds}")
    return _Prober(min_seconds)


def _class_names(uri: str | None) -> list[str] | None:
    if not uri:
        return None
    try:
        text = storage.read_text(uri)
    except storage.NotFoundError:
        raise ConfigError(f"--class-names {uri}: no such file") from None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise ConfigError(f"--class-names {uri}: no class names in it (one per line)")
    return names


def prepare_video_dataset(
    layout: str,
    source: str,
    output: str,
    *,
    video_dir: str | None = None,
    video_ext: str = "webm",
    class_names: str | None = None,
    probe: bool = True,
    min_seconds: float | None = None,
    samples_per_shard: int = DEFAULT_VIDEOS_PER_SHARD,
    seed: int = 0,
    limit: int | None = None,
) -> dict[str, dict[str, Any]]:
    """`prepare-eval`'s video layouts: a `kinetics` or `ssv2` source (`kinetics_layout`,
    `ssv2_layout`) written to `output`, every video probed unless `probe` is off (shorter than
    `min_seconds` is too short; default half the paper's clip). Returns, per split, the videos
    written, missing and skipped by reason, which also go to the log and `conversion.json`."""
    if layout == "kinetics":
        classes, splits = kinetics_layout(source, _class_names(class_names))
    elif layout == "ssv2":
        videos = video_dir or storage.join(source, "videos")
        classes, splits = ssv2_layout(source, videos, ext=video_ext)
    else:
        raise ConfigError(
            f"unknown video layout {layout!r}; choose one of {list(PAPER_CLIP_SECONDS)}"
        )
    if not probe and min_seconds is not None:
        raise ConfigError("--min-seconds needs the probe: drop --no-probe or --min-seconds")
    if probe and min_seconds is None:
        min_seconds = PAPER_CLIP_SECONDS[layout] / 2
    counts = write_video_dataset(
        output,
        classes,
        splits,
        samples_per_shard=samples_per_shard,
        seed=seed,
        limit=limit,
        min_seconds=min_seconds,
    ).as_dict()
    summary = {"layout": layout, "probed": probe, "min_seconds": min_seconds}
    storage.write_json(storage.join(output, CONVERSION_FILE), {**summary, "splits": counts})
    log.info(
        "videos converted",
        extra={"output": output, "classes": len(classes), **summary, "splits": counts},
    )
    return counts
