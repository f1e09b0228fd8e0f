"""The build's last step: pack the groups' tails into the final shards, check every group's
work against the plan, and publish statistics and the manifest.

The tails hold fewer than `samples_per_shard` samples per group, so this step moves at most
`groups × samples_per_shard` samples whatever the corpus size. `manifest.json` is written last:
its presence means the dataset is complete (docs/data-formats.md). It names the build (the
plan's id) and only this build's shards. Then the step removes what the build no longer needs
and what earlier builds left: `_work/` and every shard the manifest does not name
(build_state.py).

Running the step again is safe: after a complete finalize it returns the published statistics;
after one stopped between publishing and cleaning up, it finishes the cleanup.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from mawsflow import storage
from mawsflow.dataset.build_state import (
    published_build,
    remove_leftovers,
    withdraw,
    work_files,
)
from mawsflow.dataset.layout import BuildLayout, ShardGroup
from mawsflow.dataset.safe_tar import iter_tar_samples
from mawsflow.dataset.shard_writer import ShardWriter
from mawsflow.dataset.stats import (
    MemberProblem,
    SampleDrop,
    ShardProblem,
    add_counts,
    flatten_metrics,
)
from mawsflow.dataset.vocab_phase import read_count_summaries
from mawsflow.dataset.write_phase import read_plan

log = logging.getLogger(__name__)

DATASET_FORMAT = "mawsflow.multilabel/1"


def _read_write_reports(
    layout: BuildLayout, plan: dict[str, Any], groups: list[ShardGroup]
) -> list[dict[str, Any]]:
    missing = [group.name for group in groups if not storage.exists(layout.write_report(group))]
    if missing:
        raise RuntimeError(
            f"{layout.out}: the write phase has not finished for {len(missing)} of "
            f"{len(groups)} groups ({', '.join(missing[:5])}{'…' if len(missing) > 5 else ''})"
        )
    reports = [storage.read_json(layout.write_report(group)) for group in groups]
    for group, report, group_plan in zip(groups, reports, plan["group_plans"], strict=True):
        if report.get("build") != plan["build"]:
            raise RuntimeError(
                f"{layout.write_report(group)} was written for build {report.get('build')}, not "
                f"for the current plan's build {plan['build']}; rerun the write phase for "
                f"{group.name}"
            )
        if (report["kept"], report["samples"]) != (group_plan["kept"], group_plan["samples"]):
            raise RuntimeError(
                f"{layout.write_report(group)}: {report['samples']} samples written, the plan "
                f"says {group_plan['samples']}; rerun the write phase for {group.name}"
            )
    return reports


def _pack_tails(
    layout: BuildLayout, plan: dict[str, Any], groups: list[ShardGroup]
) -> tuple[int, list[int]]:
    """Write the tail shards; returns (samples, sizes of the tail shards)."""
    first = plan["full_shards"]
    with ShardWriter(lambda k: layout.shard(first + k), plan["samples_per_shard"]) as writer:
        for group, group_plan in zip(groups, plan["group_plans"], strict=True):
            expected = group_plan["tail_samples"]
            if expected == 0:
                continue
            problems: Counter[str] = Counter()
            found = 0
            with storage.open_read(layout.tail(group)) as stream:
                for sample in iter_tar_samples(stream, problems):
                    writer.write(sample.key, sample.members)
                    found += 1
            if problems or found != expected:
                raise RuntimeError(
                    f"{layout.tail(group)}: {found} samples (problems: {dict(problems)}), the "
                    f"plan says {expected}; rerun the write phase for {group.name}"
                )
    return writer.samples, writer.shard_sizes


def build_stats(
    plan: dict[str, Any], summaries: list[dict[str, Any]], samples_written: int
) -> dict[str, Any]:
    """The statistics of a finished build (stats.json)."""
    problems: dict[str, int] = {}
    for summary in summaries:
        add_counts(problems, summary["problems"])
    group_plans = plan["group_plans"]
    problems[SampleDrop.DUPLICATE_IMAGE.value] = sum(g["duplicates"] for g in group_plans)
    problems[SampleDrop.NO_LABEL_IN_VOCAB.value] = sum(g["unlabelled"] for g in group_plans)
    kept = sum(g["kept"] for g in group_plans)
    samples_read = sum(summary["samples_read"] for summary in summaries)
    dropped = {reason.value: problems.get(reason.value, 0) for reason in SampleDrop}
    if kept + sum(dropped.values()) != samples_read:
        raise RuntimeError(
            f"accounting error: {samples_read} samples read, but {kept} kept and "
            f"{sum(dropped.values())} dropped"
        )
    vocabulary = plan["vocabulary"]
    resampling = plan["resampling"]
    class_images = vocabulary["class_images"]
    class_samples = resampling["class_samples"]
    return {
        "input": {
            "uri": plan["input"]["uri"],
            "shards": plan["input"]["num_shards"],
            "groups": plan["groups"],
        },
        "shards": {
            "read": sum(summary["shards_read"] for summary in summaries),
            **{problem.value: problems.get(problem.value, 0) for problem in ShardProblem},
        },
        "members_skipped": {
            problem.value: problems.get(problem.value, 0) for problem in MemberProblem
        },
        "samples": {
            "read": samples_read,
            "kept": kept,
            "dropped": dropped,
            "written": samples_written,
        },
        "hashtags": {
            "found": sum(summary["hashtags_found"] for summary in summaries),
            "synsets": sum(summary["synsets_found"] for summary in summaries),
        },
        "vocabulary": {
            "classes": vocabulary["classes"],
            "synsets_seen": vocabulary["synsets_seen"],
            "min_count": vocabulary["min_count"],
            "max_classes": vocabulary["max_classes"],
            "largest_class_images": max(class_images),
            "smallest_class_images": min(class_images),
        },
        "resampling": {
            "target_ratio": resampling["target_ratio"],
            "power": resampling["power"],
            "seed": resampling["seed"],
            "threshold": resampling["threshold"],
            "expected_ratio": resampling["expected_ratio"],
            "achieved_ratio": samples_written / kept,
            # max/min class size before and after: how much resampling flattened the labels
            "imbalance_before": max(class_images) / min(class_images),
            "imbalance_after": max(class_samples) / min(class_samples),
        },
        "label_histogram": {"images": class_images, "samples": class_samples},
    }


def _finalized_before(layout: BuildLayout, group_count: int) -> dict[str, Any]:
    """The statistics of a build this step already finished, which left no plan behind."""
    if not storage.exists(layout.manifest) or work_files(layout):
        raise RuntimeError(f"{layout.plan} does not exist: run the vocab phase first")
    stats = storage.read_json(layout.stats)
    if stats["input"]["groups"] != group_count:
        raise RuntimeError(
            f"{layout.out} was built from {stats['input']['groups']} shard groups, not "
            f"{group_count}; use the same group count in every phase"
        )
    log.info("%s is complete already (build %s)", layout.out, published_build(layout))
    return stats


def run_finalize(out_uri: str, group_count: int) -> dict[str, Any]:
    """Finish the build: tail shards, stats.json, metrics.json, then manifest.json; then
    remove the intermediate files and the shards of earlier builds."""
    layout = BuildLayout(out_uri)
    if not storage.exists(layout.plan):
        return _finalized_before(layout, group_count)
    plan = read_plan(layout, group_count)
    if published_build(layout) == plan["build"]:
        # Published by an earlier run of this step that stopped before its cleanup was done.
        remove_leftovers(layout, storage.read_json(layout.manifest))
        return storage.read_json(layout.stats)
    withdraw(layout.manifest)  # the tail shards are about to be rewritten
    groups = ShardGroup(0, group_count).all_groups()
    summaries = read_count_summaries(layout, group_count)
    reports = _read_write_reports(layout, plan, groups)
    tail_samples, tail_sizes = _pack_tails(layout, plan, groups)
    full_samples = sum(report["samples"] - report["tail_samples"] for report in reports)
    samples_written = full_samples + tail_samples
    num_shards = plan["full_shards"] + len(tail_sizes)
    stats = build_stats(plan, summaries, samples_written)
    storage.write_json(layout.stats, stats)
    storage.write_json(layout.metrics, flatten_metrics(stats))
    manifest = {
        "format": DATASET_FORMAT,
        "build": plan["build"],
        "shards": [layout.shard_name(index) for index in range(num_shards)],
        "num_samples": samples_written,
        "samples_per_shard": plan["samples_per_shard"],
        "num_classes": plan["vocabulary"]["classes"],
        "vocab": "vocab.json",
        "stats": "stats.json",
    }
    storage.write_json(layout.manifest, manifest)
    log.info(
        "dataset complete (build %s): %d samples in %d shards, %d classes",
        plan["build"],
        samples_written,
        num_shards,
        manifest["num_classes"],
    )
    remove_leftovers(layout, manifest)
    return stats
