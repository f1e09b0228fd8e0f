"""Object storage: one API over `s3://bucket/key` URIs and local paths (plain or `file://`).

Every step reads and writes through this module, so the guarantees live here:

- **Atomic writes.** Nobody ever sees a half-written object. Locally a write goes to a hidden
  temporary file in the target's directory, is fsynced and `os.replace`d into place. On S3 an
  object appears whole on PutObject / CompleteMultipartUpload; a failed multipart upload is
  aborted (best effort: the store may be the thing that failed).
- **Multipart.** Objects above `MAWSFLOW_S3_PART_SIZE` (default 8 MiB) go up in parts of that
  size: through boto3's transfer manager (parallel parts) when the data is at hand, through a
  streaming writer (one part in memory at a time) for `open_write`.
- **Retries.** Transient failures (connection refused/reset, timeouts, 5xx, throttling) are
  retried with exponential backoff and full jitter, up to a bound; when the bound is spent the
  caller gets `UnavailableError`. Permanent failures (403, 404, missing bucket) raise
  `PermissionDeniedError` / `NotFoundError` at once. Two layers do this: botocore's "standard"
  retry mode per HTTP request (`MAWSFLOW_S3_REQUEST_ATTEMPTS`), and a loop around each whole
  operation (`MAWSFLOW_S3_MAX_ATTEMPTS`, `MAWSFLOW_S3_BACKOFF_S`, `MAWSFLOW_S3_MAX_BACKOFF_S`),
  which is what recovers a multipart upload whose server vanished and came back.
- **Streaming reads.** `open_read` streams an object without downloading it first, and resumes
  with a ranged GET pinned to the object's ETag if the connection breaks mid-stream.
- **webdataset.** `register_webdataset()` registers the `s3://` scheme with webdataset's URL
  opener, so `wds.WebDataset("s3://bucket/shards/train-{000000..000009}.tar")` streams through
  `open_read` (and `wds.TarWriter("s3://…")` writes through the streaming writer).
  `mawsflow.data.shards`, which every shard reader imports, calls it. This module does not:
  webdataset imports torch (~2 s), and every pipeline task's own process (the KFP component
  that launches a training job, the summaries, the plans) imports storage and nothing else
  that needs torch.

Configuration comes from the standard AWS environment variables: `AWS_ENDPOINT_URL_S3` or
`AWS_ENDPOINT_URL` (SeaweedFS, MinIO, …), `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` /
`AWS_SESSION_TOKEN`, `AWS_REGION` / `AWS_DEFAULT_REGION` (default us-east-1). Credentials are
resolved by boto3's default chain, in which the environment variables come first; the
chain's later links (shared files, web identity, instance metadata) only matter where those
variables are absent. With a custom endpoint the client uses path-style addressing (what
SeaweedFS and MinIO expect); `MAWSFLOW_S3_ADDRESSING_STYLE=path|virtual|auto` overrides it.
"""

from __future__ import annotations

import functools
import importlib
import io
import json
import logging
import os
import random
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, BinaryIO, TypeVar, cast

import boto3
import urllib3.exceptions
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
    ResponseStreamingError,
)
from botocore.exceptions import ConnectionError as BotocoreConnectionError

log = logging.getLogger(__name__)

T = TypeVar("T")

MiB = 1024 * 1024
# S3 rejects parts below 5 MiB (all but the last one).
_MIN_PART_SIZE = 5 * MiB
_READ_BUFFER_SIZE = 1 * MiB
# Hidden in-progress local writes carry this marker, so listings never show them.
_LOCAL_TEMP_MARKER = ".mawsflow-tmp-"

_CREDENTIALS_HINT = "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
_PERMISSION_CODES = frozenset(
    {
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidToken",
        "ExpiredToken",
        "TokenRefreshRequired",
        "AllAccessDisabled",
        "AccountProblem",
    }
)
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "NotFound", "404"})
_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestLimitExceeded",
        "TooManyRequests",
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
        "InternalError",
        "ServiceUnavailable",
        "BandwidthLimitExceeded",
    }
)
# Failures of the connection or of a response body in flight, from botocore or from urllib3
# underneath it (body reads surface urllib3's own exceptions).
_TRANSIENT_EXCEPTIONS: tuple[type[BaseException], ...] = (
    BotocoreConnectionError,
    HTTPClientError,
    ResponseStreamingError,
    IncompleteReadError,
    urllib3.exceptions.HTTPError,
    ConnectionError,
    TimeoutError,
)


