"""The compiled component specs in `components/<name>.yaml`, for the Kubeflow UI and for other
people's pipelines (`kfp.components.load_component_from_file`).

    python -m mawsflow.orchestration.specs --write    regenerate them
    python -m mawsflow.orchestration.specs --check    exit 1 naming every spec that is stale

A spec is stale when it differs from what the component compiles to now: after a change to a
component, to `components/images.yaml` (a new image tag or digest), or to kfp.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from kfp import compiler
from kfp.dsl.base_component import BaseComponent

from mawsflow.orchestration import components
from mawsflow.orchestration.images import IMAGES_FILE

COMPONENTS_DIR = IMAGES_FILE.parent

ALL_COMPONENTS: tuple[BaseComponent, ...] = (
    components.step_images,
    components.build_dataset_plan,
    components.build_dataset_count,
    components.build_dataset_vocab,
    components.build_dataset_write,
    components.build_dataset_finalize,
    components.eval_fingerprint,
    components.eval_dataset,
    components.mae,
    components.wsp,
    components.random_init,
    components.lit,
    components.finetune,
    components.video_dataset,
    components.finetune_video,
    components.detection_dataset,
    components.finetune_detection,
    components.evaluate,
    components.seed_summary,
    components.evaluate_video,
    components.evaluate_detection,
    components.linear_probe,
    components.zeroshot,
    components.lowshot_plan,
    components.lowshot,
    components.lowshot_summary,
    components.transfer_rows,
    components.pick_model,
    components.report,
    components.sweep_report,
    components.retrain_plan,
    components.retrain_inputs,
    components.promotion_gate,
)


def compiled_specs() -> dict[str, str]:
    """File name → the YAML each component compiles to."""
    specs = {}
    with tempfile.TemporaryDirectory() as folder:
        for component in ALL_COMPONENTS:
            path = Path(folder) / f"{component.name}.yaml"
            compiler.Compiler().compile(component, str(path))
            specs[path.name] = path.read_text(encoding="utf-8")
    return specs


def stale_specs(folder: Path = COMPONENTS_DIR) -> list[str]:
    """Specs in `folder` that are missing, out of date, or of no component any more."""
    expected = compiled_specs()
    stale = [
        name
        for name, text in expected.items()
        if not (folder / name).is_file() or (folder / name).read_text(encoding="utf-8") != text
    ]
    leftovers = {p.name for p in folder.glob("*.yaml")} - set(expected) - {IMAGES_FILE.name}
    return sorted(stale + sorted(leftovers))


def write_specs(folder: Path = COMPONENTS_DIR) -> list[str]:
    """Regenerate every spec in `folder`, removing those of components that are gone."""
    expected = compiled_specs()
    for name, text in expected.items():
        (folder / name).write_text(text, encoding="utf-8")
    for path in folder.glob("*.yaml"):
        if path.name not in expected and path.name != IMAGES_FILE.name:
            path.unlink()
    return sorted(expected)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mawsflow.orchestration.specs", description=__doc__.split("\n\n")[0]
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help="regenerate components/*.yaml")
    action.add_argument("--check", action="store_true", help="fail if any spec is stale")
    args = parser.parse_args(argv)
    if args.write:
        for name in write_specs():
            print(f"wrote {COMPONENTS_DIR / name}")
        return 0
    stale = stale_specs()
    if stale:
        print(
            "stale component specs (run python -m mawsflow.orchestration.specs --write): "
            + ", ".join(stale),
            file=sys.stderr,
        )
        return 1
    print(f"{len(ALL_COMPONENTS)} component specs are current")
    return 0


if __name__ == "__main__":
    sys.exit(main())
