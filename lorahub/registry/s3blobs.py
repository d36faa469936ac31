"""Blobs in an S3-compatible bucket (AWS S3, SeaweedFS, MinIO, Ceph…), named ``PREFIX/sha256/ab/abcdef…``.

Selected by ``LORAHUB_BLOBS_URL=s3://BUCKET/PREFIX`` (or ``blobs_url`` in the home's ``config.toml``); the endpoint,
region and credentials come the standard way (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
``AWS_PROFILE`` and ``~/.aws``), through boto3 (the ``s3`` extra).

Writing: every upload is conditional, ``If-None-Match: *``, so two machines storing the same content concurrently
cannot overwrite each other: one succeeds, the other is told the object exists (``existed``). An upload carries
SHA-256 checksums the server verifies: of the whole object when it is one request, of each part when it is a multipart
upload (larger than :data:`PART_BYTES`). Given the digest before the bytes (``lorahub add`` hashes the file first:
:attr:`S3BlobStore.digest_first`), a writer uploads the parts while the caller reads the file, a few threads at a
time, so memory does not grow with the file, and sends nothing when the bucket already holds the key; without it, the
bytes are spooled into the home's cache, hashed, and uploaded from there (the spooled file stays as the verified
local copy). A writer killed at any point leaves at most an unfinished multipart upload (invisible, aborted
by ``gc``) or an object no version references yet (its lease keeps ``gc`` off it until the lease expires; see
:mod:`lorahub.registry.leases`), never a version pointing at a missing object.

Reading: callers that need a file (torch loading, conversion, verification) get a local copy under the cache, fetched
on demand and hashed as it is written: bytes that do not match their key are dropped and reported
(``blob-damaged``). A cached copy is served only while the bucket still holds the object.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from lorahub import errors
from lorahub.registry.blobs import CHUNK_BYTES, BlobInfo, BlobStore, BlobWriter, CommitOrAbort, check_sha256

PART_BYTES: Final = 8 * 1024 * 1024
"""Files up to this size go up in one request; larger ones in parts of this size (more when 10,000 would not do)."""
MAX_PARTS: Final = 10_000
"""S3's limit on the parts of one upload."""
UPLOAD_THREADS: Final = 8
"""Parts in flight at once: loopback and LAN servers need a few to be kept busy; memory is this many parts."""
STALE_UPLOAD_AGE: Final = timedelta(hours=24)
"""An unfinished multipart upload older than this was left by a writer that died: ``gc`` aborts it."""
CONFLICT_RETRIES: Final = 5
"""Tries when S3 answers 409 ConditionalRequestConflict (another conditional write of the key is in flight)."""
_KEY = re.compile(r"sha256/([0-9a-f]{2})/([0-9a-f]{64})")
_MISSING_CODES: Final = frozenset({"404", "NoSuchKey", "NotFound"})
_AUTH_CODES: Final = frozenset(
    {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"}
)
_PRECONDITION_CODES: Final = frozenset({"412", "PreconditionFailed"})
_CONFLICT_CODES: Final = frozenset({"409", "ConditionalRequestConflict"})


@dataclass(frozen=True)
class S3Location:
    """A bucket and a key prefix (empty, or ending in ``/``), from ``s3://BUCKET[/PREFIX]``."""

    bucket: str
    prefix: str

    @classmethod
    def parse(cls, url: str) -> S3Location:
        rest = url.removeprefix("s3://")
        bucket, _, prefix = rest.partition("/")
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
            raise errors.SettingsError(
                f"{url!r} does not name an S3 bucket",
                hint="Write s3://BUCKET/PREFIX: a bucket name of 3 to 63 lowercase letters, digits, dots and dashes.",
            )
        prefix = prefix.strip("/")
        return cls(bucket, f"{prefix}/" if prefix else "")

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def key(self, sha256: str) -> str:
        sha256 = check_sha256(sha256)
        return f"{self.prefix}sha256/{sha256[:2]}/{sha256}"

    def sha256_of(self, key: str) -> str | None:
        """The digest a key stores, or None for any other object under the prefix."""
        match = _KEY.fullmatch(key.removeprefix(self.prefix)) if key.startswith(self.prefix) else None
        if match is None or not match[2].startswith(match[1]):
            return None
        return match[2]


def make_client(*, connections: int, attempts: int = 5) -> Any:
    """A boto3 S3 client configured the standard way (environment, profile, ``~/.aws``), retrying throttling and
    server errors with backoff. Checksums are the caller's business: lorahub sends SHA-256 and hashes what it reads."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise errors.MissingExtraError("an S3 blob store", "s3") from None
    config = Config(
        retries={"mode": "standard", "max_attempts": attempts},
        max_pool_connections=connections,
        connect_timeout=10,
        read_timeout=120,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        # the x-amz-checksum-sha256 header (signed, and checked by the server) covers each body, so hashing it a
        # second time for the signature, as botocore does over plain HTTP, would prove nothing more
        s3={"payload_signing_enabled": False},
    )
    return boto3.session.Session().client("s3", config=config)


class S3BlobStore:
    """Blobs in ``where``; local copies in a :class:`~lorahub.registry.blobs.BlobStore` at ``cache``. See the module
    docstring. ``client`` (a boto3 S3 client) is made on first use unless given."""

    def __init__(
        self,
        where: S3Location,
        *,
        cache: Path,
        client: Any = None,
        part_bytes: int = PART_BYTES,
        threads: int = UPLOAD_THREADS,
    ) -> None:
        self.where = where
        self.cache = BlobStore(cache)
        self.part_bytes = part_bytes
        self.threads = threads
        self._client = client

    @classmethod
    def from_url(cls, url: str, *, cache: Path) -> S3BlobStore:
        return cls(S3Location.parse(url), cache=cache)

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = make_client(connections=self.threads + 2)
        return self._client

    @property
    def location(self) -> str:
        return f"{self.where.url} at {self.client.meta.endpoint_url}"

    # --- writing ------------------------------------------------------------------------------------------------

    digest_first = True
    """Given the digest before the bytes, a writer uploads them while they are read (see :meth:`writer`)."""

    def writer(
        self, *, hashed_by_caller: bool = False, sha256: str | None = None, source: Path | None = None
    ) -> S3BlobWriter:
        """A writer that spools into the cache while it hashes, and uploads at ``commit`` (the spooled copy stays as
        the verified local copy); or, given the ``sha256`` the bytes will have (the caller hashed the file
        ``source`` in a pass of its own), uploads them as they come, so the caller's read and the upload overlap,
        and sends nothing at all when the bucket already holds them. ``source`` is read again only if the upload
        must start over (another machine's conditional write of the key was in flight)."""
        return S3BlobWriter(self, hashed_by_caller=hashed_by_caller, sha256=sha256, source=source)

    def put_file(self, path: str | os.PathLike[str], expected_sha256: str | None = None) -> BlobInfo:
        with self.writer() as writer, open(path, "rb") as source:
            while chunk := source.read(CHUNK_BYTES):
                writer.write(chunk)
            return writer.commit(expected_sha256)

    def put_bytes(self, data: bytes, expected_sha256: str | None = None) -> BlobInfo:
        with self.writer() as writer:
            writer.write(data)
            return writer.commit(expected_sha256)

    def upload(self, path: Path, sha256: str, size: int, *, check: bool = False) -> bool:
        """Store the file ``path`` (whose bytes hash to ``sha256``) under its key unless the bucket has it; returns
        whether it was already there. Safe against any number of concurrent uploads of the same content. With
        ``check``, the bytes are hashed as they are sent, and the upload is dropped unless they match (a file that
        is not the spooled, verified copy may have changed)."""
        for attempt in range(CONFLICT_RETRIES):
            stream = Upload(self, sha256)
            try:
                if stream.stored is None:
                    digest = hashlib.sha256()
                    with open(path, "rb") as source:
                        while chunk := source.read(self.part_bytes):
                            if check:
                                digest.update(chunk)
                            stream.write(chunk)
                    if check and digest.hexdigest() != sha256:
                        raise _changed(sha256, digest.hexdigest())
                return stream.finish(size)
            except _Conditional:
                time.sleep(0.1 * 2**attempt)
            except BaseException:
                stream.abort()
                raise
        raise errors.BlobStoreError(f"{self._url(self.where.key(sha256))}: other writes of it kept conflicting")

    def existing(self, key: str, stored: int | None, size: int) -> bool:
        """The object another writer stored: content addressing makes it ours, unless its size says otherwise."""
        if stored is not None and stored != size:
            raise errors.BlobDamagedError(
                f"{self._url(key)} holds {stored} bytes, not the {size} its digest names",
                hint="Something other than lorahub wrote that key; delete the object, then add the file again.",
            )
        return True

    def put_whole(self, key: str, data: bytes, sha256: str) -> None:
        """One request, carrying the object's SHA-256 for the server to check, refused if the key exists."""
        checksum = base64.b64encode(bytes.fromhex(sha256)).decode("ascii")
        with self._translated(key), self._conditional(key):
            self.client.put_object(
                Bucket=self.where.bucket, Key=key, Body=data, ChecksumSHA256=checksum, IfNoneMatch="*"
            )

    def start_parts(self, key: str) -> str:
        with self._translated(key):
            return str(
                self.client.create_multipart_upload(Bucket=self.where.bucket, Key=key, ChecksumAlgorithm="SHA256")[
                    "UploadId"
                ]
            )

    def put_part(self, key: str, upload_id: str, number: int, data: bytes) -> dict[str, Any]:
        checksum = base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")
        with self._translated(key):
            answer = self.client.upload_part(
                Bucket=self.where.bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=data,
                ChecksumSHA256=checksum,
            )
        return {"PartNumber": number, "ETag": answer["ETag"], "ChecksumSHA256": checksum}

    def finish_parts(self, key: str, upload_id: str, parts: list[dict[str, Any]]) -> None:
        with self._translated(key), self._conditional(key):
            self.client.complete_multipart_upload(
                Bucket=self.where.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
                IfNoneMatch="*",
            )

    def abort_parts(self, key: str, upload_id: str) -> None:
        """Drop an unfinished upload's parts; if even that fails, ``gc`` aborts it once it is stale."""
        with contextlib.suppress(Exception):
            self.client.abort_multipart_upload(Bucket=self.where.bucket, Key=key, UploadId=upload_id)

    # --- reading ------------------------------------------------------------------------------------------------

    def exists(self, sha256: str) -> bool:
        return self.head_size(self.where.key(sha256)) is not None

    def size(self, sha256: str) -> int | None:
        return self.head_size(self.where.key(sha256))

    def local_path(self, sha256: str) -> Path:
        return self.cache.path_for(sha256)

    def fetch(self, sha256: str) -> Path | None:
        """The cached copy while the bucket holds the object (and their sizes agree), else a fresh download, hashed
        as it is written to the cache; damaged bytes raise ``BlobDamagedError`` and are not kept."""
        key = self.where.key(sha256)
        stored = self.head_size(key)
        if stored is None:
            return None
        cached = self.cache.path_for(sha256)
        with contextlib.suppress(FileNotFoundError):
            if cached.stat().st_size == stored:
                return cached
            cached.unlink()  # a copy whose size disagrees is not this blob
        with self.cache.writer() as writer:
            try:
                for chunk in self._read(key):
                    writer.write(chunk)
            except _Missing:
                return None  # deleted since the HEAD
            try:
                info = writer.commit(sha256)
            except errors.HashMismatchError as mismatch:
                raise errors.BlobDamagedError(f"{self._url(key)}: {mismatch.message}") from None
        assert info.path is not None
        return info.path

    def verify(self, sha256: str) -> bool:
        """Read the object back and hash it: True when its bytes match its key (False when it is missing)."""
        digest = hashlib.sha256()
        try:
            for chunk in self._read(self.where.key(sha256)):
                digest.update(chunk)
        except _Missing:
            return False
        return digest.hexdigest() == sha256

    def _read(self, key: str) -> Iterator[bytes]:
        with self._translated(key):
            try:
                body = self.client.get_object(Bucket=self.where.bucket, Key=key)["Body"]
            except Exception as error:
                if _code(error) in _MISSING_CODES:
                    raise _Missing(key) from None
                raise
            with contextlib.closing(body):
                yield from body.iter_chunks(CHUNK_BYTES)

    def head_size(self, key: str) -> int | None:
        with self._translated(key):
            try:
                answer = self.client.head_object(Bucket=self.where.bucket, Key=key)
            except Exception as error:
                if _code(error) in _MISSING_CODES:
                    return None
                raise
        return int(answer["ContentLength"])

    def iter_blobs(self) -> Iterator[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.where.bucket, Prefix=f"{self.where.prefix}sha256/"
        )
        with self._translated(self.where.prefix):
            for page in pages:
                for entry in page.get("Contents", ()):
                    sha256 = self.where.sha256_of(entry["Key"])
                    if sha256 is not None:
                        yield sha256

    # --- removing -----------------------------------------------------------------------------------------------

    def remove(self, sha256: str) -> bool:
        """Delete the object and its cached copy (garbage collection); False when the bucket did not hold it."""
        key = self.where.key(sha256)
        with contextlib.suppress(FileNotFoundError):
            self.cache.path_for(sha256).unlink()
        if self.head_size(key) is None:
            return False
        with self._translated(key):
            self.client.delete_object(Bucket=self.where.bucket, Key=key)
        return True

    def link(self, path: Path, sha256: str, *, inode: int) -> bool:
        """A bucket holds no hard links: a library catalogued in place stays only where it lies."""
        return False

    def cleanup_stale(self, older_than: timedelta = STALE_UPLOAD_AGE) -> int:
        """Abort the multipart uploads under the prefix that writers started more than ``older_than`` ago and never
        finished, and remove the cache's abandoned temporary files; returns how many of both."""
        cutoff = datetime.now(UTC) - older_than
        aborted = 0
        pages = self.client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.where.bucket, Prefix=f"{self.where.prefix}sha256/"
        )
        with self._translated(self.where.prefix):
            for page in pages:
                for upload in page.get("Uploads", ()):
                    if upload["Initiated"] <= cutoff:
                        self.abort_parts(upload["Key"], upload["UploadId"])
                        aborted += 1
        return aborted + len(self.cache.cleanup_temp())

    # --- errors -------------------------------------------------------------------------------------------------

    def _url(self, key: str) -> str:
        return f"s3://{self.where.bucket}/{key}"

    @contextlib.contextmanager
    def _conditional(self, key: str) -> Iterator[None]:
        """``If-None-Match: *`` refused: the object exists (412), or another conditional write of it is in flight
        (409, to be retried)."""
        try:
            yield
        except Exception as error:
            code = _code(error)
            if code in _PRECONDITION_CODES:
                raise _Conditional(conflict=False) from None
            if code in _CONFLICT_CODES:
                raise _Conditional(conflict=True) from None
            raise

    @contextlib.contextmanager
    def _translated(self, key: str) -> Iterator[None]:
        """botocore's exceptions as lorahub's errors, naming the object; lorahub's own pass through."""
        from botocore import exceptions as aws

        try:
            yield
        except aws.NoCredentialsError:
            raise errors.BlobStoreAuthError(f"no AWS credentials found for {self.where.url}") from None
        except (aws.EndpointConnectionError, aws.ConnectionClosedError, aws.ConnectTimeoutError) as error:
            raise errors.BlobStoreUnreachableError(f"{self._url(key)}: {error}") from None
        except aws.ClientError as error:
            code, message = _code(error), error.response.get("Error", {}).get("Message", "")
            if code in _AUTH_CODES:
                raise errors.BlobStoreAuthError(f"{self._url(key)}: {code} {message}".strip()) from None
            if code == "NoSuchBucket":
                raise errors.BlobStoreError(
                    f"the bucket {self.where.bucket} does not exist",
                    hint="Create it (aws s3 mb s3://BUCKET), or fix blobs_url / LORAHUB_BLOBS_URL.",
                ) from None
            raise errors.BlobStoreError(f"{self._url(key)}: {code} {message}".strip()) from None
        except aws.BotoCoreError as error:
            raise errors.BlobStoreError(f"{self._url(key)}: {error}") from None


class Upload:
    """One object's upload, fed as its bytes are read: parts of :attr:`S3BlobStore.part_bytes` go up in background
    threads as they fill, at most :attr:`S3BlobStore.threads` at a time (a ``write`` waits for a free one, so memory
    stays that many parts whatever the size); an object no bigger than one part goes up in one request at
    ``finish``. Nothing is sent when the bucket already holds the key (``stored``: its size, looked up at the
    start)."""

    PARTS_PER_SIZE: Final = MAX_PARTS // 10
    """Every this many parts, parts grow by one :attr:`S3BlobStore.part_bytes`: the size is unknown in advance, and
    S3 takes at most 10,000 parts (with 8 MiB parts, that reaches 430 GiB)."""

    def __init__(self, store: S3BlobStore, sha256: str) -> None:
        self._store = store
        self.sha256 = check_sha256(sha256)
        self.key = store.where.key(sha256)
        self.stored = store.head_size(self.key)
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._slots = threading.Semaphore(store.threads)
        self._parts: list[Future[dict[str, Any]]] = []
        self._failed: BaseException | None = None

    def write(self, chunk: bytes | bytearray | memoryview) -> None:
        if self.stored is not None:
            return
        self._buffer += chunk
        while len(self._buffer) >= (size := self._part_size()):
            with memoryview(self._buffer) as view:
                part = bytes(view[:size])  # one copy (a slice of the bytearray would be a second)
            del self._buffer[:size]
            self._send(part)

    def finish(self, size: int) -> bool:
        """Complete the upload, conditionally; returns whether the bucket held the object already. Raises
        ``_Conditional`` when another conditional write of the key was in flight (409): upload it again."""
        if self.stored is not None:
            return self._store.existing(self.key, self.stored, size)
        try:
            if self._upload_id is None:
                self._store.put_whole(self.key, bytes(self._buffer), self.sha256)
            else:
                if self._buffer:
                    self._send(bytes(self._buffer))
                parts = [part.result() for part in self._parts]
                self._store.finish_parts(self.key, self._upload_id, parts)
                self._upload_id = None
        except _Conditional as refused:
            self.abort()
            if refused.conflict:
                raise
            return self._store.existing(self.key, self._store.head_size(self.key), size)
        except BaseException:
            self.abort()
            raise
        self._close()
        return False

    def abort(self) -> None:
        """Stop sending and drop what was sent; safe to call more than once."""
        self._close()
        if self._upload_id is not None:
            self._store.abort_parts(self.key, self._upload_id)
            self._upload_id = None

    def _part_size(self) -> int:
        return self._store.part_bytes * (1 + len(self._parts) // self.PARTS_PER_SIZE)

    def _send(self, data: bytes) -> None:
        if self._failed is not None:
            raise self._failed
        if self._upload_id is None:
            self._upload_id = self._store.start_parts(self.key)
            self._pool = ThreadPoolExecutor(max_workers=self._store.threads)
        assert self._pool is not None
        self._slots.acquire()
        number = len(self._parts) + 1
        part = self._pool.submit(self._store.put_part, self.key, self._upload_id, number, data)
        part.add_done_callback(self._sent)
        self._parts.append(part)

    def _sent(self, part: Future[dict[str, Any]]) -> None:
        self._slots.release()
        if not part.cancelled() and part.exception() is not None:
            self._failed = part.exception()

    def _close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class S3BlobWriter(CommitOrAbort):
    """A blob on its way into the bucket; see :meth:`S3BlobStore.writer`."""

    def __init__(
        self,
        store: S3BlobStore,
        *,
        hashed_by_caller: bool = False,
        sha256: str | None = None,
        source: Path | None = None,
    ) -> None:
        self._store = store
        self._hashed_by_caller = hashed_by_caller
        self._source = source
        self._upload = Upload(store, sha256) if sha256 is not None else None
        # without the digest, the bytes wait in the cache until they are hashed; with it, they go straight up
        self._spool: BlobWriter | None = None if self._upload else store.cache.writer(hashed_by_caller=hashed_by_caller)
        self._sha = None if hashed_by_caller or self._spool else hashlib.sha256()
        self._size = 0
        self._result: BlobInfo | None = None

    def write(self, chunk: bytes | bytearray | memoryview) -> None:
        self._size += len(chunk)
        if self._spool is not None:
            self._spool.write(chunk)
            return
        assert self._upload is not None
        if self._sha is not None:
            self._sha.update(chunk)
        self._upload.write(chunk)

    def commit(self, expected_sha256: str | None = None) -> BlobInfo:
        """Upload the blob unless the bucket holds it (or finish uploading it); ``existed`` says which. Call it
        once, inside the ``with``. Bytes that are not what the digest given in advance names are refused."""
        if self._result is not None:
            return self._result
        if self._spool is not None:
            local = self._spool.commit(expected_sha256)
            assert local.path is not None
            existed = self._store.upload(local.path, local.sha256, local.size)
            self._result = BlobInfo(sha256=local.sha256, size=local.size, path=None, existed=existed)
            return self._result
        assert self._upload is not None
        actual = self._actual(expected_sha256)
        if actual != self._upload.sha256:
            self.abort()
            raise _changed(self._upload.sha256, actual)
        try:
            existed = self._upload.finish(self._size)
        except _Conditional:  # another machine's conditional write of the key was in flight: send it again
            existed = self._send_again()
        self._result = BlobInfo(sha256=actual, size=self._size, path=None, existed=existed)
        return self._result

    def _actual(self, expected_sha256: str | None) -> str:
        """The digest of the bytes written: hashed here, or the caller's."""
        if self._sha is not None:
            actual = self._sha.hexdigest()
            if expected_sha256 is not None and expected_sha256.lower() != actual:
                self.abort()
                raise errors.HashMismatchError(
                    f"the bytes hash to sha256 {actual}, not the expected {expected_sha256.lower()}",
                    hint="The source changed or was damaged in transit; nothing was stored.",
                )
            return actual
        if expected_sha256 is None:
            self.abort()
            raise ValueError("a writer whose caller hashes the bytes needs expected_sha256 at commit")
        return check_sha256(expected_sha256.lower())

    def _send_again(self) -> bool:
        assert self._upload is not None
        if self._source is None:
            raise errors.BlobStoreError(
                f"{self._store.where.url}: another upload of {self._upload.sha256} was in flight",
                hint="Add the file again: the other upload will have finished.",
            )
        return self._store.upload(self._source, self._upload.sha256, self._size, check=True)

    def abort(self) -> None:
        if self._spool is not None:
            self._spool.abort()
        if self._upload is not None:
            self._upload.abort()


def _changed(announced: str, actual: str) -> errors.HashMismatchError:
    return errors.HashMismatchError(
        f"the bytes hash to sha256 {actual}, not the {announced} they had when first read: the file changed meanwhile",
        hint="Nothing was stored; add it again once nothing is writing to it.",
    )


class _Missing(Exception):
    """An object that is not there (read as ``None`` or ``False`` by the public methods)."""


class _Conditional(Exception):
    def __init__(self, *, conflict: bool) -> None:
        super().__init__("conditional write refused")
        self.conflict = conflict


def _code(error: BaseException) -> str:
    response = getattr(error, "response", None)
    if not isinstance(response, dict):
        return ""
    return str(response.get("Error", {}).get("Code", ""))