class StorageError(Exception):
    """A storage operation failed for good; the message names the URI."""


class NotFoundError(StorageError):
    """The object, file or bucket does not exist."""


class PermissionDeniedError(StorageError):
    """The store refused the credentials or the access (HTTP 403, file permissions)."""


class UnavailableError(StorageError):
    """The store kept failing transiently (unreachable, 5xx, throttling) through every retry."""


# -- URIs ------------------------------------------------------------------------------------


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def join(base: str, *parts: str) -> str:
    """`base` + "/" + each part, with exactly one "/" between pieces; empty parts are skipped.

    Works the same for `s3://bucket/prefix`, `file://` URIs and local paths, because all three
    use "/" as separator. Parts are relative: their leading/trailing slashes are dropped.
    """
    joined = base
    for part in parts:
        piece = part.strip("/")
        if piece:
            joined = f"{joined.rstrip('/')}/{piece}" if joined else piece
    return joined


def _check_scheme(uri: str) -> None:
    if not uri:
        raise ValueError("storage URI is empty")
    scheme, sep, _ = uri.partition("://")
    if sep and scheme not in ("s3", "file"):
        raise ValueError(f"{uri}: unsupported scheme {scheme!r} (use s3://, file:// or a path)")


def _split_s3(uri: str) -> tuple[str, str]:
    """`s3://bucket/key` → (bucket, key); the key may be empty (a bucket or a prefix)."""
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"{uri}: an s3:// URI needs a bucket name (s3://bucket/key)")
    return bucket, key


def _s3_object(uri: str) -> tuple[str, str]:
    bucket, key = _split_s3(uri)
    if not key:
        raise ValueError(f"{uri}: names a bucket, not an object (expected s3://bucket/key)")
    return bucket, key


def _local_path(uri: str) -> str:
    _check_scheme(uri)
    if uri.startswith("file://"):
        path = uri[len("file://") :]
    elif uri.startswith("file:"):
        path = uri[len("file:") :]
    else:
        path = uri
    if not path:
        raise ValueError(f"{uri}: no local path")
    return path


# -- configuration ---------------------------------------------------------------------------


def _env_number(name: str, default: float, *, minimum: float, integer: bool) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{name}={raw!r}: must be {kind}") from None
    if value < minimum:
        raise ValueError(f"{name}={raw!r}: must be at least {minimum}")
    return value


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a whole operation is retried on transient failures."""

    max_attempts: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 20.0

    @classmethod
    def from_env(cls) -> RetryPolicy:
        # Read at every operation (cheap), so a changed environment applies at once.
        return cls(
            max_attempts=int(
                _env_number("MAWSFLOW_S3_MAX_ATTEMPTS", cls.max_attempts, minimum=1, integer=True)
            ),
            backoff_s=_env_number("MAWSFLOW_S3_BACKOFF_S", cls.backoff_s, minimum=0, integer=False),
            max_backoff_s=_env_number(
                "MAWSFLOW_S3_MAX_BACKOFF_S", cls.max_backoff_s, minimum=0, integer=False
            ),
        )

    def delay_s(self, failures: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2^(failures-1))], so that many clients
        failing together do not come back in lockstep."""
        ceiling = min(self.max_backoff_s, self.backoff_s * 2 ** (failures - 1))
        return random.uniform(0, ceiling)


def _part_size() -> int:
    return int(_env_number("MAWSFLOW_S3_PART_SIZE", 8 * MiB, minimum=_MIN_PART_SIZE, integer=True))


def _transfer_config() -> TransferConfig:
    part_size = _part_size()
    request_attempts = _request_attempts()
    return TransferConfig(
        multipart_threshold=part_size,
        multipart_chunksize=part_size,
        num_download_attempts=request_attempts,
    )


def _request_attempts() -> int:
    return int(_env_number("MAWSFLOW_S3_REQUEST_ATTEMPTS", 3, minimum=1, integer=True))


