"""The launch spec (loading, validation), deterministic job names, and the `launch` CLI."""

from __future__ import annotations

import re
import sys

import pytest
import yaml

from mawsflow.cli import STEPS
from mawsflow.errors import ConfigError
from mawsflow.launch.naming import MAX_JOB_NAME_LENGTH, JobIdentity, job_name
from mawsflow.launch.spec import load_launch_spec, validate
from mawsflow.steps import launch as launch_step

DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")

SPEC_YAML = """
image: registry.example/mawsflow:0.1
command: [mawsflow, mae]
nodes: 2
procs_per_node: 4
resources: {gpus_per_node: 4, memory: 200Gi}
s3: {secret_name: s3-creds}
pod:
  shm_size: 16Gi
  tolerations: [{key: nvidia.com/gpu, operator: Exists}]
policy: {timeout_s: 3600, cleanup: keep}
"""


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "launch.yaml"
    path.write_text(SPEC_YAML)
    return path


def test_spec_from_file_overrides_and_command(spec_file):
    spec = load_launch_spec(
        spec_file, ["nodes=4", "policy.cleanup=delete", "env.NCCL_DEBUG=INFO"], ["python", "x.py"]
    )
    assert spec.nodes == 4
    assert spec.procs_per_node == 4
    assert spec.resources.gpus_per_node == 4
    assert spec.pod.tolerations[0].operator == "Exists"
    assert spec.policy.cleanup == "delete" and spec.policy.timeout_s == 3600
    assert spec.env == {"NCCL_DEBUG": "INFO"}
    assert spec.command == ["python", "x.py"]
    validate(spec, "pytorchjob")


