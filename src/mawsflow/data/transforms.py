"""Image transforms: the training augmentation, the evaluation view, and normalisation.

Images leave the loaders as uint8 CHW tensors and are normalised on the device
(`normalize_images`), so the host sends a quarter of the bytes a float tensor would take.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import random
from collections.abc import Iterator

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image
from timm.data.auto_augment import rand_augment_transform

from mawsflow.errors import ConfigError
from mawsflow.recipes import AugmentConfig

# ImageNet statistics, as MAE, SWAG and timm normalise.
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)

# How an evaluation image becomes img_size × img_size. None: resize it straight to that size
# (both sides, aspect ratio not kept), as the maws evaluation of finetuned models does
# (`eval_finetuned.py`, without `--no_rescale`). A fraction f: resize the short side to
# img_size / f and centre-crop; timm's 0.875 (224 of 256) is the common choice, and the maws
# zero-shot evaluation (`eval_zeroshot.py`) resizes the short side to the size and crops, f = 1.
DEFAULT_CROP_PCT: float | None = None
ZEROSHOT_CROP_PCT: float | None = 1.0


@contextlib.contextmanager
def seeded_host_rngs(seed: int) -> Iterator[None]:
    """Seed the CPU torch, Python and NumPy generators for one sample's augmentation and put
    them back afterwards, so that loading in the training process leaves the training RNG
    stream (masks, drop-path, mixup) untouched."""
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        # Only the CPU generator: torch.manual_seed would also queue seeds for every
        # accelerator backend, which costs more than the crop itself.
        torch.default_generator.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


class RandomResizedCropFlip:
    """Decode an image and apply the recipe's augmentation: RandomResizedCrop, horizontal flip
    and, where the recipe asks (Table 13), timm's RandAugment after them.

    The crop box is drawn by torchvision's `RandomResizedCrop.get_params` from the image's
    header size, before decoding. JPEGs are then decoded at the smallest DCT scale that still
    gives the crop at least the output resolution, and crop + resize is one resampling pass.
    Grayscale and palette images become RGB. Every random choice comes
    from `seed`. Returns a uint8 [3, size, size] tensor.
    """

    def __init__(self, augment: AugmentConfig) -> None:
        crop = augment.crop
        self.size = crop.size
        self.scale = tuple(crop.scale)
        self.ratio = tuple(crop.ratio)
        self.hflip = augment.hflip
        self.resample = {
            "bicubic": Image.Resampling.BICUBIC,
            "bilinear": Image.Resampling.BILINEAR,
        }[crop.interpolation]
        self.rand_augment = None
        if augment.rand_augment is not None:
            ra = augment.rand_augment
            self.rand_augment = rand_augment_transform(
                f"rand-m{ra.magnitude}-n{ra.num_layers}",
                {
                    "translate_const": int(self.size * 0.45),
                    "img_mean": tuple(round(255 * m) for m in IMAGE_MEAN),
                },
            )

    def draw_crop_flip(self, img: Image.Image) -> tuple[int, int, int, int, bool]:
        """The crop box (top, left, height, width) for `img`'s size and whether to flip, drawn
        from the host generators (inside `seeded_host_rngs`)."""
        top, left, h, w = T.RandomResizedCrop.get_params(img, self.scale, self.ratio)
        return top, left, h, w, bool(torch.rand(()) < self.hflip)

    def __call__(self, data: bytes, seed: int) -> torch.Tensor:
        img = Image.open(io.BytesIO(data))
        width, height = img.size
        with seeded_host_rngs(seed):
            top, left, h, w, flip = self.draw_crop_flip(img)
            if img.format == "JPEG" and min(w, h) >= 2 * self.size:
                img.draft(
                    "RGB",
                    (math.ceil(width * self.size / w), math.ceil(height * self.size / h)),
                )
            sx, sy = img.size[0] / width, img.size[1] / height
            if img.mode not in ("RGB", "L"):
                img = img.convert("RGB")
            img = img.resize(
                (self.size, self.size),
                self.resample,
                box=(left * sx, top * sy, (left + w) * sx, (top + h) * sy),
                # Large downscales first shrink by an integer factor with a box filter; at a
                # gap of 3 the result matches a direct resampling (Pillow's documentation).
                reducing_gap=3.0,
            )
            if flip:
                img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            if img.mode != "RGB":
                img = img.convert("RGB")
            if self.rand_augment is not None:
                img = self.rand_augment(img)
        return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).contiguous()


def parse_crop_pct(value: str) -> float | None:
    """A `--crop-pct` value: `none` (resize straight to the size) or a fraction in (0, 1]."""
    if value.strip().lower() == "none":
        return None
    try:
        crop_pct = float(value)
    except ValueError:
        raise ConfigError(f"crop_pct must be 'none' or a number in (0, 1], got {value!r}") from None
    check_crop_pct(crop_pct)
    return crop_pct


def check_crop_pct(crop_pct: float | None) -> None:
    if crop_pct is not None and not 0 < crop_pct <= 1:
        raise ConfigError(f"crop_pct must be in (0, 1] or None, got {crop_pct}")


def eval_image(data: bytes, img_size: int, crop_pct: float | None) -> torch.Tensor:
    """Evaluation view of an encoded image as RGB uint8 [3, img_size, img_size] (normalised
    later, on the device): resized straight to img_size × img_size when `crop_pct` is None,
    else its short side resized to img_size / crop_pct and the centre cropped. Bicubic, as
    both maws evaluation scripts."""
    check_crop_pct(crop_pct)
    img = Image.open(io.BytesIO(data)).convert("RGB")
    if crop_pct is None:
        img = img.resize((img_size, img_size), Image.Resampling.BICUBIC)
    else:
        scale_to = round(img_size / crop_pct)
        width, height = img.size
        factor = scale_to / min(width, height)
        new_w = max(scale_to, round(width * factor))
        new_h = max(scale_to, round(height * factor))
        img = img.resize((new_w, new_h), Image.Resampling.BICUBIC)
        left, top = (new_w - img_size) // 2, (new_h - img_size) // 2
        img = img.crop((left, top, left + img_size, top + img_size))
    return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).contiguous()


@functools.cache
def _normalization(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    # Made once per device: a fresh host-to-device copy every step would stall the GPU queue.
    mean = torch.tensor(IMAGE_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD, device=device).view(1, 3, 1, 1)
    return mean, std


def normalize_images(images: torch.Tensor, *, normalize: bool = True) -> torch.Tensor:
    """uint8 [B, 3, H, W] on any device → float32 scaled to [0, 1] and ImageNet-normalised."""
    x = images.float().div_(255.0)
    if normalize:
        mean, std = _normalization(x.device)
        x = x.sub_(mean).div_(std)
    return x