# -- the S3 client ---------------------------------------------------------------------------

# Everything that changes which client we build; secrets are part of the cache key (in memory
# only) so that a changed credential gets a fresh client instead of a stale signer.
_CLIENT_ENV = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_PROFILE",
    "MAWSFLOW_S3_ADDRESSING_STYLE",
    "MAWSFLOW_S3_REQUEST_ATTEMPTS",
)


def s3_client() -> Any:  # botocore generates the client class at run time
    """This process's S3 client for the current environment.

    Cached per (process id, environment): a dataloader worker forked from a parent that
    already made a client builds its own, since a client's connection pool must not be shared
    across processes. For S3 calls this module does not wrap, and for instrumentation (event
    hooks) in tests.
    """
    settings = tuple(os.environ.get(name) for name in _CLIENT_ENV)
    return _build_client(os.getpid(), settings)


@functools.lru_cache(maxsize=8)
def _build_client(pid: int, settings: tuple[str | None, ...]) -> Any:
    env = dict(zip(_CLIENT_ENV, settings, strict=True))
    endpoint = env["AWS_ENDPOINT_URL_S3"] or env["AWS_ENDPOINT_URL"] or None
    region = env["AWS_REGION"] or env["AWS_DEFAULT_REGION"] or "us-east-1"
    addressing = env["MAWSFLOW_S3_ADDRESSING_STYLE"] or ("path" if endpoint else "auto")
    if addressing not in ("path", "virtual", "auto"):
        raise ValueError(
            f"MAWSFLOW_S3_ADDRESSING_STYLE={addressing!r}: must be path, virtual or auto"
        )
    config = Config(
        region_name=region,
        s3={"addressing_style": addressing},
        retries={"mode": "standard", "total_max_attempts": _request_attempts()},
        connect_timeout=10,
        read_timeout=60,
        max_pool_connections=16,
    )
    # A session per client: boto3's default session is not safe to share across threads.
    return boto3.session.Session().client("s3", endpoint_url=endpoint, config=config)


# -- error classification --------------------------------------------------------------------


