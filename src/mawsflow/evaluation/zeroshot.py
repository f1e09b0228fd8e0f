"""Zero-shot classification with a LiT model: class names × prompt templates (CLIP's protocol).

Each class's prompts ("a photo of a {}." …) are embedded by the text tower, L2-normalised and
averaged (prompt ensembling), and the average is normalised again; an image is scored by the
cosine similarity of its embedding with every class's embedding.

Appendix B: "We leverage the prompt templates and class names introduced in CLIP for
ImageNet-1k and Food-101." Both ship as packaged data from the CLIP repository (MIT): the
template sets `clip_imagenet` (80 templates) and `clip_food101`, and the class names in
`classnames/`. Class names come from the test set's `classes.json`: ImageNet-1k WordNet ids
(an ImageFolder tree names its folders `n01440764`, …) become CLIP's names for them, Food-101's
folder names CLIP's Food-101 names; WordNet ids outside ImageNet-1k fall back to the first
lemma in timm's ImageNet-21k info, other names keep their words. The default template set
(`auto`) is CLIP's Food-101 set for Food-101 and CLIP's ImageNet set otherwise, as CLIP uses
it for ImageNet and its variants; the project's own sets (`objects`, `food`, `clothing`) or a
user's file with one template per line can be named instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from importlib import resources

import torch
import torch.nn.functional as F
from timm.data import ImageNetInfo

_WNID = re.compile(r"^n\d{8}$")


AUTO_TEMPLATES = "auto"


def builtin_template_sets() -> list[str]:
    """Names of the packaged template sets (`clip_imagenet`, `clip_food101`, `objects`, …)."""
    folder = resources.files("mawsflow.evaluation").joinpath("prompts")
    return sorted(p.name.removesuffix(".txt") for p in folder.iterdir() if p.name.endswith(".txt"))


def parse_templates(text: str, *, source: str) -> list[str]:
    """Templates from a file's text: one per line, each with exactly one `{}`; `#` comments."""
    templates = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.count("{}") != 1:
            raise ValueError(
                f"{source} line {number}: a template needs exactly one '{{}}' for the class "
                f"name, got {line!r}"
            )
        templates.append(line)
    if not templates:
        raise ValueError(f"{source}: no templates (one per line, with '{{}}' for the class name)")
    return templates


def builtin_templates(name: str) -> list[str]:
    """One of the project's template sets, by name."""
    known = builtin_template_sets()
    if name not in known:
        raise ValueError(f"unknown template set {name!r}; the project's sets are {known}")
    text = resources.files("mawsflow.evaluation").joinpath("prompts", f"{name}.txt").read_text()
    return parse_templates(text, source=f"template set {name!r}")


def _packaged_names(name: str) -> list[str]:
    """A packaged class-name list (one name per line, `#` comments)."""
    text = resources.files("mawsflow.evaluation").joinpath("classnames", f"{name}.txt")
    lines = (line.strip() for line in text.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def clip_imagenet_names() -> dict[str, str]:
    """ImageNet-1k WordNet id → CLIP's class name."""
    wnids = ImageNetInfo("imagenet-1k").label_names()
    names = _packaged_names("clip_imagenet")
    if len(wnids) != len(names):
        raise ValueError(f"{len(names)} CLIP ImageNet names for {len(wnids)} classes")
    return dict(zip(wnids, names, strict=True))


def _key(name: str) -> str:
    return name.replace("_", " ").strip().lower()


def clip_food101_names() -> dict[str, str]:
    """Food-101 class (its folder name or words, any case) → CLIP's class name."""
    return {_key(name): name for name in _packaged_names("clip_food101")}


def _is_food101(classes: Sequence[str]) -> bool:
    food = clip_food101_names()
    return bool(classes) and all(_key(c) in food for c in classes)


def class_names(classes: Sequence[str]) -> list[str]:
    """Readable names for a test set's classes, as prompts should say them.

    ImageNet-1k WordNet ids become CLIP's names ("n01514668" → "rooster", where timm says
    "cock"), other WordNet ids the first lemma of timm's ImageNet-21k info ("n02084071" →
    "dog"); Food-101's classes CLIP's Food-101 names ("apple_pie" → "apple pie"); other names
    keep their words,
    with underscores read as spaces.
    """
    if classes and all(_WNID.match(c) for c in classes):
        clip = clip_imagenet_names()
        info = ImageNetInfo("imagenet-22k")
        names = []
        for wnid in classes:
            if wnid in clip:
                names.append(clip[wnid])
                continue
            try:
                lemmas = info.label_name_to_description(wnid)
            except KeyError:
                raise ValueError(f"class {wnid!r} is not a WordNet id timm knows") from None
            names.append(lemmas.split(",")[0].strip())
        return names
    if _is_food101(classes):
        food = clip_food101_names()
        return [food[_key(c)] for c in classes]
    return [c.replace("_", " ").strip() for c in classes]


def default_template_set(classes: Sequence[str]) -> str:
    """The CLIP template set for a test set's classes: Food-101's for Food-101, ImageNet's
    (CLIP's general-purpose set) otherwise."""
    return "clip_food101" if _is_food101(classes) else "clip_imagenet"


@torch.no_grad()
def build_classifier(
    encode_text: Callable[[list[str]], torch.Tensor],
    names: Sequence[str],
    templates: Sequence[str],
) -> torch.Tensor:
    """[embed dim, classes] matrix of prompt-ensembled, unit-length class embeddings.

    encode_text: captions → [N, D] embeddings (the LiT text tower and its projection).
    """
    if not names:
        raise ValueError("zero-shot needs at least one class name")
    columns = []
    for name in names:
        prompts = [t.replace("{}", name) for t in templates]
        embeddings = F.normalize(encode_text(prompts).float(), dim=-1)
        columns.append(F.normalize(embeddings.mean(dim=0), dim=-1))
    return torch.stack(columns, dim=1)


def zeroshot_logits(image_embeddings: torch.Tensor, classifier: torch.Tensor) -> torch.Tensor:
    """[B, classes] cosine similarities of images with the class embeddings."""
    return F.normalize(image_embeddings.float(), dim=-1) @ classifier
