"""The paper's figures as pipelines: the MAWS pretraining and transfer, fanned out over a grid.

    pipelines/maws.py --sweep model-size   Figs. 3 and 4's model sizes: a grid cell per
                                           architecture (run parameter `archs`, default
                                           ViT-B/16, L/16, H/14, 2B/14)
    pipelines/maws.py --sweep epochs       Figs. 4 and 5: a cell per (MAE epochs, WSP epochs)
                                           pair (run parameter `epoch_grid`)

    step-images, build-dataset, eval-fingerprint → eval-dataset     once, as in the MAWS DAG
    ParallelFor over the grid:
        sweep-cell, a sub-pipeline: step-images → mae → wsp (MAE→WSP) [→ wsp from scratch]
        [→ random-init] → transfer-rows → ParallelFor over the rows: pick-model →
        transfer-evaluations → report (the cell's own report)                    ⇒ Artifact
    sweep-report           one report over every cell: rows keyed by method × architecture ×
                           pretraining data (× epochs), and accuracy against pretraining FLOPs
                           (MAE + WSP for MAE→WSP), the FLOP-matched comparison of Fig. 5

Each cell makes its own report and sweep-report merges them, because kfp cannot gather
(`dsl.Collected`) over two nested ParallelFors: kfp.local hands the consumer a list of lists,
and the report takes a flat list. The cell's sub-pipeline runs its own step-images task: a
task-output parameter entering a ParallelFor body arrives in kfp.local (2.17) as the loop's
item (see mawsflow.orchestration.dag, transfer_evaluations_pipeline), so the images are made
inside the body, from the run parameter `image_tag`.

Cells with the same MAE epochs each train their MAE (the backend's cache reuses one run's MAE
in later runs, not between cells running at the same time).
"""

# kfp reads the pipelines' annotations as objects, so no `from __future__ import annotations`.
from collections.abc import Callable
from typing import Any

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input
from kfp.dsl.graph_component import GraphComponent

from mawsflow.dataset.build import DEFAULT_SAMPLES_PER_SHARD
from mawsflow.dataset.resample import PAPER_RATIO
from mawsflow.dataset.vocab import DEFAULT_MIN_COUNT, PAPER_VOCABULARY_SIZE
from mawsflow.orchestration import components as c
from mawsflow.orchestration.dag import (
    _TRANSFER_IMAGES,
    PIPELINE_NAME,
    ClusterSettings,
    Report,
    _Placement,
    _train,
    build_dataset_pipeline,
    transfer_evaluations_pipeline,
)
from mawsflow.orchestration.images import read_images
from mawsflow.orchestration.task_runtime import launch_settings

SWEEPS = ("model-size", "epochs")
# Fig. 3's models (Table 1); at tiny scale a test gives CPU-sized stand-ins (vit_tiny_p4, …).
PAPER_SIZES = ["vit_b16", "vit_l16", "vit_h14", "vit_2b14"]
# Fig. 4's grid as §4 describes it: MAE pre-pretraining "for 0.1 epochs" up to 1 (where "the
# gains saturate") × WSP up to "4 epochs of WSP (20 billion samples)"; Fig. 5 reads the same
# runs (with --baselines' WSP) against their FLOPs. `mae_epochs` and `wsp_epochs` of each cell.
DEFAULT_EPOCH_GRID = [
    {"mae_epochs": mae, "wsp_epochs": wsp} for mae in (0.1, 0.5, 1.0) for wsp in (1.0, 2.0, 4.0)
]


def sweep_name(sweep: str, baselines: bool, control: bool) -> str:
    extras = [name for name, on in (("baselines", baselines), ("control", control)) if on]
    return "-".join(
        [PIPELINE_NAME, "sweep", sweep] + (["with", "-and-".join(extras)] if extras else [])
    )


