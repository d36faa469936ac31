"""The S3 blob store against a real SeaweedFS server: written once under the digest, conditional uploads, reads
checked against the digest, multipart, stale uploads, and the errors a user can act on.

The server is real throughout. botocore's event hooks are used only for what a server cannot be asked to do on cue:
another machine's upload landing between our check and our write, a 500, a connection dropped mid-upload.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from botocore.exceptions import ConnectionClosedError

from lorahub import errors
from lorahub.registry.s3blobs import S3BlobStore, S3Location, make_client
from tests.support import SeaweedFS, free_port

MIB = 1024 * 1024


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(s3_blobs_url: str, tmp_path: Path) -> S3BlobStore:
    return S3BlobStore.from_url(s3_blobs_url, cache=tmp_path / "cache")


def _objects(seaweedfs: SeaweedFS, store: S3BlobStore) -> dict[str, bytes]:
    client = seaweedfs.client()
    listing = client.list_objects_v2(Bucket=seaweedfs.bucket, Prefix=store.where.prefix).get("Contents", [])
    return {o["Key"]: client.get_object(Bucket=seaweedfs.bucket, Key=o["Key"])["Body"].read() for o in listing}


def _uploads(seaweedfs: SeaweedFS, store: S3BlobStore) -> list[str]:
    answer = seaweedfs.client().list_multipart_uploads(Bucket=seaweedfs.bucket, Prefix=store.where.prefix)
    return [u["Key"] for u in answer.get("Uploads", [])]


def test_locations_parse_and_name_keys() -> None:
    where = S3Location.parse("s3://team-loras/studio/adapters/")
    sha = _sha(b"x")
    assert (where.bucket, where.prefix, where.url) == (
        "team-loras",
        "studio/adapters/",
        "s3://team-loras/studio/adapters/",
    )
    assert where.key(sha) == f"studio/adapters/sha256/{sha[:2]}/{sha}"
    assert where.sha256_of(where.key(sha)) == sha
    assert where.sha256_of(f"studio/adapters/sha256/00/{sha}") is None  # wrong shard: not a blob
    assert where.sha256_of("studio/adapters/notes.txt") is None
    assert S3Location.parse("s3://bucket").prefix == ""
    for bad in ("s3://", "s3://B", "s3://x/prefix", "s3://under_score"):
        with pytest.raises(errors.SettingsError):
            S3Location.parse(bad)


def test_put_twice_stores_one_object_under_its_digest(store: S3BlobStore, seaweedfs: SeaweedFS) -> None:
    data = os.urandom(100_000)
    first, second = store.put_bytes(data), store.put_bytes(data)
    assert (first.existed, second.existed) == (False, True)
    assert first.sha256 == second.sha256 == _sha(data) and first.size == len(data)
    assert _objects(seaweedfs, store) == {store.where.key(first.sha256): data}
    assert list(store.iter_blobs()) == [first.sha256]
    assert store.exists(first.sha256) and store.size(first.sha256) == len(data) and store.verify(first.sha256)
    # the spooled copy is the verified local copy: reading back costs no download
    assert store.fetch(first.sha256) == store.local_path(first.sha256)
    assert store.local_path(first.sha256).read_bytes() == data


def test_a_large_file_goes_up_in_parts_with_their_checksums(
    s3_blobs_url: str, tmp_path: Path, seaweedfs: SeaweedFS
) -> None:
    store = S3BlobStore.from_url(s3_blobs_url, cache=tmp_path / "cache")
    store.part_bytes = 5 * MIB  # S3's smallest part, so that a small file makes several
    sent: list[str] = []
    store.client.meta.events.register(
        "before-parameter-build.s3.UploadPart", lambda params, **_: sent.append(params["ChecksumSHA256"])
    )
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(12 * MIB + 123))
    info = store.put_file(source)
    assert (info.existed, info.size, info.sha256) == (False, source.stat().st_size, _sha(source.read_bytes()))
    assert len(sent) == 3  # 5 + 5 + 2 MiB, each with its SHA-256 for the server to check
    head = seaweedfs.client().head_object(
        Bucket=seaweedfs.bucket, Key=store.where.key(info.sha256), ChecksumMode="ENABLED"
    )
    assert head["ContentLength"] == info.size and head["ChecksumSHA256"].endswith("-3")
    assert _uploads(seaweedfs, store) == []
    cached = store.local_path(info.sha256)
    cached.unlink()  # fetched again, and checked
    assert store.fetch(info.sha256) == cached and cached.read_bytes() == source.read_bytes()


def test_a_digest_given_first_lets_the_upload_run_while_the_bytes_come(
    store: S3BlobStore, seaweedfs: SeaweedFS
) -> None:
    store.part_bytes = 5 * MIB
    data = os.urandom(12 * MIB)
    with store.writer(sha256=_sha(data)) as writer:
        writer.write(data[: 6 * MIB])
        assert _uploads(seaweedfs, store) == [store.where.key(_sha(data))]  # under way before the end
        writer.write(data[6 * MIB :])
        assert writer.commit(_sha(data)).existed is False
    assert list(_objects(seaweedfs, store).values()) == [data] and _uploads(seaweedfs, store) == []
    assert not store.local_path(_sha(data)).exists()  # nothing spooled: the cache fills when a read needs it
    requests: list[str] = []
    store.client.meta.events.register("before-call.s3", lambda model, **_: requests.append(model.name))
    with store.writer(sha256=_sha(data)) as writer:  # held already: nothing is sent
        writer.write(data)
        assert writer.commit(_sha(data)).existed is True
    assert requests == ["HeadObject"]
    changed = os.urandom(6 * MIB)
    with store.writer(sha256=_sha(b"what the file held when hashed")) as writer:
        writer.write(changed)
        with pytest.raises(errors.HashMismatchError, match="changed"):
            writer.commit(_sha(changed))
    assert not store.exists(_sha(changed)) and _uploads(seaweedfs, store) == []


def test_concurrent_writers_of_the_same_content_store_it_once(
    s3_blobs_url: str, tmp_path: Path, seaweedfs: SeaweedFS
) -> None:
    data = os.urandom(300_000)
    stores = [S3BlobStore.from_url(s3_blobs_url, cache=tmp_path / f"cache-{i}") for i in range(4)]
    start, results = threading.Barrier(len(stores)), []

    def put(store: S3BlobStore) -> None:
        start.wait()
        results.append(store.put_bytes(data).existed)

    threads = [threading.Thread(target=put, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False, True, True, True]
    assert list(_objects(seaweedfs, stores[0]).values()) == [data]


@pytest.mark.parametrize("size", [1000, 6 * MIB], ids=["whole", "multipart"])
def test_an_upload_never_overwrites_what_another_machine_stored_meanwhile(
    store: S3BlobStore, seaweedfs: SeaweedFS, size: int
) -> None:
    """Another machine's object lands between our look and our write: If-None-Match makes the server refuse ours.
    Its bytes are made different here only to show whose object survived (two honest writers send the same)."""
    store.part_bytes = 5 * MIB
    data = os.urandom(size)
    key = store.where.key(_sha(data))
    theirs = bytes(reversed(data))
    operation = "PutObject" if size <= store.part_bytes else "CompleteMultipartUpload"

    def another_machine_stores_it(**_: Any) -> None:
        seaweedfs.client().put_object(Bucket=seaweedfs.bucket, Key=key, Body=theirs)

    store.client.meta.events.register(f"before-call.s3.{operation}", another_machine_stores_it)
    assert store.put_bytes(data).existed is True  # refused with 412: already stored
    assert _objects(seaweedfs, store) == {key: theirs}
    assert _uploads(seaweedfs, store) == []  # the refused multipart upload was aborted
    # and a read checks the digest: those bytes are not what the key names
    store.local_path(_sha(data)).unlink()
    with pytest.raises(errors.BlobDamagedError, match="sha256"):
        store.fetch(_sha(data))
    assert not store.local_path(_sha(data)).exists() and store.verify(_sha(data)) is False


def test_an_object_of_the_wrong_size_under_a_digest_is_refused(store: S3BlobStore, seaweedfs: SeaweedFS) -> None:
    data = b"the real bytes"
    seaweedfs.client().put_object(Bucket=seaweedfs.bucket, Key=store.where.key(_sha(data)), Body=b"other")
    with pytest.raises(errors.BlobDamagedError, match="holds 5 bytes"):
        store.put_bytes(data)


def test_missing_blobs_and_removal(store: S3BlobStore, seaweedfs: SeaweedFS) -> None:
    absent = _sha(b"never stored")
    assert (store.exists(absent), store.size(absent), store.fetch(absent), store.verify(absent)) == (
        False,
        None,
        None,
        False,
    )
    assert store.remove(absent) is False
    info = store.put_bytes(b"to be collected")
    assert store.remove(info.sha256) is True
    assert _objects(seaweedfs, store) == {} and not store.local_path(info.sha256).exists()
    assert store.fetch(info.sha256) is None  # a cached copy is never served for an object that is gone


def test_stale_multipart_uploads_are_aborted(store: S3BlobStore, seaweedfs: SeaweedFS) -> None:
    key = store.where.key(_sha(b"a writer that died"))
    seaweedfs.client().create_multipart_upload(Bucket=seaweedfs.bucket, Key=key)
    assert store.cleanup_stale() == 0  # young: it may be a live writer's
    assert _uploads(seaweedfs, store) == [key]
    assert store.cleanup_stale(older_than=timedelta(0)) == 1
    assert _uploads(seaweedfs, store) == []


def _fault(status: int, code: str = "InternalError") -> AWSResponse:
    class Raw:
        def stream(self) -> Iterator[bytes]:
            yield f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode()

    return AWSResponse("http://injected", status, {}, Raw())


@pytest.fixture
def impatient(s3_blobs_url: str, tmp_path: Path) -> S3BlobStore:
    """A store whose client tries each request three times (the default five take seconds of backoff)."""
    client = make_client(connections=10, attempts=3)
    return S3BlobStore(S3Location.parse(s3_blobs_url), cache=tmp_path / "cache", client=client, part_bytes=5 * MIB)


def test_a_server_error_is_retried_and_a_lasting_one_leaves_nothing(
    impatient: S3BlobStore, seaweedfs: SeaweedFS
) -> None:
    store = impatient
    failures = {"left": 2}

    def flaky(**_: Any) -> AWSResponse | None:
        if failures["left"] > 0:
            failures["left"] -= 1
            return _fault(500)
        return None

    store.client.meta.events.register("before-send.s3.UploadPart", flaky)
    data = os.urandom(6 * MIB)
    assert store.put_bytes(data).existed is False  # two 500s, retried
    assert list(_objects(seaweedfs, store).values()) == [data]

    failures["left"] = 10**6
    other = os.urandom(6 * MIB)
    with pytest.raises(errors.BlobStoreError, match="InternalError"):
        store.put_bytes(other)
    assert not store.exists(_sha(other)) and _uploads(seaweedfs, store) == []


def test_a_connection_dropped_mid_upload_leaves_nothing(impatient: S3BlobStore, seaweedfs: SeaweedFS) -> None:
    store = impatient
    sent = {"parts": 0}

    def drop_after_the_first_part(request: Any, **_: Any) -> None:
        sent["parts"] += 1
        if sent["parts"] > 1:
            raise ConnectionClosedError(endpoint_url=request.url)

    store.client.meta.events.register("before-send.s3.UploadPart", drop_after_the_first_part)
    data = os.urandom(11 * MIB)
    with pytest.raises(errors.BlobStoreUnreachableError):
        store.put_bytes(data)
    assert not store.exists(_sha(data)) and _uploads(seaweedfs, store) == []
    assert list(store.cache.iter_blobs()) == [_sha(data)]  # the spooled copy is kept: it is verified content


def _client(endpoint: str, **credentials: str) -> Any:
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", config=Config(retries={"max_attempts": 1}), **credentials
    )


def test_errors_say_what_to_fix(seaweedfs: SeaweedFS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    where = S3Location.parse(f"s3://{seaweedfs.bucket}/errors")
    wrong = _client(seaweedfs.endpoint, aws_access_key_id=seaweedfs.access_key, aws_secret_access_key="wrong")
    with pytest.raises(errors.BlobStoreAuthError, match="403"):  # a HEAD: no body, so no code
        S3BlobStore(where, cache=tmp_path, client=wrong).put_bytes(b"x")
    refused = _client(f"http://127.0.0.1:{free_port()}", aws_access_key_id="a", aws_secret_access_key="b")
    with pytest.raises(errors.BlobStoreUnreachableError):
        S3BlobStore(where, cache=tmp_path, client=refused).exists(_sha(b"x"))
    good = seaweedfs.client()
    with pytest.raises(errors.BlobStoreError, match="does not exist") as missing:
        S3BlobStore(S3Location.parse("s3://no-such-bucket"), cache=tmp_path, client=good).put_bytes(b"x")
    assert "aws s3 mb" in str(missing.value.hint)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL", seaweedfs.endpoint)
    with pytest.raises(errors.BlobStoreAuthError, match="no AWS credentials") as anonymous:
        S3BlobStore(where, cache=tmp_path).put_bytes(b"x")
    assert "AWS_ACCESS_KEY_ID" in str(anonymous.value.hint)


@pytest.mark.parametrize("announced", [True, False], ids=["streamed", "spooled"])
def test_a_conflicting_conditional_write_is_sent_again(
    impatient: S3BlobStore, seaweedfs: SeaweedFS, announced: bool, tmp_path: Path
) -> None:
    """AWS answers 409 ConditionalRequestConflict while another conditional write of the key is in flight (SeaweedFS
    never does): the upload starts again and succeeds."""
    store = impatient
    conflicts = {"left": 1}

    def conflict(**_: Any) -> AWSResponse | None:
        if conflicts["left"] > 0:
            conflicts["left"] -= 1
            return _fault(409, "ConditionalRequestConflict")
        return None

    store.client.meta.events.register("before-send.s3.CompleteMultipartUpload", conflict)
    data = os.urandom(6 * MIB)
    source = tmp_path / "source.bin"  # read again by a streamed upload that starts over
    source.write_bytes(data)
    with store.writer(sha256=_sha(data) if announced else None, source=source) as writer:
        writer.write(data)
        assert writer.commit().existed is False
    assert conflicts["left"] == 0
    assert list(_objects(seaweedfs, store).values()) == [data] and _uploads(seaweedfs, store) == []
