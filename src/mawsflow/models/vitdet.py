"""ViTDet with Cascade Mask R-CNN heads on the project's plain ViT trunk (Appendix B, Tables 18–19).

The paper detects with ViTDet (Li et al. 2022): a plain, single-scale ViT whose last feature
map alone feeds a *simple feature pyramid* (deconvolutions up, max-pooling down, to strides 4,
8, 16 and 32, plus a max-pooled stride-64 level for the RPN), under Cascade Mask R-CNN (Cai &
Vasconcelos 2018): three box stages trained at IoU 0.5, 0.6 and 0.7, each refining the boxes of
the one before.

Built from torchvision's detection parts: its `GeneralizedRCNN` (resize, normalise, batch), RPN
(anchors, proposals, NMS), `MultiScaleRoIAlign`, `BoxCoder`, `Matcher`, the balanced sampler,
the conv+fc box head, the Mask R-CNN mask head with its loss and inference. torchvision has no
cascade, so `CascadeRoIHeads` below is the one piece written here: per-stage matching, the
class-agnostic box regression each stage trains, refinement between stages, and at inference
the class scores averaged over the stages (as Cascade R-CNN does).

What follows ViTDet and what is simplified (the simplifications are marked NOT; each matters
for the paper's numbers, not for the CPU-sized models the tests train):

- the trunk is the project's timm ViT as trained (`models.vit.Trunk`, loaded through
  `models.pretrained.load_trunk`, which interpolates its position embeddings to the detection
  resolution); the class token is dropped and the final norm is unused, as ViTDet does;
- window attention as ViTDet's: every block but a few evenly spaced global ones (the last of
  each quarter of the depth: blocks 2, 5, 8, 11 of ViT-B, 5, 11, 17, 23 of ViT-L) attends within
  14×14-token windows, the map zero-padded to whole windows. A trunk block is per-token apart
  from its attention, so a windowed block is the trunk's own block run on each window's tokens:
  the pretrained weights apply unchanged. Trunks under 4 blocks (the CPU variants) are all
  global. ViTDet's relative position biases are NOT implemented (they would add parameters the
  pretrained trunks do not have);
- inputs are resized so their longer side is `img_size` and zero-padded to a square, as
  ViTDet's large-scale-jitter pipeline does at test time; the jitter itself (scale 0.1–2.0) is
  a data-pipeline concern, not here;
- the heads follow ViTDet's Cascade Mask R-CNN config: LayerNorm in the pyramid, 4 conv + 1 fc
  box heads and 4-conv mask head with LayerNorm, 2-conv RPN head, class-agnostic regression
  with per-stage weights (10,10,5,5), (20,20,10,10), (30,30,15,15), L1 box loss. The first
  stage trains on the RPN's proposals plus the ground-truth boxes, sampled to 512 a quarter
  foreground; later stages on the previous stage's refined boxes, re-matched at their IoU, not
  resampled; the mask branch on the first stage's foreground RoIs. Detectron2's scaling of each
  stage's gradient by 1/3 is NOT applied, nor is LVIS's repeat-factor sampling;
- LVIS's federated annotation in training: when the targets carry `verified` (the classes an
  image says anything about: its annotated ones, its `neg_category_ids` and the background) and
  `not_exhaustive` class flags (`mawsflow.data.detection.DetectionTrainDecoder`), each stage's
  softmax runs over that image's verified classes only, and for its background RoIs also
  without its not-exhaustive classes: a class nobody checked in an image is neither rewarded
  nor penalised there. Detectron2's ViTDet LVIS configs use instead a sigmoid "federated
  loss" over the batch's classes plus frequency-sampled negatives (Zhou et al. 2021), which
  approximates the same rule without per-image lists; ours applies LVIS's rule as annotated.

Labels are torchvision's: 0 is the background, 1..num_classes the foreground classes, used as
the dataset's category ids (COCO's run to 90 with gaps: num_classes=90 covers them, or map
them to 1..80 in the data).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from torch import nn
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler, BoxCoder, Matcher
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import maskrcnn_inference, maskrcnn_loss
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign, batched_nms, box_iou, clip_boxes_to_image
from torchvision.ops import boxes as box_ops

from mawsflow.errors import ConfigError
from mawsflow.models.pretrained import load_trunk
from mawsflow.models.vit import Trunk, create_trunk

# ImageNet's RGB mean and std (what the trunks are trained with), on [0, 1] pixels.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ViTDetConfig:
    """The detector's shape. Defaults are ViTDet's COCO Cascade Mask R-CNN settings at 1024 px
    (detectron2 projects/ViTDet); the tests shrink sizes and anchors."""

    arch: str
    num_classes: int  # foreground classes
    img_size: int = 1024
    drop_path: float = 0.0
    window_size: int = 14  # tokens per side of an attention window
    global_blocks: tuple[int, ...] | None = None  # None: ViTDet's 4 evenly spaced blocks
    fpn_channels: int = 256
    pyramid_strides: tuple[int, ...] = (4, 8, 16, 32)  # plus a max-pooled level at twice the last
    anchor_sizes: tuple[int, ...] = (32, 64, 128, 256, 512)  # one per pyramid level
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    rpn_pre_nms_top_n: tuple[int, int] = (2000, 1000)  # (training, testing)
    rpn_post_nms_top_n: tuple[int, int] = (2000, 1000)
    cascade_ious: tuple[float, ...] = (0.5, 0.6, 0.7)
    box_weights: tuple[tuple[float, float, float, float], ...] = (
        (10.0, 10.0, 5.0, 5.0),
        (20.0, 20.0, 10.0, 10.0),
        (30.0, 30.0, 15.0, 15.0),
    )
    box_head_convs: int = 4
    box_head_fc: int = 1024
    mask_head_convs: int = 4
    rois_per_image: int = 512
    positive_fraction: float = 0.25
    score_thresh: float = 0.05
    nms_thresh: float = 0.5
    detections_per_img: int = 100

    def check(self) -> None:
        if self.num_classes < 1:
            raise ConfigError(f"num_classes: {self.num_classes}; need at least one class")
        if len(self.cascade_ious) != len(self.box_weights) or not self.cascade_ious:
            raise ConfigError(
                f"cascade_ious {self.cascade_ious} and box_weights need one entry per stage"
            )
        if len(self.anchor_sizes) != len(self.pyramid_strides) + 1:
            raise ConfigError(
                f"anchor_sizes: {len(self.anchor_sizes)} given, need one per pyramid level "
                f"({len(self.pyramid_strides)} strides + the pooled level)"
            )


def _norm(channels: int) -> nn.Module:
    return LayerNorm2d(channels)


class SimpleFeaturePyramid(nn.Module):
    """ViTDet's pyramid from one stride-`patch_size` map: for each target stride, deconvolutions
    (stride 2, with LayerNorm and GELU between) to go finer or max-pooling to go coarser, then a
    1×1 and a 3×3 convolution with LayerNorm; and a stride-2 max-pool of the coarsest level on
    top (detectron2's LastLevelMaxPool), for the RPN's largest anchors."""

    def __init__(self, dim: int, patch_size: int, strides: tuple[int, ...], channels: int) -> None:
        super().__init__()
        self.names = [str(i) for i in range(len(strides))]
        self.levels = nn.ModuleList()
        for stride in strides:
            steps = math.log2(patch_size / stride)
            if steps != int(steps):
                raise ConfigError(
                    f"pyramid_strides: {stride} is not the patch size {patch_size} times a "
                    "power of two"
                )
            layers: list[nn.Module] = []
            width = dim
            for i in range(int(steps)):  # finer: deconvolutions, halving the width each time
                if i:
                    layers += [_norm(width), nn.GELU()]
                layers.append(nn.ConvTranspose2d(width, width // 2, 2, stride=2))
                width //= 2
            layers += [nn.MaxPool2d(2, 2) for _ in range(int(-steps))]  # coarser
            layers += [
                nn.Conv2d(width, channels, 1, bias=False),
                _norm(channels),
                nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                _norm(channels),
            ]
            self.levels.append(nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        features = OrderedDict(
            (name, level(x)) for name, level in zip(self.names, self.levels, strict=True)
        )
        features["pool"] = F.max_pool2d(features[self.names[-1]], kernel_size=1, stride=2)
        return features


def global_block_indices(depth: int, config: ViTDetConfig) -> tuple[int, ...]:
    """The blocks with global attention: `config.global_blocks`, or ViTDet's choice, the last
    block of each quarter of the depth (every block when there are fewer than 4)."""
    if config.global_blocks is not None:
        wrong = [i for i in config.global_blocks if not 0 <= i < depth]
        if wrong:
            raise ConfigError(f"global_blocks: {wrong} outside the trunk's {depth} blocks")
        return tuple(config.global_blocks)
    if depth < 4:
        return tuple(range(depth))
    return tuple((q + 1) * depth // 4 - 1 for q in range(4))


def window_partition(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """[B, H, W, C] → [B·windows, window², C], zero-padding H and W to whole windows; also the
    padded size."""
    b, h, w, c = x.shape
    x = F.pad(x, (0, 0, 0, -w % window, 0, -h % window))
    hp, wp = x.shape[1:3]
    x = x.reshape(b, hp // window, window, wp // window, window, c).transpose(2, 3)
    return x.reshape(-1, window * window, c), (hp, wp)


def window_unpartition(
    x: torch.Tensor, window: int, padded: tuple[int, int], size: tuple[int, int], batch: int
) -> torch.Tensor:
    """The inverse of `window_partition`: [B·windows, window², C] → [B, H, W, C]."""
    hp, wp = padded
    x = x.reshape(batch, hp // window, wp // window, window, window, -1).transpose(2, 3)
    return x.reshape(batch, hp, wp, -1)[:, : size[0], : size[1]]


class ViTDetBackbone(nn.Module):
    """The trunk's last-block patch features through the simple feature pyramid. Inputs smaller
    than the trunk's square `img_size` are zero-padded at the bottom and right."""

    def __init__(self, trunk: Trunk, config: ViTDetConfig) -> None:
        super().__init__()
        if tuple(trunk.patch_embed.img_size) != (config.img_size, config.img_size):
            raise ConfigError(
                f"img_size: the trunk takes {tuple(trunk.patch_embed.img_size)} px, the detector "
                f"{config.img_size} px"
            )
        self.trunk = trunk
        # What ViTDet does not use of the trunk (the class token, the final norm, a classifier
        # head) gets no gradient: frozen, so that DDP does not wait for one.
        unused = [trunk.cls_token, trunk.reg_token]
        for module in (trunk.norm, trunk.fc_norm, trunk.head):
            unused += list(module.parameters())
        for param in unused:
            if param is not None:
                param.requires_grad_(False)
        self.img_size = config.img_size
        self.window_size = config.window_size
        self.global_blocks = frozenset(global_block_indices(len(trunk.blocks), config))
        self.out_channels = config.fpn_channels  # what torchvision's heads read
        self.pyramid = SimpleFeaturePyramid(
            trunk.embed_dim,
            trunk.patch_embed.patch_size[0],
            config.pyramid_strides,
            config.fpn_channels,
        )

    def patch_features(self, images: torch.Tensor) -> torch.Tensor:
        """The last block's [B, C, H/patch, W/patch] map of an image batch padded to img_size."""
        height, width = images.shape[-2:]
        if height > self.img_size or width > self.img_size:
            raise ValueError(f"a {height}×{width} batch is larger than img_size {self.img_size}")
        x = F.pad(images, (0, self.img_size - width, 0, self.img_size - height))
        trunk = self.trunk
        x = trunk.patch_embed(x)
        # ViTDet drops the class token and its position embedding; the patch grid's embeddings
        # were resampled to this resolution when the trunk was loaded.
        x = x + trunk.pos_embed[:, trunk.num_prefix_tokens :]
        x = trunk.norm_pre(trunk.pos_drop(x))
        batch, grid = x.shape[0], tuple(trunk.patch_embed.grid_size)
        for index, block in enumerate(trunk.blocks):
            if index in self.global_blocks:
                x = block(x)
                continue
            windows, padded = window_partition(x.reshape(batch, *grid, -1), self.window_size)
            x = window_unpartition(block(windows), self.window_size, padded, grid, batch)
            x = x.reshape(batch, grid[0] * grid[1], -1)
        return x.transpose(1, 2).reshape(batch, -1, *grid)

    def forward(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return self.pyramid(self.patch_features(images))


class CascadeStage(nn.Module):
    """One cascade stage: RoI features → box head → class scores and a class-agnostic box
    refinement, trained against ground truth matched at this stage's IoU."""

    def __init__(
        self, config: ViTDetConfig, iou: float, weights: tuple[float, ...], pooled: int
    ) -> None:
        super().__init__()
        channels = config.fpn_channels
        self.head = FastRCNNConvFCHead(
            (channels, pooled, pooled),
            [channels] * config.box_head_convs,
            [config.box_head_fc],
            norm_layer=_norm,
        )
        self.cls_score = nn.Linear(config.box_head_fc, config.num_classes + 1)
        self.bbox_pred = nn.Linear(config.box_head_fc, 4)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)
        self.box_coder = BoxCoder(weights)
        # One threshold: at or above it a proposal is its best ground truth's, below it background.
        self.matcher = Matcher(iou, iou, allow_low_quality_matches=False)

    def forward(self, box_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.head(box_features)
        return self.cls_score(hidden), self.bbox_pred(hidden)

    def label(
        self, proposals: torch.Tensor, gt_boxes: torch.Tensor, gt_labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(index of the matched ground truth or -1, class label with 0 for background)."""
        if gt_boxes.numel() == 0:
            matched = torch.full((len(proposals),), -1, dtype=torch.int64, device=proposals.device)
            return matched, torch.zeros_like(matched)
        matched = self.matcher(box_iou(gt_boxes, proposals))
        labels = gt_labels[matched.clamp(min=0)].to(torch.int64)
        labels[matched < 0] = 0
        return matched, labels

    def loss(
        self,
        class_logits: torch.Tensor,
        box_deltas: torch.Tensor,
        proposals: list[torch.Tensor],
        labels: list[torch.Tensor],
        matched_gt: list[torch.Tensor],
        targets: list[dict[str, torch.Tensor]] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy over all RoIs (over each image's verified classes when the targets
        carry LVIS's federated flags) and L1 box loss on the foreground ones, normalised by the
        number of RoIs (Fast R-CNN's normalisation)."""
        all_labels = torch.cat(labels)
        if targets is not None and targets and "verified" in targets[0]:
            class_logits = class_logits.masked_fill(
                ~federated_classes(labels, targets), float("-inf")
            )
        targets = self.box_coder.encode(matched_gt, proposals)
        regression_targets = torch.cat(targets)
        foreground = all_labels > 0
        box_loss = F.l1_loss(
            box_deltas[foreground], regression_targets[foreground], reduction="sum"
        ) / max(all_labels.numel(), 1)
        return F.cross_entropy(class_logits, all_labels), box_loss


def federated_classes(
    labels: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]
) -> torch.Tensor:
    """[RoIs, classes + 1] flags of the classes each RoI's loss may see: its image's verified
    classes, less the not-exhaustive ones for a background RoI (LVIS's federated rules)."""
    rows = []
    for roi_labels, target in zip(labels, targets, strict=True):
        verified = target["verified"].bool()
        background = verified & ~target["not_exhaustive"].bool()
        background[0] = True
        rows.append(torch.where((roi_labels > 0)[:, None], verified, background))
    return torch.cat(rows)


class CascadeRoIHeads(nn.Module):
    """Cascade R-CNN's box stages plus Mask R-CNN's mask branch, with torchvision's RoIHeads
    interface: `(features, proposals, image_sizes, targets) -> (detections, losses)`."""

    def __init__(self, config: ViTDetConfig, feature_names: list[str]) -> None:
        super().__init__()
        self.config = config
        self.box_pool = MultiScaleRoIAlign(feature_names, output_size=7, sampling_ratio=2)
        self.mask_pool = MultiScaleRoIAlign(feature_names, output_size=14, sampling_ratio=2)
        self.stages = nn.ModuleList(
            CascadeStage(config, iou, weights, pooled=7)
            for iou, weights in zip(config.cascade_ious, config.box_weights, strict=True)
        )
        self.sampler = BalancedPositiveNegativeSampler(
            config.rois_per_image, config.positive_fraction
        )
        channels = config.fpn_channels
        self.mask_head = MaskRCNNHeads(
            channels, [channels] * config.mask_head_convs, 1, norm_layer=_norm
        )
        self.mask_predictor = MaskRCNNPredictor(channels, channels, config.num_classes + 1)

    def _sample(
        self, proposals: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]
    ) -> list[torch.Tensor]:
        """The first stage's training RoIs: the RPN's proposals plus the ground-truth boxes,
        subsampled to `rois_per_image` with a quarter foreground (Fast R-CNN's sampling)."""
        first = self.stages[0]
        proposals = [torch.cat([p, t["boxes"]]) for p, t in zip(proposals, targets, strict=True)]
        labels = [
            first.label(p, t["boxes"], t["labels"])[1]
            for p, t in zip(proposals, targets, strict=True)
        ]
        positive, negative = self.sampler(labels)
        return [
            p[(pos | neg).bool()] for p, pos, neg in zip(proposals, positive, negative, strict=True)
        ]

    def forward(
        self,
        features: dict[str, torch.Tensor],
        proposals: list[torch.Tensor],
        image_sizes: list[tuple[int, int]],
        targets: list[dict[str, torch.Tensor]] | None = None,
    ) -> tuple[list[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
        if self.training:
            if targets is None:
                raise ValueError("training needs targets")
            return [], self._losses(features, proposals, image_sizes, targets)
        return self._detect(features, proposals, image_sizes), {}

    def _losses(
        self,
        features: dict[str, torch.Tensor],
        proposals: list[torch.Tensor],
        image_sizes: list[tuple[int, int]],
        targets: list[dict[str, torch.Tensor]],
    ) -> dict[str, torch.Tensor]:
        losses: dict[str, torch.Tensor] = {}
        boxes = self._sample(proposals, targets)
        first_boxes, first_matches, first_labels = boxes, [], []
        for k, stage in enumerate(self.stages):
            if k:  # later stages train on the previous stage's refined boxes, re-matched
                boxes = [b.detach() for b in boxes]
            matches, labels = [], []
            for b, t in zip(boxes, targets, strict=True):
                matched, label = stage.label(b, t["boxes"], t["labels"])
                matches.append(matched)
                labels.append(label)
            if k == 0:
                first_matches, first_labels = matches, labels
            class_logits, deltas = stage(self.box_pool(features, boxes, image_sizes))
            matched_gt = [
                t["boxes"][m.clamp(min=0)] if len(t["boxes"]) else torch.zeros_like(b)
                for b, m, t in zip(boxes, matches, targets, strict=True)
            ]
            cls_loss, box_loss = stage.loss(
                class_logits, deltas, boxes, labels, matched_gt, targets
            )
            losses[f"loss_classifier_stage{k}"] = cls_loss
            losses[f"loss_box_reg_stage{k}"] = box_loss
            boxes = self._refine(stage, deltas, boxes, image_sizes)
        # The mask branch trains on the first stage's foreground RoIs (as Cascade Mask R-CNN).
        positive = [label > 0 for label in first_labels]
        mask_boxes = [b[p] for b, p in zip(first_boxes, positive, strict=True)]
        if sum(len(b) for b in mask_boxes) == 0:
            # A zero that still touches every mask parameter: DDP expects a gradient for each.
            mask_params = [*self.mask_head.parameters(), *self.mask_predictor.parameters()]
            losses["loss_mask"] = sum(p.sum() for p in mask_params) * 0.0
        else:
            mask_logits = self.mask_predictor(
                self.mask_head(self.mask_pool(features, mask_boxes, image_sizes))
            )
            losses["loss_mask"] = maskrcnn_loss(
                mask_logits,
                mask_boxes,
                [t["masks"] for t in targets],
                [label[p] for label, p in zip(first_labels, positive, strict=True)],
                [m[p] for m, p in zip(first_matches, positive, strict=True)],
            )
        return losses

    @staticmethod
    def _refine(
        stage: CascadeStage,
        deltas: torch.Tensor,
        boxes: list[torch.Tensor],
        image_sizes: list[tuple[int, int]],
    ) -> list[torch.Tensor]:
        decoded = stage.box_coder.decode(deltas, boxes).reshape(-1, 4)
        refined = decoded.split([len(b) for b in boxes])
        return [clip_boxes_to_image(b, size) for b, size in zip(refined, image_sizes, strict=True)]

    def _detect(
        self,
        features: dict[str, torch.Tensor],
        proposals: list[torch.Tensor],
        image_sizes: list[tuple[int, int]],
    ) -> list[dict[str, torch.Tensor]]:
        boxes = proposals
        scores_per_stage = []
        for stage in self.stages:
            class_logits, deltas = stage(self.box_pool(features, boxes, image_sizes))
            scores_per_stage.append(F.softmax(class_logits, dim=-1))
            boxes = self._refine(stage, deltas, boxes, image_sizes)
        scores = torch.stack(scores_per_stage).mean(0).split([len(b) for b in boxes])
        detections = [
            self._per_image(b, s, size)
            for b, s, size in zip(boxes, scores, image_sizes, strict=True)
        ]
        mask_boxes = [d["boxes"] for d in detections]
        if sum(len(b) for b in mask_boxes):
            mask_logits = self.mask_predictor(
                self.mask_head(self.mask_pool(features, mask_boxes, image_sizes))
            )
            masks = maskrcnn_inference(mask_logits, [d["labels"] for d in detections])
        else:
            masks = [torch.zeros((0, 1, 28, 28), device=b.device) for b in mask_boxes]
        for detection, mask in zip(detections, masks, strict=True):
            detection["masks"] = mask
        return detections

    def _per_image(
        self, boxes: torch.Tensor, scores: torch.Tensor, image_size: tuple[int, int]
    ) -> dict[str, torch.Tensor]:
        """Every (box, foreground class) pair above the score threshold, per-class NMS, the best
        `detections_per_img`."""
        num_classes = scores.shape[1] - 1
        labels = torch.arange(1, num_classes + 1, device=boxes.device).expand(len(boxes), -1)
        boxes = boxes[:, None, :].expand(-1, num_classes, -1).reshape(-1, 4)
        scores, labels = scores[:, 1:].reshape(-1), labels.reshape(-1)
        keep = scores > self.config.score_thresh
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = box_ops.remove_small_boxes(boxes, min_size=1e-2)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = batched_nms(boxes, scores, labels, self.config.nms_thresh)
        keep = keep[: self.config.detections_per_img]
        return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}


class ViTDet(GeneralizedRCNN):
    """ViTDet + Cascade Mask R-CNN. Training: `model(images, targets)` → a dict of losses (RPN,
    each stage's classification and box losses, mask). Inference: `model(images)` → per image
    `boxes` (x1, y1, x2, y2 in input pixels), `labels`, `scores`, `masks` (N×1×H×W
    probabilities). Images are float [0, 1] RGB tensors of any size up to `img_size`."""

    def __init__(self, trunk: Trunk, config: ViTDetConfig) -> None:
        config.check()
        backbone = ViTDetBackbone(trunk, config)
        levels = len(config.pyramid_strides) + 1
        anchors = AnchorGenerator(
            sizes=tuple((size,) for size in config.anchor_sizes),
            aspect_ratios=(config.aspect_ratios,) * levels,
        )
        rpn = RegionProposalNetwork(
            anchors,
            RPNHead(config.fpn_channels, len(config.aspect_ratios), conv_depth=2),
            fg_iou_thresh=0.7,
            bg_iou_thresh=0.3,
            batch_size_per_image=256,
            positive_fraction=0.5,
            pre_nms_top_n=dict(zip(("training", "testing"), config.rpn_pre_nms_top_n, strict=True)),
            post_nms_top_n=dict(
                zip(("training", "testing"), config.rpn_post_nms_top_n, strict=True)
            ),
            nms_thresh=0.7,
        )
        # The RoI heads pool from the four strided levels, not the RPN-only pooled one.
        roi_heads = CascadeRoIHeads(config, backbone.pyramid.names)
        # Longer side resized to img_size (min_size = max_size); the backbone pads to a square.
        transform = GeneralizedRCNNTransform(
            config.img_size, config.img_size, list(IMAGENET_MEAN), list(IMAGENET_STD)
        )
        super().__init__(backbone, rpn, roi_heads, transform)
        self.config = config


def build_vitdet(config: ViTDetConfig, *, trunk_uri: str | None = None) -> ViTDet:
    """A ViTDet whose trunk is the pretrained one at `trunk_uri` (a `mae`, `wsp` or `finetune`
    step output, position embeddings resampled to `img_size`) or, without it, a randomly
    initialised `config.arch` trunk."""
    if trunk_uri:
        trunk, _ = load_trunk(
            trunk_uri, img_size=config.img_size, drop_path=config.drop_path, arch=config.arch
        )
    else:
        trunk = create_trunk(config.arch, img_size=config.img_size, drop_path=config.drop_path)
    return ViTDet(trunk, config)


__all__ = [
    "CascadeRoIHeads",
    "SimpleFeaturePyramid",
    "ViTDet",
    "ViTDetBackbone",
    "ViTDetConfig",
    "build_vitdet",
    "federated_classes",
    "global_block_indices",
    "load_detector",
]


def load_detector(uri: str) -> tuple[ViTDet, dict]:
    """The detector `mawsflow finetune-detection` wrote at `uri` (its model card's `detector`
    config and its weights), and the card."""
    from mawsflow.models.artifacts import read_model_card, read_model_weights

    card = read_model_card(uri)
    if card.get("step") != "finetune-detection" or "detector" not in card:
        raise ConfigError(
            f"{uri}: not a finetune-detection output (its model.json says step "
            f"{card.get('step')!r})"
        )
    fields = {
        k: tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v
        for k, v in card["detector"].items()
    }
    config = ViTDetConfig(**fields)
    model = ViTDet(create_trunk(config.arch, img_size=config.img_size), config)
    model.load_state_dict(read_model_weights(uri))
    return model, card
