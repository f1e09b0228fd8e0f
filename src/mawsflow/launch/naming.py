"""Deterministic Kubernetes job names from the pipeline run and task.

A retried launcher must find the job its earlier attempt created, so the name is a pure function
of (run id, task name): a readable slug of the task plus a hash of both. The operators derive
further names from the job's (PyTorchJob: `<job>-worker-<i>` pods and Services; TrainJob: JobSet
`<job>-node-<i>` Jobs and pod hostnames), and those must stay DNS labels of at most 63
characters, so job names are held to 40.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

MAX_JOB_NAME_LENGTH = 40
_PREFIX = "mf"  # DNS-1035 labels must start with a letter; task names may not
_HASH_CHARS = 10  # 40 bits: collisions within a namespace are negligible

RUN_ID_ANNOTATION = "mawsflow.dev/run-id"
TASK_ANNOTATION = "mawsflow.dev/task"


@dataclass(frozen=True)
class JobIdentity:
    """Which pipeline run and task a job belongs to."""

    run_id: str
    task: str

    def __post_init__(self) -> None:
        if not self.run_id.strip():
            raise ValueError("run id: empty; pass the pipeline run's id (e.g. KFP's job uuid)")
        if not self.task.strip():
            raise ValueError("task: empty; pass the pipeline task's name")

    @property
    def job_name(self) -> str:
        return job_name(self.run_id, self.task)

    def annotations(self) -> dict[str, str]:
        return {RUN_ID_ANNOTATION: self.run_id, TASK_ANNOTATION: self.task}


def job_name(run_id: str, task: str) -> str:
    """`mf-<task slug>-<hash>`: a DNS-1035 label of at most MAX_JOB_NAME_LENGTH characters."""
    digest = hashlib.sha256(f"{run_id}\n{task}".encode()).hexdigest()[:_HASH_CHARS]
    slug = re.sub(r"[^a-z0-9]+", "-", task.lower()).strip("-")
    room = MAX_JOB_NAME_LENGTH - len(_PREFIX) - len(digest) - 2
    slug = slug[:room].strip("-")
    return f"{_PREFIX}-{slug}-{digest}" if slug else f"{_PREFIX}-{digest}"
