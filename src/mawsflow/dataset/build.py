"""The whole build on one machine: the phases in order, each map phase fanned out over worker
processes the way the pipeline fans it out over pods (one process per shard group, at most
`workers` at a time).

    count (N groups, parallel) → vocab (one) → write (N groups, parallel) → finalize (one)

Each worker is a fresh process (spawned, not forked), exactly as a pod would run the phase.
"""

from __future__ import annotations

import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from mawsflow.dataset.count_phase import run_count
from mawsflow.dataset.finalize_phase import run_finalize
from mawsflow.dataset.layout import ShardGroup
from mawsflow.dataset.resample import ResampleSettings
from mawsflow.dataset.sample_tags import ReadLimits
from mawsflow.dataset.vocab import VocabSettings
from mawsflow.dataset.vocab_phase import run_vocab
from mawsflow.dataset.write_phase import run_write
from mawsflow.log import setup_logging

log = logging.getLogger(__name__)

DEFAULT_SAMPLES_PER_SHARD = 1000


@dataclass(frozen=True)
class BuildSettings:
    """Everything that decides a build's output besides its input."""

    limits: ReadLimits = field(default_factory=ReadLimits)
    vocab: VocabSettings = field(default_factory=VocabSettings)
    resample: ResampleSettings = field(default_factory=ResampleSettings)
    samples_per_shard: int = DEFAULT_SAMPLES_PER_SHARD


def _worker_init() -> None:
    setup_logging()


def _count_worker(input_uri: str, out_uri: str, group: ShardGroup, limits: ReadLimits) -> None:
    run_count(input_uri, out_uri, group, limits)


def _write_worker(input_uri: str, out_uri: str, group: ShardGroup) -> None:
    run_write(input_uri, out_uri, group)


def build_dataset(
    input_uri: str, out_uri: str, *, groups: int, workers: int, settings: BuildSettings
) -> dict[str, Any]:
    """Run every phase; returns the build statistics."""
    if groups < 1 or workers < 1:
        raise ValueError(f"groups and workers must be at least 1, got {groups} and {workers}")
    all_groups = ShardGroup(0, groups).all_groups()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=min(workers, groups), mp_context=context, initializer=_worker_init
    ) as pool:
        log.info("count phase: %d groups on %d workers", groups, min(workers, groups))
        for future in [
            pool.submit(_count_worker, input_uri, out_uri, group, settings.limits)
            for group in all_groups
        ]:
            future.result()
        run_vocab(out_uri, groups, settings.vocab, settings.resample, settings.samples_per_shard)
        log.info("write phase: %d groups on %d workers", groups, min(workers, groups))
        for future in [
            pool.submit(_write_worker, input_uri, out_uri, group) for group in all_groups
        ]:
            future.result()
    return run_finalize(out_uri, groups)
