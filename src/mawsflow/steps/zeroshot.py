"""`mawsflow zeroshot`: zero-shot classification with a LiT model (CLIP's protocol, §B).

Class names come from the test set's `classes.json`, as CLIP names them where the set is
ImageNet-1k or Food-101 (mawsflow.evaluation.zeroshot); prompt templates from a packaged set
(`--templates auto`, the default: CLIP's set for the dataset; or `clip_imagenet`,
`clip_food101`, `objects`, `food`, `clothing`) or a file of the user's
(`--templates s3://…/templates.txt`). Each class's prompts are ensembled; top-1 and top-5 go
to `<output>/metrics.json`.

Runs as one process, or under torchrun with the test shards split across ranks.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mawsflow import storage
from mawsflow.data.eval_loader import eval_loader
from mawsflow.data.eval_shards import open_split
from mawsflow.data.transforms import ZEROSHOT_CROP_PCT
from mawsflow.engine.distributed import init_distributed, shutdown
from mawsflow.errors import ConfigError
from mawsflow.evaluation.classification_metrics import ClassificationMeter
from mawsflow.evaluation.eval_cli import dataset_name, eval_parser
from mawsflow.evaluation.features import batch_outputs
from mawsflow.evaluation.results import EvalResult, model_lineage, write_result
from mawsflow.evaluation.zeroshot import (
    AUTO_TEMPLATES,
    build_classifier,
    builtin_template_sets,
    builtin_templates,
    class_names,
    default_template_set,
    parse_templates,
    zeroshot_logits,
)
from mawsflow.log import setup_logging
from mawsflow.models.pretrained import load_lit_model
from mawsflow.step_cli import EvalOptions

log = logging.getLogger(__name__)


def load_templates(spec: str, classes: Sequence[str]) -> list[str]:
    """A packaged template set by name (`auto`: CLIP's set for these classes), or a template
    file by URI."""
    if spec == AUTO_TEMPLATES:
        spec = default_template_set(classes)
    if spec in builtin_template_sets():
        return builtin_templates(spec)
    if "/" not in spec and not spec.endswith(".txt"):
        raise ConfigError(
            f"--templates {spec!r}: neither a template set ({builtin_template_sets()}) nor a file"
        )
    try:
        text = storage.read_text(spec)
    except storage.NotFoundError:
        raise ConfigError(f"--templates {spec!r}: no such file") from None
    return parse_templates(text, source=spec)


@dataclass(frozen=True)
class ZeroShotConfig:
    options: EvalOptions
    # The evaluation dataset and its split that is classified.
    dataset: str
    split: str = "test"
    # A packaged template set, a template file URI, or `auto` (load_templates).
    templates: str = AUTO_TEMPLATES


def run(config: ZeroShotConfig) -> EvalResult | None:
    """Classify the split zero-shot; rank 0 writes and returns the result."""
    opts = config.options
    ctx = init_distributed(opts.device)
    try:
        split = open_split(config.dataset, config.split)
        templates = load_templates(config.templates, split.classes)
        model, tokenizer, card = load_lit_model(opts.model)
        model.to(ctx.device)
        # The start of the compute, for the demo's time split (bench/demo_time_split.py).
        log.info("evaluating", extra={"task": "zeroshot"})
        names = class_names(split.classes)

        def encode_text(prompts: list[str]) -> torch.Tensor:
            tokens = {k: v.to(ctx.device) for k, v in tokenizer(prompts).items()}
            return model.encode_text(tokens["input_ids"], tokens["attention_mask"])

        classifier = build_classifier(encode_text, names, templates).cpu()
        loader = eval_loader(
            split,
            img_size=int(card["img_size"]),
            batch_size=opts.batch_size,
            num_workers=opts.num_workers,
            crop_pct=opts.crop_pct,
            rank=ctx.rank,
            world_size=ctx.world_size,
        )
        meter = ClassificationMeter(ks=(1, 5))
        for embeddings, labels, _ in batch_outputs(loader, model.encode_image, ctx.device):
            meter.update(zeroshot_logits(embeddings, classifier), labels)
        meter.all_reduce()
        if not ctx.is_main:
            return None
        metrics = meter.compute()
        name = opts.name or dataset_name(config.dataset)
        result = EvalResult(
            step="zeroshot",
            evaluation=f"{name} zero-shot",
            pretraining=opts.pretraining or model_lineage(opts.model),
            metrics={**metrics, "num_templates": float(len(templates))},
            table={f"{name} zero-shot": metrics["top1"]},
            model=opts.model,
            dataset=config.dataset,
        )
        write_result(opts.output, result)
        log.info("zero-shot", extra={"evaluation": result.evaluation, **metrics})
        return result
    finally:
        shutdown()


def main(argv: Sequence[str] | None = None) -> int:
    parser = eval_parser(
        "zeroshot",
        "Zero-shot classification of a test set with a LiT model and prompt ensembling.",
        model_help="the lit step's output",
        # The maws zero-shot evaluation resizes the short side to the size and centre-crops.
        crop_pct=ZEROSHOT_CROP_PCT,
    )
    parser.add_argument("--dataset", required=True, help="evaluation dataset URI")
    parser.add_argument("--split", default="test")
    parser.add_argument(
        "--templates",
        default=AUTO_TEMPLATES,
        help=f"a template set ({', '.join(builtin_template_sets())}), a template file URI, "
        "or 'auto' (the default): CLIP's Food-101 set for Food-101, CLIP's ImageNet set else",
    )
    args = parser.parse_args(argv)
    setup_logging()
    run(
        ZeroShotConfig(
            EvalOptions.from_args(args), args.dataset, split=args.split, templates=args.templates
        )
    )
    return 0