def _causes(error: BaseException) -> Iterator[BaseException]:
    """The error and what it wraps (boto3's transfer errors wrap the ClientError)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        wrapped = getattr(current, "last_exception", None)
        current = wrapped or current.__cause__ or current.__context__


def _client_error(error: BaseException) -> ClientError | None:
    return next((e for e in _causes(error) if isinstance(e, ClientError)), None)


def _error_code(error: ClientError) -> tuple[str, int]:
    code = str(error.response.get("Error", {}).get("Code", ""))
    status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code, status


def _is_transient(error: BaseException) -> bool:
    if isinstance(error, StorageError):
        # Already decided (an inner retry loop gave up, or a permanent failure): retrying
        # again here would multiply the attempts.
        return False
    client_error = _client_error(error)
    if client_error is not None:
        code, status = _error_code(client_error)
        return code in _TRANSIENT_CODES or status >= 500 or status == 429
    return any(isinstance(e, _TRANSIENT_EXCEPTIONS) for e in _causes(error))


def _translate(error: BaseException, uri: str) -> BaseException:
    """The typed StorageError for a permanent S3 failure, or `error` itself if it is not one."""
    if isinstance(error, StorageError):
        return error
    if any(isinstance(e, NoCredentialsError | PartialCredentialsError) for e in _causes(error)):
        return PermissionDeniedError(
            f"{uri}: no usable AWS credentials; set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
        )
    client_error = _client_error(error)
    if client_error is None:
        return error
    code, status = _error_code(client_error)
    message = client_error.response.get("Error", {}).get("Message", "")
    detail = f"{code}: {message}" if message and message != code else code or str(status)
    if code in _PERMISSION_CODES or status == 403:
        return PermissionDeniedError(
            f"{uri}: access denied ({detail}); {_CREDENTIALS_HINT} "
            f"and the bucket's policy at {_endpoint_description()}"
        )
    if code == "NoSuchBucket":
        bucket = client_error.response.get("Error", {}).get("BucketName") or (
            _split_s3(uri)[0] if is_s3(uri) else "?"
        )
        return NotFoundError(f"{uri}: bucket {bucket!r} does not exist")
    if code == "NoSuchKey":
        return NotFoundError(f"{uri}: no such object")
    if code in _NOT_FOUND_CODES or status == 404:
        return NotFoundError(f"{uri}: not found (no such object or bucket)")
    return StorageError(f"{uri}: S3 error {detail} (HTTP {status})")


def _endpoint_description() -> str:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "AWS"


def _with_retries(uri: str, action: str, attempt: Callable[[], T]) -> T:
    """Run `attempt` (a whole operation) until it succeeds, fails permanently, or the retry
    policy is spent."""
    policy = RetryPolicy.from_env()
    failures = 0
    while True:
        try:
            return attempt()
        except Exception as error:
            if not _is_transient(error):
                translated = _translate(error, uri)
                if translated is error:
                    raise
                raise translated from error
            failures += 1
            if failures >= policy.max_attempts:
                raise UnavailableError(
                    f"{uri}: {action} failed {failures} times with transient errors, giving "
                    f"up (last: {type(error).__name__}: {error})"
                ) from error
            delay = policy.delay_s(failures)
            log.warning(
                "%s: %s failed (%s: %s); retry %d of %d in %.2f s",
                uri,
                action,
                type(error).__name__,
                error,
                failures,
                policy.max_attempts - 1,
                delay,
            )
            time.sleep(delay)


# -- local files -----------------------------------------------------------------------------


@contextmanager
def _local_errors(uri: str) -> Iterator[None]:
    try:
        yield
    except FileNotFoundError as error:
        raise NotFoundError(f"{uri}: no such file or directory") from error
    except PermissionError as error:
        raise PermissionDeniedError(f"{uri}: permission denied") from error
    except IsADirectoryError as error:
        raise StorageError(f"{uri}: is a directory, not a file") from error
    except OSError as error:
        raise StorageError(f"{uri}: {error.strerror or error}") from error


@contextmanager
def _local_atomic_file(uri: str) -> Iterator[BinaryIO]:
    """A file that appears at `uri` only once the block exits cleanly, complete and fsynced."""
    path = _local_path(uri)
    directory = os.path.dirname(os.path.abspath(path))
    temp_path = os.path.join(
        directory, f".{os.path.basename(path)}{_LOCAL_TEMP_MARKER}{secrets.token_hex(6)}"
    )
    with _local_errors(uri):
        os.makedirs(directory, exist_ok=True)
        # O_EXCL: never write into somebody else's file; 0o666 lets the umask decide, as open().
        handle = os.fdopen(os.open(temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb")
    try:
        with handle:
            yield handle
        with _local_errors(uri):
            # Through a fresh descriptor: the caller may have closed the handle itself.
            descriptor = os.open(temp_path, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
            os.replace(temp_path, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temp_path)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
    # Makes the rename itself durable; some filesystems cannot open directories, hence best effort.
    with suppress(OSError):
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def _list_local(prefix: str, prefix_uri: str) -> list[str]:
    """Files whose path starts with `prefix` as a string, as S3 prefixes work: "out/shard"
    matches "out/shard-0.tar" and "out/shards/x"; "out/" only what is inside "out"."""
    root = prefix if prefix.endswith("/") else os.path.dirname(prefix)
    uri_head = prefix_uri[: len(prefix_uri) - len(prefix)]  # "file://" or ""
    found: list[str] = []

    def visit(directory: str) -> None:
        try:
            entries = list(os.scandir(directory or "."))
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            path = f"{directory.rstrip('/')}/{entry.name}" if directory else entry.name
            if entry.is_dir(follow_symlinks=False):
                inside = path + "/"
                if inside.startswith(prefix) or prefix.startswith(inside):
                    visit(inside)
            elif (
                path.startswith(prefix) and _LOCAL_TEMP_MARKER not in entry.name and entry.is_file()
            ):
                found.append(uri_head + path)

    with _local_errors(prefix_uri):
        visit(root)
    return found


# -- S3 objects ------------------------------------------------------------------------------


def _head_object(uri: str) -> dict[str, Any] | None:
    """HeadObject's response, or None if the object is missing; a missing bucket raises.

    A HEAD 404 has no body, so a missing bucket looks like a missing key; one HeadBucket on
    that path tells them apart.
    """
    bucket, key = _s3_object(uri)
    client = s3_client()

    def head() -> dict[str, Any] | None:
        try:
            return client.head_object(Bucket=bucket, Key=key)
        except ClientError as error:
            code, status = _error_code(error)
            if status != 404 and code not in _NOT_FOUND_CODES:
                raise
        try:
            client.head_bucket(Bucket=bucket)
        except ClientError as error:
            if _error_code(error)[1] == 404:
                raise NotFoundError(f"{uri}: bucket {bucket!r} does not exist") from error
            raise
        return None

    return _with_retries(uri, "HEAD", head)


def _require_head(uri: str) -> dict[str, Any]:
    head = _head_object(uri)
    if head is None:
        raise NotFoundError(f"{uri}: no such object")
    return head


def _s3_read_bytes(uri: str) -> bytes:
    bucket, key = _s3_object(uri)
    client = s3_client()

    def get() -> bytes:
        response = client.get_object(Bucket=bucket, Key=key)
        with response["Body"] as body:
            return body.read()

    return _with_retries(uri, "GET", get)


def _s3_upload(uri: str, open_source: Callable[[], BinaryIO]) -> None:
    """Upload what `open_source()` returns (a fresh stream per attempt) as one object."""
    bucket, key = _s3_object(uri)
    client = s3_client()
    config = _transfer_config()

    def upload() -> None:
        with open_source() as source:
            # The transfer manager aborts its multipart upload itself if a part fails.
            client.upload_fileobj(source, bucket, key, Config=config)

    _with_retries(uri, "upload", upload)


def _s3_download(uri: str, local_uri: str) -> None:
    bucket, key = _s3_object(uri)
    _require_head(uri)  # a precise "no such object/bucket" before any local file is made
    client = s3_client()
    config = _transfer_config()

    def download() -> None:
        with _local_atomic_file(local_uri) as target:
            client.download_fileobj(bucket, key, target, Config=config)

    _with_retries(uri, "download", download)


def _s3_copy(src: str, dst: str) -> None:
    src_bucket, src_key = _s3_object(src)
    dst_bucket, dst_key = _s3_object(dst)
    _require_head(src)
    client = s3_client()
    config = _transfer_config()

    def server_side_copy() -> None:
        client.copy({"Bucket": src_bucket, "Key": src_key}, dst_bucket, dst_key, Config=config)

    _with_retries(f"{src} -> {dst}", "copy", server_side_copy)


def _list_s3(prefix_uri: str) -> list[str]:
    bucket, key_prefix = _split_s3(prefix_uri)
    client = s3_client()

    def list_all() -> list[str]:
        uris = []
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=key_prefix
        ):
            for item in page.get("Contents", []):
                # Zero-byte "directory" markers some tools create are not objects to read.
                if not item["Key"].endswith("/"):
                    uris.append(f"s3://{bucket}/{item['Key']}")
        return uris

    return _with_retries(prefix_uri, "LIST", list_all)


class _S3ObjectReader(io.RawIOBase):
    """Streams one object; if the connection breaks mid-stream it resumes where it stopped
    with a ranged GET pinned (If-Match) to the ETag it started with, so a replaced object is
    an error rather than a silently spliced stream."""

    def __init__(self, uri: str) -> None:
        super().__init__()
        self._body: Any = None  # before anything can fail: close() runs even then
        self._uri = uri
        self._bucket, self._key = _s3_object(uri)
        self._client = s3_client()
        self._position = 0
        response = _with_retries(uri, "GET", self._get)
        self._body = response["Body"]
        self._etag: str = response["ETag"]
        self._size: int = response["ContentLength"]

    def _get(self, **conditions: str) -> dict[str, Any]:
        return self._client.get_object(Bucket=self._bucket, Key=self._key, **conditions)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.closed:
            raise ValueError(f"{self._uri}: read from a closed stream")
        if self._position >= self._size:
            return 0
        view = memoryview(buffer).cast("B")
        chunk = _with_retries(
            self._uri, f"read at byte {self._position}", lambda: self._read_chunk(len(view))
        )
        view[: len(chunk)] = chunk
        self._position += len(chunk)
        return len(chunk)

    def _read_chunk(self, size: int) -> bytes:
        try:
            if self._body is None:
                resumed = self._get(Range=f"bytes={self._position}-", IfMatch=self._etag)
                self._body = resumed["Body"]
            chunk = self._body.read(size)
            if not chunk:
                # Short of the known size: a truncated stream, never a quiet early EOF.
                raise IncompleteReadError(actual_bytes=self._position, expected_bytes=self._size)
            return chunk
        except Exception as error:
            self._drop_body()
            client_error = _client_error(error)
            if client_error is not None and _error_code(client_error)[1] == 412:
                raise StorageError(
                    f"{self._uri}: the object changed while it was being read"
                ) from error
            raise

    def _drop_body(self) -> None:
        if self._body is not None:
            with suppress(Exception):
                self._body.close()
            self._body = None

    def close(self) -> None:
        self._drop_body()
        super().close()


class _S3StreamingWriter(io.RawIOBase):
    """Buffers writes into parts and uploads each as it fills: one part in memory at a time.

    `close()` publishes (a single PUT if everything fit in one part, else it completes the
    multipart upload); `abort()` publishes nothing and aborts the multipart upload. A writer
    dropped without either is aborted, never published: an unfinished stream is not an object.
    """

    def __init__(self, uri: str) -> None:
        super().__init__()
        self._uri = uri
        self._bucket, self._key = _s3_object(uri)
        self._client = s3_client()
        self._part_size = _part_size()
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        # Same rule as boto3's transfer manager: per-part CRC32s when the client sends
        # checksums by default, so CompleteMultipartUpload can verify the whole.
        self._checksummed = (
            self._client.meta.config.request_checksum_calculation == "when_supported"
        )

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if self.closed:
            raise ValueError(f"{self._uri}: write to a closed stream")
        with memoryview(data) as view:
            self._buffer += view
            written = view.nbytes
        # Strictly greater: an object of exactly one part still goes up as a single PUT.
        while len(self._buffer) > self._part_size:
            self._upload_part(bytes(self._buffer[: self._part_size]))
            del self._buffer[: self._part_size]
        return written

    def close(self) -> None:
        if self.closed:
            return
        try:
            self._publish()
        except BaseException:
            self._abort_upload()
            raise
        finally:
            self._buffer = bytearray()
            super().close()

    def abort(self) -> None:
        if self.closed:
            return
        self._buffer = bytearray()
        self._abort_upload()
        super().close()

    def __del__(self) -> None:
        with suppress(Exception):
            self.abort()

    def _upload_part(self, data: bytes) -> None:
        if self._upload_id is None:
            extra = {"ChecksumAlgorithm": "CRC32"} if self._checksummed else {}
            self._upload_id = _with_retries(
                self._uri,
                "CreateMultipartUpload",
                lambda: self._client.create_multipart_upload(
                    Bucket=self._bucket, Key=self._key, **extra
                )["UploadId"],
            )
        number = len(self._parts) + 1
        extra = {"ChecksumAlgorithm": "CRC32"} if self._checksummed else {}
        response = _with_retries(
            self._uri,
            f"upload of part {number}",
            lambda: self._client.upload_part(
                Bucket=self._bucket,
                Key=self._key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=data,
                **extra,
            ),
        )
        part = {"PartNumber": number, "ETag": response["ETag"]}
        if "ChecksumCRC32" in response:
            part["ChecksumCRC32"] = response["ChecksumCRC32"]
        self._parts.append(part)

    def _publish(self) -> None:
        if self._upload_id is None:
            body = bytes(self._buffer)
            _with_retries(
                self._uri,
                "PUT",
                lambda: self._client.put_object(Bucket=self._bucket, Key=self._key, Body=body),
            )
            return
        if self._buffer:
            self._upload_part(bytes(self._buffer))
        upload_id = self._upload_id
        _with_retries(
            self._uri,
            "CompleteMultipartUpload",
            lambda: self._client.complete_multipart_upload(
                Bucket=self._bucket,
                Key=self._key,
                UploadId=upload_id,
                MultipartUpload={"Parts": self._parts},
            ),
        )
        self._upload_id = None

    def _abort_upload(self) -> None:
        upload_id, self._upload_id = self._upload_id, None
        if upload_id is None:
            return
        try:
            self._client.abort_multipart_upload(
                Bucket=self._bucket, Key=self._key, UploadId=upload_id
            )
        except Exception as error:
            # The store may be what failed; the upload stays invisible either way, and S3
            # lifecycle rules (AbortIncompleteMultipartUpload) reclaim its parts.
            log.warning("%s: could not abort multipart upload %s: %s", self._uri, upload_id, error)


# -- public API ------------------------------------------------------------------------------


def read_bytes(uri: str) -> bytes:
    if is_s3(uri):
        return _s3_read_bytes(uri)
    with _local_errors(uri), open(_local_path(uri), "rb") as file:
        return file.read()


def write_bytes(uri: str, data: bytes) -> None:
    """Write `data` as the whole object at `uri`, atomically."""
    if is_s3(uri):
        if len(data) > _part_size():
            _s3_upload(uri, lambda: io.BytesIO(data))
            return
        # A single PUT directly: the transfer manager's thread pool per call is pure
        # overhead for small objects, which are most of what steps write.
        bucket, key = _s3_object(uri)
        client = s3_client()
        _with_retries(uri, "PUT", lambda: client.put_object(Bucket=bucket, Key=key, Body=data))
        return
    with _local_errors(uri), _local_atomic_file(uri) as file:
        file.write(data)


def read_text(uri: str) -> str:
    data = read_bytes(uri)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise StorageError(f"{uri}: not UTF-8 text ({error})") from error


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


def read_json(uri: str) -> Any:
    text = read_text(uri)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise StorageError(f"{uri}: not valid JSON ({error})") from error


def write_json(uri: str, obj: Any) -> None:
    """Stable output (sorted keys, 2-space indent, trailing newline): the same object always
    gives the same bytes, so reruns of a step produce identical files."""
    try:
        text = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{uri}: cannot encode as JSON: {error}") from error
    write_text(uri, text + "\n")


@contextmanager
def open_read(uri: str) -> Iterator[BinaryIO]:
    """A buffered binary stream over the object; S3 objects stream without a full download."""
    if is_s3(uri):
        stream: io.BufferedIOBase = io.BufferedReader(
            _S3ObjectReader(uri), buffer_size=_READ_BUFFER_SIZE
        )
    else:
        with _local_errors(uri):
            stream = open(_local_path(uri), "rb")  # noqa: SIM115 (closed below)
    with stream:
        yield cast(BinaryIO, stream)


@contextmanager
def open_write(uri: str) -> Iterator[BinaryIO]:
    """A binary stream whose content appears at `uri` only when the block exits cleanly.

    On an exception nothing is published (an existing object stays as it was) and a started
    multipart upload is aborted. On S3, up to one part is buffered in memory and full parts
    upload as they fill. Closing the stream inside the block publishes at that point.
    """
    if not is_s3(uri):
        with _local_atomic_file(uri) as file:
            yield file
        return
    writer = _S3StreamingWriter(uri)
    try:
        yield cast(BinaryIO, writer)
    except BaseException:
        writer.abort()
        raise
    writer.close()


def exists(uri: str) -> bool:
    """Whether an object (a regular file, locally) is at `uri`; a missing bucket raises."""
    if is_s3(uri):
        return _head_object(uri) is not None
    return os.path.isfile(_local_path(uri))


def size(uri: str) -> int:
    if is_s3(uri):
        return int(_require_head(uri)["ContentLength"])
    with _local_errors(uri):
        return os.path.getsize(_local_path(uri))


def list_uris(prefix: str, *, suffix: str | None = None) -> list[str]:
    """Every object under `prefix`, recursively, as sorted full URIs in the prefix's style.

    `prefix` is a string prefix on both backends (S3's meaning): "s3://b/data" also matches
    "s3://b/data2/x"; end it with "/" to list one "directory". A local directory path works as
    a prefix. In-progress local writes are never listed. A missing bucket raises.
    """
    uris = _list_s3(prefix) if is_s3(prefix) else _list_local(_local_path(prefix), prefix)
    if suffix is not None:
        uris = [uri for uri in uris if uri.endswith(suffix)]
    return sorted(uris)


def list_versions(prefix: str, *, suffix: str | None = None) -> dict[str, str]:
    """Every object under `prefix` (as `list_uris` finds them) with a token that changes when
    the object's content is replaced: S3's ETag and size from the same LIST pages (one request
    per thousand objects, no HEAD per object), locally the size and modification time in ns.
    What a cache key needs to tell one version of a data set from the next."""
    if is_s3(prefix):
        bucket, key_prefix = _split_s3(prefix)
        client = s3_client()

        def list_all() -> dict[str, str]:
            found = {}
            for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=key_prefix
            ):
                for item in page.get("Contents", []):
                    if not item["Key"].endswith("/"):
                        token = f"{item.get('ETag', '').strip(chr(34))}:{item['Size']}"
                        found[f"s3://{bucket}/{item['Key']}"] = token
            return found

        versions = _with_retries(prefix, "LIST", list_all)
    else:
        versions = {}
        for uri in _list_local(_local_path(prefix), prefix):
            with _local_errors(uri):
                st = os.stat(_local_path(uri))
            versions[uri] = f"{st.st_mtime_ns}:{st.st_size}"
    if suffix is not None:
        versions = {uri: v for uri, v in versions.items() if uri.endswith(suffix)}
    return dict(sorted(versions.items()))


def delete(uri: str) -> None:
    """Remove the object; a missing object is fine, a missing bucket is not."""
    if is_s3(uri):
        bucket, key = _s3_object(uri)
        client = s3_client()
        _with_retries(uri, "DELETE", lambda: client.delete_object(Bucket=bucket, Key=key))
        return
    with _local_errors(uri), suppress(FileNotFoundError):
        os.unlink(_local_path(uri))


def copy(src: str, dst: str) -> None:
    """Copy one object; server-side when both are on S3, atomic at `dst` in every case."""
    if is_s3(src) and is_s3(dst):
        _s3_copy(src, dst)
    elif is_s3(src):
        _s3_download(src, dst)
    elif is_s3(dst):
        _s3_upload(dst, lambda: _open_local_for_read(src))
    else:
        with (
            _open_local_for_read(src) as source,
            _local_errors(f"{src} -> {dst}"),
            _local_atomic_file(dst) as target,
        ):
            shutil.copyfileobj(source, target, _READ_BUFFER_SIZE)


def _open_local_for_read(uri: str) -> BinaryIO:
    with _local_errors(uri):
        return open(_local_path(uri), "rb")


def upload_file(local_path: str, uri: str) -> None:
    if is_s3(local_path):
        raise ValueError(f"{local_path}: upload_file needs a local source path")
    copy(local_path, uri)


def download_file(uri: str, local_path: str) -> None:
    if is_s3(local_path):
        raise ValueError(f"{local_path}: download_file needs a local target path")
    copy(uri, local_path)


# -- webdataset ------------------------------------------------------------------------------

_registration_lock = threading.Lock()


def _gopen_s3(url: str, mode: str = "rb", bufsize: int = 8192, **_: Any) -> BinaryIO:
    """webdataset's opener signature. The write stream publishes on close(); a stream that is
    dropped unclosed (the writer crashed) publishes nothing."""
    if mode == "rb":
        reader = io.BufferedReader(
            _S3ObjectReader(url), buffer_size=max(bufsize, _READ_BUFFER_SIZE)
        )
        return cast(BinaryIO, reader)
    if mode == "wb":
        return cast(BinaryIO, _S3StreamingWriter(url))
    raise ValueError(f"{url}: unsupported mode {mode!r} (webdataset opens with 'rb' or 'wb')")


def register_webdataset() -> None:
    """Route webdataset's `s3://` URLs through this module. Idempotent."""
    # `webdataset.gopen` is shadowed by the function of that name on the package, hence
    # import_module to reach the module and its dispatch table.
    schemes = importlib.import_module("webdataset.gopen").gopen_schemes
    with _registration_lock:
        schemes["s3"] = _gopen_s3