def sweep_cell_pipeline(
    place: Callable[..., _Placement], baselines: bool, control: bool
) -> GraphComponent:
    """One grid cell: MAE → MAE→WSP (and the baselines) at the cell's architecture and epochs,
    every transfer evaluation of each, and the cell's report."""
    references = read_images()
    transfer_evaluations = transfer_evaluations_pipeline(place)

    @dsl.pipeline(name="sweep-cell", description="Pretraining and transfer of one grid cell")
    def sweep_cell(
        pretraining: Input[Dataset],
        eval_data: Input[Dataset],
        eval_name: str,
        preset: str,
        arch: str,
        mae_epochs: float,
        wsp_epochs: float,
        lit_epochs: float,
        finetune_epochs: float,
        lowshot_epoch_multiplier: float,
        samples_per_epoch: int,
        text_model: str,
        zeroshot_templates: str,
        lowshot_method: str,
        lowshot_shots: list,
        lowshot_seeds: list,
        lowshot_grouping: str,
        transfer_seeds: list,
        seed: int,
        backend: str,
        nodes: int,
        gpus_per_node: int,
        loader_workers: int,
        shm_size: str,
        node_selector: dict,
        tolerations: list,
        image_tag: str,
        s3_secret: str,
        object_store_config: str,
    ) -> Artifact:
        names = {"s3_secret": s3_secret, "object_store_config": object_store_config}
        configure = place(**names)
        images = configure(c.step_images(references=references, image_tag=image_tag)).outputs
        launch = launch_settings(
            backend=backend, nodes=nodes, gpus_per_node=gpus_per_node, shm_size=shm_size,
            node_selector=node_selector, tolerations=tolerations,
        )  # fmt: skip
        lengths = {"preset": preset, "arch": arch, "samples_per_epoch": samples_per_epoch}

        def train_wsp(name: str, **init: Any) -> Any:
            return _train(
                configure,
                c.wsp,
                images["wsp"],
                launch,
                name=name,
                dataset=pretraining,
                epochs=wsp_epochs,
                **lengths,
                **init,
            )

        mae = _train(
            configure,
            c.mae,
            images["mae"],
            launch,
            dataset=pretraining,
            epochs=mae_epochs,
            mae_checkpoint="",
            **lengths,
        )
        maws_wsp = train_wsp("wsp (MAE→WSP)", mae_model=mae.outputs["model"])
        pretrained = {"mae_model": mae.outputs["model"], "maws_model": maws_wsp.outputs["model"]}
        if baselines:
            pretrained["wsp_model"] = train_wsp("wsp (WSP from scratch)").outputs["model"]
        if control:
            pretrained["control_model"] = configure(
                c.random_init(preset=preset, arch=arch, seed=seed), images["wsp"]
            ).outputs["model"]
        rows = configure(c.transfer_rows(baselines=baselines, control=control), images["report"])
        with dsl.ParallelFor(rows.output) as row:
            picked = configure(c.pick_model(row=row, **pretrained), images["report"])
            model = picked.outputs["model"]
            results = transfer_evaluations(
                model=model,
                pretraining=pretraining,
                eval_data=eval_data,
                eval_name=eval_name,
                lowshot_shots=lowshot_shots,
                lowshot_seeds=lowshot_seeds,
                lowshot_grouping=lowshot_grouping,
                transfer_seeds=transfer_seeds,
                lit_epochs=lit_epochs,
                finetune_epochs=finetune_epochs,
                lowshot_epoch_multiplier=lowshot_epoch_multiplier,
                text_model=text_model,
                zeroshot_templates=zeroshot_templates,
                lowshot_method=lowshot_method,
                loader_workers=loader_workers,
                **lengths,
                **launch,
                **{f"{step}_image": images[step] for step in _TRANSFER_IMAGES},
                **names,
            )
        report = configure(
            c.report(
                finetune=dsl.Collected(results.outputs["finetune"]),
                lowshot=dsl.Collected(results.outputs["lowshot"]),
                zeroshot=dsl.Collected(results.outputs["zeroshot"]),
                linear=dsl.Collected(results.outputs["linear"]),
                pretrained=dsl.Collected(model),
            ),
            images["report"],
        )
        return report.outputs["files"]

    return sweep_cell


