"""Zero-shot pieces: template sets and files, class names, prompt-ensembled classifiers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mawsflow.evaluation.zeroshot import (
    build_classifier,
    builtin_template_sets,
    builtin_templates,
    class_names,
    clip_food101_names,
    clip_imagenet_names,
    default_template_set,
    parse_templates,
    zeroshot_logits,
)


def test_the_project_ships_template_sets_with_one_slot_each():
    sets = builtin_template_sets()
    assert {"clip_imagenet", "clip_food101", "objects", "food", "clothing"} <= set(sets)
    for name in sets:
        templates = builtin_templates(name)
        assert len(templates) >= (1 if name == "clip_food101" else 5)
        assert all(t.count("{}") == 1 for t in templates)


def test_clips_published_templates_ship_as_data():
    # Appendix B uses CLIP's templates: its 80 for ImageNet, its one for Food-101.
    imagenet = builtin_templates("clip_imagenet")
    assert len(imagenet) == len(set(imagenet)) == 80
    assert imagenet[0] == "a bad photo of a {}." and imagenet[-1] == "a tattoo of the {}."
    assert builtin_templates("clip_food101") == ["a photo of {}, a type of food."]
    assert default_template_set(["apple_pie", "baby_back_ribs"]) == "clip_food101"
    assert default_template_set(["n01440764"]) == "clip_imagenet"
    assert default_template_set(["T-shirt/top"]) == "clip_imagenet"


def test_a_user_template_file_is_parsed_with_comments_and_errors_name_the_line():
    text = "# mine\n\nan origami {}.\n  a sketch of a {}  \n"
    assert parse_templates(text, source="mine.txt") == ["an origami {}.", "a sketch of a {}"]
    with pytest.raises(ValueError, match=r"mine.txt line 2"):
        parse_templates("a {}\nno slot here\n", source="mine.txt")
    with pytest.raises(ValueError, match="no templates"):
        parse_templates("# only a comment\n", source="mine.txt")
    with pytest.raises(ValueError, match="unknown template set"):
        builtin_templates("nope")


def test_class_names_are_clips_for_imagenet_and_food101_else_the_datasets_or_timms():
    assert class_names(["T-shirt/top", "apple_pie"]) == ["T-shirt/top", "apple pie"]
    # ImageNet-1k ids get CLIP's names (timm's first lemmas are "cock" and "kite"); an id
    # outside ImageNet-1k falls back to timm's ImageNet-21k lemma.
    assert class_names(["n01440764", "n01514668", "n01608432", "n02084071"]) == [
        "tench",
        "rooster",
        "kite (bird of prey)",
        "dog",
    ]
    with pytest.raises(ValueError, match="n99999999"):
        class_names(["n01440764", "n99999999"])
    imagenet = clip_imagenet_names()
    assert len(imagenet) == 1000 and imagenet["n15075141"] == "toilet paper"
    assert class_names(sorted(imagenet)) == list(imagenet.values())
    food = sorted(clip_food101_names().values())
    assert len(food) == 101
    folders = [name.replace(" ", "_") for name in food]
    assert class_names(folders) == food and class_names(folders)[0] == "apple pie"


def _bag_of_words(vocab: list[str]):
    """A deterministic text encoder for the test: one dimension per vocabulary word."""

    def encode(prompts: list[str]) -> torch.Tensor:
        out = torch.zeros(len(prompts), len(vocab))
        for row, prompt in enumerate(prompts):
            for word in prompt.replace(".", "").split():
                if word in vocab:
                    out[row, vocab.index(word)] += 1.0
        return out

    return encode


def test_classifier_averages_normalised_prompt_embeddings_per_class():
    vocab = ["photo", "sketch", "cat", "dog"]
    templates = ["a photo of a {}.", "a sketch of a {}."]
    classifier = build_classifier(_bag_of_words(vocab), ["cat", "dog"], templates)
    assert classifier.shape == (4, 2)
    torch.testing.assert_close(classifier.norm(dim=0), torch.ones(2))
    # Each prompt is (style + class)/√2; the mean over styles, renormalised, is
    # (0.5, 0.5, 1, 0)/‖·‖ for "cat".
    expected_cat = F.normalize(torch.tensor([0.5, 0.5, 1.0, 0.0]), dim=0)
    torch.testing.assert_close(classifier[:, 0], expected_cat)

    images = torch.tensor([[0.0, 0.0, 3.0, 0.1], [0.2, 0.0, 0.0, 1.0]])
    assert zeroshot_logits(images, classifier).argmax(dim=1).tolist() == [0, 1]


def test_classifier_needs_classes():
    with pytest.raises(ValueError, match="at least one class"):
        build_classifier(_bag_of_words(["a"]), [], ["a {}"])
