"""Zero-shot classification with a LiT model: class names × prompt templates (CLIP's protocol).

Each class's prompts ("a photo of a {}." …) are embedded by the text tower, L2-normalised and
averaged (prompt ensembling), and the average is normalised again; an image is scored by the
cosine similarity of its embedding with every class's embedding.

Class names come from the test set's `classes.json`. Where those are WordNet ids (an ImageNet
ImageFolder tree names its folders `n01440764`, …), timm's ImageNet info turns them into words.
Templates come from the project's own sets in `mawsflow/evaluation/prompts/` (by name) or from
a user's file with one template per line.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from importlib import resources

import torch
import torch.nn.functional as F
from timm.data import ImageNetInfo

_WNID = re.compile(r"^n\d{8}$")


def builtin_template_sets() -> list[str]:
    """Names of the project's template sets (`objects`, `food`, `clothing`, …)."""
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


def class_names(classes: Sequence[str]) -> list[str]:
    """Readable names for a test set's classes, as prompts should say them.

    WordNet ids become their first lemma from timm's ImageNet info ("n01440764" → "tench");
    other names keep their words, with underscores read as spaces ("apple_pie" → "apple pie").
    """
    if classes and all(_WNID.match(c) for c in classes):
        info = ImageNetInfo("imagenet-22k")
        names = []
        for wnid in classes:
            try:
                lemmas = info.label_name_to_description(wnid)
            except KeyError:
                raise ValueError(f"class {wnid!r} is not a WordNet id timm knows") from None
            names.append(lemmas.split(",")[0].strip())
        return names
    return [c.replace("_", " ").strip() for c in classes]


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
