"""Which container image each component runs in: `components/images.yaml`, and re-tagging.

`components/images.yaml` (written by `images/build.py`) is the one place image references live:
step → `repository:tag`, or `repository:tag@sha256:…` once pushed. A pipeline run can ask for
another tag of every image (`image_tag`, e.g. the `sha-<commit>` tag `images/build.py` gives),
which replaces the tag and drops the digest pin.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[3]
IMAGES_FILE = REPO_ROOT / "components" / "images.yaml"

# Docker's grammar for a tag.
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


class ImageError(ValueError):
    """An image reference or tag that cannot be used."""


def read_images(path: Path = IMAGES_FILE) -> dict[str, str]:
    """Step name → image reference, from `components/images.yaml`."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ImageError(
            f"{path}: cannot read the image references ({exc.strerror}); the components are "
            "compiled from a source checkout, which holds components/images.yaml"
        ) from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in data.items()
    ):
        raise ImageError(f"{path}: expected a mapping of step name → image reference")
    return dict(data)


def image_for(images: Mapping[str, str], step: str) -> str:
    try:
        return images[step]
    except KeyError:
        raise ImageError(
            f"components/images.yaml has no image for step {step!r} (it has {sorted(images)})"
        ) from None


def repository(reference: str) -> str:
    """`host:5000/org/name:tag@sha256:…` → `host:5000/org/name`."""
    name = reference.split("@", 1)[0]
    last_slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > last_slash else name


def retag(reference: str, tag: str) -> str:
    """The same repository with `tag` (no digest); an empty tag keeps `reference` as it is."""
    if not tag:
        return reference
    if not _TAG.match(tag):
        raise ImageError(
            f"image tag {tag!r} is not a valid tag (letters, digits, '_', '.', '-'; at most 128 "
            "characters, not starting with '.' or '-')"
        )
    return f"{repository(reference)}:{tag}"