@pytest.mark.parametrize(
    ("overrides", "backend", "message"),
    [
        (["nodes=0"], "pytorchjob", r"nodes: 0 is below the minimum 1"),
        (["image=null"], "trainjob", r"image: the trainjob backend needs a container image"),
        (["procs_per_node=8"], "pytorchjob", r"procs_per_node: 8 ranks per node but .* is 4"),
        (["resources.memory=lots"], "pytorchjob", r"resources.memory: 'lots' is not a Kub"),
        (["pod.shm_size=1GB"], "pytorchjob", r"pod.shm_size: '1GB'"),
        (["env.AWS_SECRET_ACCESS_KEY=x"], "pytorchjob", r"env.AWS_SECRET_ACCESS_KEY: credentials"),
        (["env.AWS_ACCESS_KEY_ID=x"], "local", r"env.AWS_ACCESS_KEY_ID: credentials"),
        (["queue_name=Team_A"], "pytorchjob", r"queue_name: 'Team_A'"),
        (["labels.team=a b"], "trainjob", r"labels.team: 'a b' is not a valid"),
        ([], "local", r"nodes: the local backend runs on one machine, got 2"),
        (
            ["elastic.min_nodes=3", "elastic.max_nodes=8"],
            "pytorchjob",
            r"elastic: need 1 <= min_nodes <= nodes <= max_nodes, got 3 <= 2 <= 8",
        ),
        (["elastic.min_nodes=1", "elastic.max_nodes=4"], "trainjob", r"elastic: only the pyt"),
        (["policy.timeout_s=0"], "pytorchjob", r"policy.timeout_s: 0 is below the minimum 1"),
    ],
)
def test_validation_names_the_bad_key(spec_file, overrides, backend, message):
    spec = load_launch_spec(spec_file, overrides)
    with pytest.raises(ConfigError, match=message):
        validate(spec, backend)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["nodez=2"], r"unknown key nodez"),
        (["pod.shm=1Gi"], r"unknown key pod.shm"),
        (["policy.cleanup=sometimes"], r"policy.cleanup: 'sometimes' is not one of"),
        (["nodes=two"], r"nodes: expected an integer"),
    ],
)
def test_loading_rejects_unknown_keys_and_wrong_types(spec_file, overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_launch_spec(spec_file, overrides)


def test_empty_command_is_an_error():
    with pytest.raises(ConfigError, match="command: empty"):
        validate(load_launch_spec(None, ["image=x"]), "pytorchjob")


def test_unreadable_or_malformed_spec_file(tmp_path):
    with pytest.raises(ConfigError, match=r"launch spec .*missing.yaml: cannot read it"):
        load_launch_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping at the top level"):
        load_launch_spec(bad)


def test_job_names_are_deterministic_dns_labels():
    name = job_name("0f8c2a6e-5b1d-4c3e-9a7f-2d4b6e8f0a1c", "finetune-in1k")
    assert name == job_name("0f8c2a6e-5b1d-4c3e-9a7f-2d4b6e8f0a1c", "finetune-in1k")
    assert name.startswith("mf-finetune-in1k-") and DNS_1035.match(name)
    others = {
        job_name("0f8c2a6e-5b1d-4c3e-9a7f-2d4b6e8f0a1d", "finetune-in1k"),
        job_name("0f8c2a6e-5b1d-4c3e-9a7f-2d4b6e8f0a1c", "finetune-inat18"),
    }
    assert name not in others and len(others) == 2


@pytest.mark.parametrize(
    "task",
    ["3-lowshot", "Fine Tune (IN1k) / ViT-H/14", "x" * 200, "---", "ÜBER_task", "a" * 27 + "-b"],
)
def test_job_names_fit_any_task_name(task):
    name = job_name("run", task)
    assert DNS_1035.match(name), name
    assert len(name) <= MAX_JOB_NAME_LENGTH


def test_identity_requires_run_and_task():
    with pytest.raises(ValueError, match="run id: empty"):
        JobIdentity(" ", "mae")
    with pytest.raises(ValueError, match="task: empty"):
        JobIdentity("run", "")


def test_launch_is_registered_in_the_cli():
    module, help_line = STEPS["launch"]
    assert module == "launch" and help_line


def test_cli_prints_the_manifest(spec_file, capsys):
    argv = ["--backend", "trainjob", "--spec", str(spec_file), "--run-id", "r-1", "--task"]
    argv += ["mae", "--namespace", "ml", "--print-manifest", "--", "mawsflow", "mae", "--preset"]
    assert launch_step.main([*argv, "tiny"]) == 0
    manifest = yaml.safe_load(capsys.readouterr().out)
    assert manifest["kind"] == "TrainJob"
    assert manifest["metadata"]["name"] == job_name("r-1", "mae")
    assert manifest["spec"]["trainer"]["args"] == [
        "--no-python",
        "mawsflow",
        "mae",
        "--preset",
        "tiny",
    ]


def test_cli_prints_the_local_torchrun_command(capsys):
    argv = ["--backend", "local", "--set", "procs_per_node=2", "--print-manifest", "--"]
    assert launch_step.main([*argv, "mawsflow", "mae"]) == 0
    out = capsys.readouterr().out.split()
    assert out[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert out[out.index("--nproc-per-node") + 1] == "2"
    # A bare `mawsflow` runs the launcher's own installation, whatever PATH holds.
    assert out[-5:] == ["--no-python", sys.executable, "-m", "mawsflow.cli", "mae"]


def test_cli_requires_run_id_and_task_for_kubernetes(spec_file, capsys):
    with pytest.raises(SystemExit) as info:
        launch_step.main(["--backend", "pytorchjob", "--spec", str(spec_file), "--print-manifest"])
    assert info.value.code == 2
    assert "--run-id and --task are required" in capsys.readouterr().err


def test_cli_reports_a_bad_spec_as_a_usage_error(spec_file, capsys):
    with pytest.raises(SystemExit) as info:
        launch_step.main(["--backend", "local", "--spec", str(spec_file), "--set", "nodes=0"])
    assert info.value.code == 2
    assert "nodes: 0 is below the minimum 1" in capsys.readouterr().err
