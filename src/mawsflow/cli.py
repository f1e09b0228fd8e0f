"""`mawsflow`: one subcommand per pipeline step.

Each step lives in `mawsflow.steps.<module>` and exposes `main(argv) -> int`. Step modules are
imported only when their subcommand runs, so `mawsflow --help` is instant and a step's heavy
dependencies (torch, transformers, nltk) load only where they are used.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from mawsflow import __version__

# Subcommand → (module under mawsflow.steps, one line for `mawsflow --help`), in pipeline order.
STEPS: dict[str, tuple[str, str]] = {
    "demo-corpus": ("demo_corpus", "Fashion-MNIST demo corpus (hashtag captions) and eval sets"),
    "build-dataset": ("build_dataset", "hashtag → WordNet synset multi-label dataset (§4.1)"),
    "build-in21k": ("build_in21k", "ImageNet-21k folders → deduplicated multi-label dataset (§A)"),
    "mae": ("mae", "MAE pre-pretraining (Table 10)"),
    "wsp": ("wsp", "weakly supervised pretraining from MAE, scratch or timm (Tables 11, 13)"),
    "random-init": ("random_init", "the control: an untrained, randomly initialised trunk"),
    "prepare-eval": (
        "prepare_eval",
        "image (ImageFolder, iNat18…), video (K400, SSv2) or detection (COCO, LVIS) eval shards",
    ),
    "lit": ("lit", "LiT: align a pretrained text tower to the frozen image tower (Table 12)"),
    "zeroshot": ("zeroshot", "zero-shot classification of a test set with prompt ensembling"),
    "finetune": ("finetune", "finetune with a linear head (Tables 14/15) and evaluate"),
    "finetune-video": ("finetune_video", "video finetune of an inflated trunk (Table 16)"),
    "finetune-detection": (
        "finetune_detection",
        "ViTDet + Cascade Mask R-CNN on a pretrained trunk: LVIS, COCO (Tables 18, 19)",
    ),
    "eval": ("evaluate", "evaluate a finetuned model: top-1/5, ReaL, label-subset test sets"),
    "eval-video": ("eval_video", "evaluate a finetuned video model: temporal × spatial views"),
    "eval-detection": (
        "eval_detection",
        "box and mask AP (COCO, LVIS federated) and TIDE errors of a detector (Tables 18-21)",
    ),
    "linear-probe": ("linear_probe", "linear classifier on frozen trunk features"),
    "lowshot": ("lowshot", "K-shot VPT (Table 17) or logistic regression over seeded splits"),
    "report": ("report", "Table 22-shaped results, loss and low-shot plots (Markdown/HTML/JSON)"),
    "launch": ("launch", "run a training command under torchrun: local, PyTorchJob or TrainJob"),
    "registry": ("registry", "model registry in object storage: list, promote, rollback, gate"),
    "retrain-plan": (
        "retrain_plan",
        "a scheduled run's start: corpus snapshot, train or not, warm starts",
    ),
    "promotion-gate": (
        "promotion_gate",
        "register a run's new model; promote it only if it beats production",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mawsflow",
        description=(
            "MAWS (MAE pre-pretraining -> WSP -> LiT -> transfer) as pipeline steps. "
            "Every step reads and writes s3:// or local URIs; run `mawsflow <step> --help` "
            "for its options."
        ),
    )
    parser.add_argument("--version", action="version", version=f"mawsflow {__version__}")
    sub = parser.add_subparsers(dest="step", metavar="<step>", title="steps")
    for name, (_, help_line) in STEPS.items():
        sub.add_parser(name, help=help_line, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] not in STEPS:
        parser.parse_args(argv or ["--help"])
        return 2
    module = importlib.import_module(f"mawsflow.steps.{STEPS[argv[0]][0]}")
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
