"""Prometheus metrics for training and data steps.

Each process owns one `CollectorRegistry` with the metrics a step exposes (samples/s,
step time, data wait, loss, lr, memory, model-FLOP utilisation). Long-running steps serve them
over HTTP on a configurable port (scraped by the chart's PodMonitor); short batch steps can push
them to a Pushgateway when they finish. Both are off unless configured, so tests open no ports.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    push_to_gateway,
    start_http_server,
)

log = logging.getLogger(__name__)

# Step times span ~10 ms (tiny CPU models) to ~60 s (6.5B with accumulation).
_STEP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


@dataclass
class TrainingMetrics:
    """The training engine's metrics, labelled by step name (mae, wsp, lit, …) and rank."""

    step: str
    rank: int = 0
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        labels = ("step", "rank")
        r = self.registry
        self.samples = Counter(
            "mawsflow_samples", "Samples seen (all ranks' share)", labels, registry=r
        )
        self.samples_per_second = Gauge(
            "mawsflow_samples_per_second", "Training throughput of this rank", labels, registry=r
        )
        self.step_seconds = Histogram(
            "mawsflow_step_seconds",
            "Wall time of one optimizer step",
            labels,
            buckets=_STEP_BUCKETS,
            registry=r,
        )
        self.data_wait_seconds = Counter(
            "mawsflow_data_wait_seconds",
            "Time spent waiting for the next batch",
            labels,
            registry=r,
        )
        self.loss = Gauge(
            "mawsflow_loss", "Training loss of the last logged step", labels, registry=r
        )
        self.learning_rate = Gauge(
            "mawsflow_learning_rate", "Current learning rate", labels, registry=r
        )
        self.memory_bytes = Gauge(
            "mawsflow_accelerator_memory_bytes",
            "Peak accelerator memory allocated",
            labels,
            registry=r,
        )
        self.mfu = Gauge(
            "mawsflow_model_flops_utilization", "Model-FLOP utilisation (0–1)", labels, registry=r
        )
        self.skipped_samples = Counter(
            "mawsflow_skipped_samples",
            "Corrupt samples skipped by the data loader",
            labels,
            registry=r,
        )
        self.optimizer_steps = Counter(
            "mawsflow_optimizer_steps", "Optimizer steps taken", labels, registry=r
        )
        # Set by rank 0, which marks a checkpoint complete: from the start of the save (the
        # training stall is only the host copy when saving asynchronously) to the marker.
        self.checkpoint_save_seconds = Histogram(
            "mawsflow_checkpoint_save_seconds",
            "Wall time from the start of a checkpoint save until it is complete",
            labels,
            buckets=(0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1800),
            registry=r,
        )
        self.checkpoint_bytes = Gauge(
            "mawsflow_checkpoint_bytes", "Size of the last complete checkpoint", labels, registry=r
        )
        self.checkpoint_load_seconds = Gauge(
            "mawsflow_checkpoint_load_seconds",
            "Time this rank took to restore the checkpoint it resumed from",
            labels,
            registry=r,
        )

    def labels(self) -> dict[str, str]:
        return {"step": self.step, "rank": str(self.rank)}


def serve(registry: CollectorRegistry, port: int | None, addr: str = "0.0.0.0") -> int | None:
    """Expose `registry` over HTTP on `port` (0 picks a free one); returns the bound port, or
    None when metrics serving is off.

    MAWSFLOW_METRICS_PORT sets the port for every process of a job; each rank adds its
    LOCAL_RANK so several ranks on one node do not collide."""
    if port is None:
        env = os.environ.get("MAWSFLOW_METRICS_PORT")
        port = int(env) if env else None
    if port is None:
        return None
    if port:
        port += int(os.environ.get("LOCAL_RANK", "0"))
    server, _ = start_http_server(port, addr=addr, registry=registry)
    bound = int(server.server_address[1])
    log.info("serving Prometheus metrics on port %d", bound)
    return bound


def push(registry: CollectorRegistry, gateway: str | None, job: str) -> bool:
    """Push `registry` to a Pushgateway (`host:port` or URL); failures are logged, not fatal."""
    gateway = gateway or os.environ.get("MAWSFLOW_PUSHGATEWAY")
    if not gateway:
        return False
    try:
        push_to_gateway(gateway, job=job, registry=registry, timeout=10)
    except OSError as exc:  # a metrics outage must not fail a finished step
        log.warning("could not push metrics to %s: %s", gateway, exc)
        return False
    return True
