"""The OCI distribution API, as much of it as pushing and pulling one model needs, on httpx.

Why not a client library: oras-py (the ``oras`` package) was tried first. It retries a refused connection five times
with sleeps of 3 to 83 s (131 s measured before "connection refused" reaches the user), reads a file whole into
memory for a monolithic upload, re-serialises manifests (so the pushed digest is not the one computed) and has no
referrers API. The protocol parts needed here are small; written on httpx (already a dependency) they fail fast,
stream, and keep the bytes that are hashed the bytes that are sent.

Authentication follows the registry's challenge: ``Basic`` with the user's credentials, or ``Bearer`` with a token
from the realm it names (anonymous when there are no credentials). Blob reads are hashed as they stream and refused
on a size or digest mismatch, so nothing unverified leaves this module.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO

import httpx

from lorahub import errors
from lorahub.oci.credentials import Credentials, credentials_for
from lorahub.oci.reference import OciReference

MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
"""The distribution spec lets registries refuse manifests over 4 MiB; nothing larger is read."""
CHUNK = 1024 * 1024
TIMEOUT = httpx.Timeout(30.0, read=300.0, write=300.0)
CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True)
class Fetched:
    """A manifest as the registry sent it: the exact bytes (their digest is its identity) and its media type."""

    data: bytes
    media_type: str
    digest: str

    def json(self) -> dict[str, Any]:
        try:
            value = json.loads(self.data)
        except ValueError:
            raise errors.ArtifactInvalidError(f"the manifest {self.digest} is not JSON") from None
        if not isinstance(value, dict):
            raise errors.ArtifactInvalidError(f"the manifest {self.digest} is not a JSON object")
        return value


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class RegistryClient:
    """One repository on one registry. Use as a context manager (it holds a connection pool)."""

    def __init__(self, reference: OciReference, *, insecure: bool = False, credentials: Credentials | None = None):
        if insecure and not reference.is_loopback:
            raise errors.InsecureRegistryError(f"--insecure (plain HTTP) refused for {reference.registry}")
        self.reference = reference
        scheme = "http" if insecure else "https"
        self._origin = f"{scheme}://{reference.registry}"
        self._repo_url = f"{self._origin}/v2/{reference.repository}"
        self._credentials = credentials or credentials_for(reference.registry)
        self._authorization: str | None = None
        self._http = httpx.Client(timeout=TIMEOUT, follow_redirects=True)

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    # --- blobs ------------------------------------------------------------------------------------------------

    def has_blob(self, digest: str) -> bool:
        response = self._send("HEAD", f"{self._repo_url}/blobs/{digest}")
        if response.status_code == 404:
            return False
        self._expect(response, 200, f"checking blob {digest}")
        return True

    def push_blob(self, digest: str, size: int, body: bytes | Callable[[], Iterable[bytes]]) -> bool:
        """Upload unless the registry has it; ``body`` is the bytes or a function giving a fresh chunk iterator
        (a file is streamed, never read whole). The registry checks the digest; True when bytes were sent."""
        if self.has_blob(digest):
            return False
        started = self._send("POST", f"{self._repo_url}/blobs/uploads/", headers={"Content-Length": "0"})
        self._expect(started, 202, "starting an upload")
        location = self._location(started)
        content = body if isinstance(body, bytes) else body()
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        put_url = str(httpx.URL(location).copy_merge_params({"digest": digest}))  # keep the registry's own state
        done = self._send("PUT", put_url, headers=headers, content=content)
        if done.status_code == 400 and "DIGEST_INVALID" in done.text:
            raise errors.HashMismatchError(
                f"the registry computed another digest than {digest} for the uploaded bytes",
                hint="The file changed after it was catalogued: `lorahub verify NAME@V` says how.",
            )
        self._expect(done, 201, f"uploading blob {digest}")
        return True

    def read_blob(self, digest: str, size: int, sink: BinaryIO | None = None) -> bytes:
        """Stream a blob into ``sink`` (or return it, for small ones), refusing more bytes than ``size`` and bytes
        whose digest is not ``digest``."""
        hasher, received, kept = hashlib.sha256(), 0, bytearray()
        with self._stream("GET", f"{self._repo_url}/blobs/{digest}") as response:
            if response.status_code == 404:
                raise errors.ArtifactNotFoundError(f"{self.reference.registry} has no blob {digest}")
            self._expect(response, 200, f"reading blob {digest}")
            for chunk in response.iter_bytes(CHUNK):
                received += len(chunk)
                if received > size:
                    raise errors.ArtifactInvalidError(f"blob {digest} is larger than the {size} bytes announced")
                hasher.update(chunk)
                if sink is None:
                    kept += chunk
                else:
                    sink.write(chunk)
        if received != size or "sha256:" + hasher.hexdigest() != digest:
            raise errors.ArtifactInvalidError(
                f"blob {digest}: received {received} bytes with digest sha256:{hasher.hexdigest()[:16]}…",
                hint="The registry sent other bytes than the manifest names: the artifact or the registry is damaged.",
            )
        return bytes(kept)

    # --- manifests --------------------------------------------------------------------------------------------

    def push_manifest(self, target: str, data: bytes, media_type: str = MANIFEST_MEDIA_TYPE) -> httpx.Headers:
        response = self._send(
            "PUT", f"{self._repo_url}/manifests/{target}", headers={"Content-Type": media_type}, content=data
        )
        self._expect(response, 201, f"pushing manifest {target}")
        return response.headers

    def fetch_manifest(self, target: str) -> Fetched:
        accept = f"{MANIFEST_MEDIA_TYPE}, {INDEX_MEDIA_TYPE}"
        with self._stream("GET", f"{self._repo_url}/manifests/{target}", headers={"Accept": accept}) as response:
            if response.status_code == 404:
                where = f"{self.reference.registry}/{self.reference.repository}"
                raise errors.ArtifactNotFoundError(f"{where} has no manifest {target}")
            self._expect(response, 200, f"reading manifest {target}")
            data = bytearray()
            for chunk in response.iter_bytes(CHUNK):
                data += chunk
                if len(data) > MAX_MANIFEST_BYTES:
                    raise errors.ArtifactInvalidError(f"manifest {target} is over {MAX_MANIFEST_BYTES} bytes")
            media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        digest = sha256_digest(bytes(data))
        if target.startswith("sha256:") and digest != target:
            raise errors.ArtifactInvalidError(f"asked for manifest {target}, the registry sent {digest}")
        return Fetched(bytes(data), media_type, digest)

    def referrers(self, digest: str) -> list[dict[str, Any]] | None:
        """The descriptors the referrers API lists for ``digest``; None where the registry has no such API."""
        response = self._send("GET", f"{self._repo_url}/referrers/{digest}", headers={"Accept": INDEX_MEDIA_TYPE})
        if response.status_code in (404, 405) and INDEX_MEDIA_TYPE not in response.headers.get("Content-Type", ""):
            return None
        self._expect(response, 200, f"listing referrers of {digest}")
        return _manifests_of(response.content, f"referrers of {digest}")

    # --- HTTP -------------------------------------------------------------------------------------------------

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """A request whose (small) answer is read whole."""
        with self._stream(method, url, **kwargs) as response:
            response.read()
        return response

    @contextmanager
    def _stream(self, method: str, url: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A request whose answer is streamed. A 401 is answered once with what its challenge asks for; a streamed
        upload body only ever follows a request that authenticated (an upload starts with a POST), so it is never
        needed twice."""
        response = self._open(method, url, kwargs)
        if response.status_code == 401:
            response.close()
            if not self._authenticate(response):
                raise errors.RegistryAuthError(f"{self.reference.registry} refused {method} {url}: no credentials fit")
            response = self._open(method, url, kwargs)
            if response.status_code == 401:
                response.close()
                raise errors.RegistryAuthError(f"{self.reference.registry} refused the credentials for {method} {url}")
        try:
            yield response
        finally:
            response.close()

    def _open(self, method: str, url: str, kwargs: dict[str, Any]) -> httpx.Response:
        headers = dict(kwargs.get("headers") or {})
        if self._authorization:
            headers["Authorization"] = self._authorization
        request = self._http.build_request(method, url, **{**kwargs, "headers": headers})
        try:
            return self._http.send(request, stream=True)
        except httpx.TransportError as error:
            raise self._unreachable(method, url, error) from None

    def _authenticate(self, response: httpx.Response) -> bool:
        """Set the Authorization header the challenge asks for; False when there is nothing (new) to offer."""
        scheme, _, params_text = response.headers.get("WWW-Authenticate", "").partition(" ")
        params = dict(CHALLENGE_PARAM.findall(params_text))
        if scheme.lower() == "basic" and self._credentials is not None and self._authorization is None:
            pair = f"{self._credentials.username}:{self._credentials.password}".encode()
            self._authorization = "Basic " + base64.b64encode(pair).decode("ascii")
            return True
        if scheme.lower() == "bearer" and "realm" in params:
            token = self._token(params)
            if token is not None and f"Bearer {token}" != self._authorization:
                self._authorization = f"Bearer {token}"
                return True
        return False

    def _token(self, params: dict[str, str]) -> str | None:
        """A token from the challenge's realm: with the user's credentials when there are some, else anonymous."""
        query = {k: v for k, v in params.items() if k in ("service", "scope")}
        query.setdefault("scope", f"repository:{self.reference.repository}:pull,push")
        auth = httpx.BasicAuth(self._credentials.username, self._credentials.password) if self._credentials else None
        try:
            response = self._http.get(params["realm"], params=query, auth=auth)
            answer = response.json() if response.status_code == 200 else None
        except (httpx.TransportError, ValueError) as error:
            raise errors.RegistryAuthError(f"the token service {params['realm']} failed: {error}") from None
        if not isinstance(answer, dict):
            raise errors.RegistryAuthError(f"the token service {params['realm']} answered {response.status_code}")
        token = answer.get("token") or answer.get("access_token")
        return str(token) if token else None

    def _location(self, response: httpx.Response) -> str:
        location = response.headers.get("Location")
        if not location:
            raise errors.RegistryError(f"{self.reference.registry} started an upload without a Location")
        return str(httpx.URL(self._origin).join(location))

    def _expect(self, response: httpx.Response, status: int, doing: str) -> None:
        if response.status_code != status:
            response.read()
            raise errors.RegistryError(
                f"{self.reference.registry}: {doing} failed: HTTP {response.status_code} {_registry_message(response)}"
            )

    def _unreachable(self, method: str, url: str, error: Exception) -> errors.RegistryError:
        text = str(error) or type(error).__name__
        if any(mark in text for mark in ("SSL", "TLS", "WRONG_VERSION_NUMBER")):
            hint = None
            if self.reference.is_loopback:
                hint = "A registry on this machine often speaks plain HTTP: add --insecure (allowed for loopback)."
            return errors.RegistryUnreachableError(f"TLS with {self.reference.registry} failed: {text}", hint=hint)
        if isinstance(error, httpx.ConnectError):
            return errors.RegistryUnreachableError(f"cannot reach the registry at {self._origin}: {text}")
        return errors.RegistryUnreachableError(f"{method} {url} failed: {text}")


def _registry_message(response: httpx.Response) -> str:
    """The distribution spec's ``errors`` list, when the body has one; else the start of the body."""
    try:
        body = response.json()
        messages = [f"{e.get('code', '')}: {e.get('message', '')}" for e in body.get("errors", [])]
        return "; ".join(messages) or response.text[:200]
    except (ValueError, AttributeError):
        return response.text[:200]


def _manifests_of(data: bytes, what: str) -> list[dict[str, Any]]:
    try:
        index = json.loads(data)
        manifests = index.get("manifests", [])
    except (ValueError, AttributeError):
        raise errors.ArtifactInvalidError(f"the {what} is not an OCI image index") from None
    if not isinstance(manifests, list) or not all(isinstance(m, dict) for m in manifests):
        raise errors.ArtifactInvalidError(f"the {what} lists something that is not a descriptor")
    return manifests


def file_chunks(path: str, chunk: int = CHUNK) -> Callable[[], Iterator[bytes]]:
    """A body for :meth:`RegistryClient.push_blob` that streams a file."""

    def chunks() -> Iterator[bytes]:
        with open(path, "rb") as handle:
            while block := handle.read(chunk):
                yield block

    return chunks
