"""The training augmentation: RandomResizedCrop + flip (+ RandAugment), seeded per sample, on
real photos; the same crop as torchvision's plain pipeline. The evaluation view is
tests/test_eval_preprocessing.py's."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image
from skimage import data as skdata

from mawsflow.data.transforms import RandomResizedCropFlip
from mawsflow.recipes import AugmentConfig, RandAugmentConfig, RandomResizedCropConfig
from pretrain_shards import augment_config


def test_augmentation_is_seeded_per_sample_and_makes_rgb():
    out = io.BytesIO()
    Image.fromarray(skdata.camera()).save(out, format="PNG")  # grayscale, 512 px
    augment = RandomResizedCropFlip(augment_config(32))
    a, b, c = (augment(out.getvalue(), s) for s in (11, 11, 12))
    assert a.shape == (3, 32, 32) and a.dtype == torch.uint8
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a[0], a[1]) and torch.equal(a[1], a[2]), "gray replicated to RGB"

    jpeg = io.BytesIO()
    Image.fromarray(skdata.astronaut()).save(jpeg, format="JPEG")
    # Large crops of a 512 px JPEG decode at a reduced DCT scale; the result must still be
    # the same picture as the full decode, up to resampling differences.
    reduced = RandomResizedCropFlip(
        AugmentConfig(crop=RandomResizedCropConfig(size=32, scale=(0.9, 1.0)), hflip=0.0)
    )
    full = torchvision_reference(jpeg.getvalue(), seed=5, size=32, scale=(0.9, 1.0))
    diff = (reduced(jpeg.getvalue(), 5).float() - full.float()).abs().mean()
    assert diff < 6, f"draft decoding changed the crop: mean abs diff {diff:.1f}"


def torchvision_reference(data: bytes, *, seed: int, size: int, scale) -> torch.Tensor:
    """The same crop through torchvision's plain PIL pipeline (full decode, crop, resize)."""
    import torchvision.transforms as T
    import torchvision.transforms.functional as F

    img = Image.open(io.BytesIO(data)).convert("RGB")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        top, left, h, w = T.RandomResizedCrop.get_params(img, scale, (0.75, 1.33))
    out = F.resized_crop(img, top, left, h, w, [size, size], T.InterpolationMode.BICUBIC)
    return F.pil_to_tensor(out)


def test_rand_augment_is_seeded_and_leaves_the_training_rngs_alone():
    import random

    jpeg = io.BytesIO()
    Image.fromarray(skdata.coffee()).save(jpeg, format="JPEG")
    plain = RandomResizedCropFlip(augment_config(32))
    ra_config = AugmentConfig(
        crop=RandomResizedCropConfig(size=32, scale=(0.2, 1.0)),
        hflip=0.5,
        rand_augment=RandAugmentConfig(num_layers=2, magnitude=9),
    )
    rand_augment = RandomResizedCropFlip(ra_config)
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    expected = (random.random(), np.random.rand(), torch.rand(()))
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    outputs = [rand_augment(jpeg.getvalue(), s) for s in (3, 3, 4, 5, 6)]
    assert (random.random(), np.random.rand(), torch.rand(())) == expected
    assert torch.equal(outputs[0], outputs[1])
    # RandAugment changes the pixels of most crops (an op can be an identity now and then).
    changed = [
        not torch.equal(o, plain(jpeg.getvalue(), s))
        for o, s in zip(outputs, (3, 3, 4, 5, 6), strict=True)
    ]
    assert sum(changed) >= 3