def sweep_pipeline(
    sweep: str,
    *,
    baselines: bool = False,
    control: bool = False,
    cluster: ClusterSettings | None = None,
    retries: bool = True,
) -> GraphComponent:
    """The MAWS pretraining and transfer over a grid (SWEEPS): `model-size` fans out over the
    run parameter `archs`, `epochs` over `epoch_grid` (a list of {"mae_epochs", "wsp_epochs"}).
    `baselines` and `control` add the same rows as in the MAWS DAG, in every cell."""
    if sweep not in SWEEPS:
        raise ValueError(f"sweep {sweep!r}: choose one of {', '.join(SWEEPS)}")
    cluster = cluster or ClusterSettings()
    references = read_images()

    def place(**names: Any) -> _Placement:
        return _Placement(cluster, retries, **names)

    build_dataset = build_dataset_pipeline(place)
    sweep_cell = sweep_cell_pipeline(place, baselines, control)
    by_size = sweep == "model-size"
    description = (
        "MAWS over a grid of "
        + ("model sizes (the paper's Figs. 3 and 4)" if by_size else "MAE × WSP epochs (Fig. 5)")
        + ": dataset build, then per cell MAE, MAE→WSP"
        + (", WSP from scratch" if baselines else "")
        + (", a control without pretraining" if control else "")
        + " and their transfer evaluations; one report with accuracy against pretraining FLOPs"
    )

    def body(
        grid: Any, arguments: dict[str, Any], cell_inputs: Callable[[Any], dict[str, Any]]
    ) -> Report:
        """The shared DAG: `grid` the run parameter fanned out over, `cell_inputs` the
        architecture and epochs of a cell from its item."""
        a = arguments
        names = {"s3_secret": a["s3_secret"], "object_store_config": a["object_store_config"]}
        configure = place(**names)
        images = configure(c.step_images(references=references, image_tag=a["image_tag"])).outputs
        pretraining = build_dataset(
            raw_corpus=a["raw_corpus"],
            dataset=a["dataset"],
            shard_groups=a["shard_groups"],
            vocab_min_count=a["vocab_min_count"],
            vocab_max_classes=a["vocab_max_classes"],
            resample_ratio=a["resample_ratio"],
            samples_per_shard=a["samples_per_shard"],
            seed=a["seed"],
            image=images["build_dataset"],
            **names,
        ).outputs["pretraining"]
        listing = configure(c.eval_fingerprint(uri=a["eval_dataset"]), images["prepare_eval"])
        eval_data = configure(
            c.eval_dataset(uri=a["eval_dataset"], name=a["eval_name"], fingerprint=listing.output),
            images["prepare_eval"],
        ).outputs["dataset"]
        # The run parameters every cell takes as they are.
        passed = [
            "eval_name",
            "preset",
            "lit_epochs",
            "finetune_epochs",
            "lowshot_epoch_multiplier",
            "samples_per_epoch",
            "text_model",
            "zeroshot_templates",
            "lowshot_method",
            "lowshot_shots",
            "lowshot_seeds",
            "lowshot_grouping",
            "transfer_seeds",
            "seed",
            "backend",
            "nodes",
            "gpus_per_node",
            "loader_workers",
            "shm_size",
            "node_selector",
            "tolerations",
            "image_tag",
        ]
        with dsl.ParallelFor(grid) as item:
            cell = sweep_cell(
                pretraining=pretraining,
                eval_data=eval_data,
                **{name: a[name] for name in passed},
                **cell_inputs(item),
                **names,
            )
        report = configure(c.sweep_report(cells=dsl.Collected(cell.output)), images["report"])
        return Report(report.outputs["markdown"], report.outputs["html"], report.outputs["files"])

    # The run parameters, as in the MAWS DAG (mawsflow.orchestration.dag.maws_pipeline), less
    # those the grid sets. kfp reads a pipeline's parameters from its signature, hence two.
    if by_size:

        @dsl.pipeline(name=sweep_name(sweep, baselines, control), description=description)
        def sweep_model_size(
            raw_corpus: str,
            dataset: str,
            eval_dataset: str,
            eval_name: str,
            archs: list = PAPER_SIZES,
            preset: str = "",
            mae_epochs: float = 0.0,
            wsp_epochs: float = 0.0,
            lit_epochs: float = 0.0,
            finetune_epochs: float = 0.0,
            lowshot_epoch_multiplier: float = 0.0,
            samples_per_epoch: int = 0,
            text_model: str = "",
            zeroshot_templates: str = "auto",
            lowshot_method: str = "vpt",
            lowshot_shots: list = [],  # noqa: B006
            lowshot_seeds: list = [],  # noqa: B006
            lowshot_grouping: str = "run",
            transfer_seeds: list = [0],  # noqa: B006
            shard_groups: int = 8,
            vocab_min_count: int = DEFAULT_MIN_COUNT,
            vocab_max_classes: int = PAPER_VOCABULARY_SIZE,
            resample_ratio: float = PAPER_RATIO,
            samples_per_shard: int = DEFAULT_SAMPLES_PER_SHARD,
            seed: int = 0,
            backend: str = "pytorchjob",
            nodes: int = 1,
            gpus_per_node: int = 8,
            loader_workers: int = 8,
            shm_size: str = "64Gi",
            node_selector: dict = {},  # noqa: B006
            tolerations: list = [],  # noqa: B006
            image_tag: str = "",
            s3_secret: str = "mlpipeline-minio-artifact",
            object_store_config: str = "mawsflow-object-store",
        ) -> Report:
            arguments = dict(locals())
            return body(
                archs,
                arguments,
                lambda arch: {"arch": arch, "mae_epochs": mae_epochs, "wsp_epochs": wsp_epochs},
            )

        return sweep_model_size

    @dsl.pipeline(name=sweep_name(sweep, baselines, control), description=description)
    def sweep_epochs(
        raw_corpus: str,
        dataset: str,
        eval_dataset: str,
        eval_name: str,
        epoch_grid: list = DEFAULT_EPOCH_GRID,
        preset: str = "",
        arch: str = "",
        lit_epochs: float = 0.0,
        finetune_epochs: float = 0.0,
        lowshot_epoch_multiplier: float = 0.0,
        samples_per_epoch: int = 0,
        text_model: str = "",
        zeroshot_templates: str = "auto",
        lowshot_method: str = "vpt",
        lowshot_shots: list = [],  # noqa: B006
        lowshot_seeds: list = [],  # noqa: B006
        lowshot_grouping: str = "run",
        transfer_seeds: list = [0],  # noqa: B006
        shard_groups: int = 8,
        vocab_min_count: int = DEFAULT_MIN_COUNT,
        vocab_max_classes: int = PAPER_VOCABULARY_SIZE,
        resample_ratio: float = PAPER_RATIO,
        samples_per_shard: int = DEFAULT_SAMPLES_PER_SHARD,
        seed: int = 0,
        backend: str = "pytorchjob",
        nodes: int = 1,
        gpus_per_node: int = 8,
        loader_workers: int = 8,
        shm_size: str = "64Gi",
        node_selector: dict = {},  # noqa: B006
        tolerations: list = [],  # noqa: B006
        image_tag: str = "",
        s3_secret: str = "mlpipeline-minio-artifact",
        object_store_config: str = "mawsflow-object-store",
    ) -> Report:
        arguments = dict(locals())
        return body(
            epoch_grid,
            arguments,
            lambda cell: {
                "arch": arch,
                "mae_epochs": cell.mae_epochs,
                "wsp_epochs": cell.wsp_epochs,
            },
        )

    return sweep_epochs
