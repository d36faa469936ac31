"""Download one adapter over HTTP(S) for ``lorahub add URL``, safely and resumably.

Adapters are large (hundreds of MB to GB) and come from hosts we do not control, so the download trusts nothing it
is told: the scheme of every redirect hop is checked (no silent downgrade to plain HTTP), the size is capped before
and while the body arrives, the file name is sanitised (a server must not choose where a file lands, nor hide it),
and the file only appears under its final name once every byte arrived and, when the caller knows it, the SHA-256
matched. Until then the bytes live in ``dest_dir/.partial-<sha256 of the URL>`` with the server's validator in
``.partial-….json`` beside it, so an interrupted download resumes with ``Range``/``If-Range`` instead of starting
over, both within one call (a couple of automatic retries) and across calls (run the same command again).
"""

from __future__ import annotations

import contextlib
import email.message
import hashlib
import json
import os
import re
import time
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import unquote, urljoin, urlsplit

import httpx

from lorahub import errors
from lorahub.files.atomic import atomic_write, fsync_directory
from lorahub.version import __version__

ProgressCallback = Callable[[int, int | None], None]
"""Called with (bytes of the file so far, expected total or None) after every chunk."""

RETRY_DELAYS: tuple[float, ...] = (0.5, 2.0)
"""Pause before each automatic resume within one call; its length is the number of retries (tests set zeros)."""

DEFAULT_MAX_BYTES = 20 * 2**30
"""20 GiB: above the largest real adapters, below what a hostile server could fill a disk with."""

SUFFIX = ".safetensors"
_HASH_CHUNK = 1 << 20
_MAX_NAME_BYTES = 255
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_WINDOWS_RESERVED = re.compile(r'[<>:"|?*]')
_RETRY_LATER_STATUSES = frozenset({408, 429})
_IDENTITY_ENCODINGS = frozenset({"", "identity", "none"})
_RESUME_HINT = "Run the same command again to resume: the bytes received so far are kept."


@dataclass(frozen=True)
class Downloaded:
    """The result of :func:`download`: where the file landed and what it is."""

    path: Path
    url: str
    """The final URL, after redirects."""
    size: int
    sha256: str
    resumed: bool
    """True when bytes from an earlier attempt (this call's or a previous one's) were kept rather than fetched again."""


@dataclass(frozen=True)
class _Options:
    allow_http: bool
    max_bytes: int
    max_redirects: int
    on_progress: ProgressCallback | None


@dataclass(frozen=True)
class _Fetched:
    url: str
    name: str
    size: int
    sha256: str
    resumed: bool


@dataclass(frozen=True)
class _Partial:
    """The two files that hold an unfinished download; both are named from the URL so a rerun finds them."""

    data: Path
    meta: Path

    @classmethod
    def for_url(cls, dest_dir: Path, url: str) -> _Partial:
        stem = f".partial-{hashlib.sha256(url.encode('utf-8')).hexdigest()}"
        return cls(dest_dir / stem, dest_dir / f"{stem}.json")

    def size(self) -> int:
        try:
            return self.data.stat().st_size
        except FileNotFoundError:
            return 0

    def discard(self) -> None:
        self.data.unlink(missing_ok=True)
        self.meta.unlink(missing_ok=True)


class _StartOver(Exception):
    """The server cannot continue the partial (416, or a 206 for other bytes): drop it and fetch from zero."""


class _IncompleteBodyError(Exception):
    """The body ended before the promised length; as transient as a dropped connection."""


def download(
    url: str,
    dest_dir: Path,
    *,
    expected_sha256: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    allow_http: bool = False,
    max_redirects: int = 5,
    timeout: float = 60.0,
    client: httpx.Client | None = None,
    on_progress: ProgressCallback | None = None,
) -> Downloaded:
    """Download the ``.safetensors`` file at ``url`` into ``dest_dir`` and return where it landed.

    ``timeout`` applies to the client this function creates; a caller-supplied ``client`` keeps its own settings
    (but redirects are always followed here, hop by hop, so that every hop's scheme is checked).
    Raises :class:`~lorahub.errors.DownloadError` (refused URL, redirect, size or name; HTTP error; connection
    lost after the automatic retries, with the partial kept for a rerun) or
    :class:`~lorahub.errors.HashMismatchError` (the partial is deleted: those bytes are not the file asked for).
    """
    check_url_scheme(url, allow_http=allow_http)
    expected = normalise_sha256(expected_sha256) if expected_sha256 is not None else None
    dest_dir.mkdir(parents=True, exist_ok=True)
    partial = _Partial.for_url(dest_dir, url)
    options = _Options(allow_http, max_bytes, max_redirects, on_progress)
    with _client_scope(client, timeout) as http:
        fetched = _fetch_with_retries(http, url, partial, options)
    if expected is not None and fetched.sha256 != expected:
        partial.discard()
        raise errors.HashMismatchError(
            f"{url} has SHA-256 {fetched.sha256}, not the expected {expected}",
            hint="The file changed on the server or was tampered with in transit; the download was deleted. "
            "Check the expected hash with the file's publisher.",
        )
    path = _place(partial, dest_dir / fetched.name, fetched.sha256)
    return Downloaded(path=path, url=fetched.url, size=fetched.size, sha256=fetched.sha256, resumed=fetched.resumed)


# --- checks on what the caller and the server say -------------------------------------------------------------


def check_url_scheme(url: str, *, allow_http: bool) -> None:
    """Refuse anything but https (and http when allowed): other schemes (file:, ftp:) are not downloads, and plain
    http lets anyone on the path alter the file."""
    scheme = urlsplit(url).scheme.lower()
    if not _scheme_allowed(scheme, allow_http=allow_http):
        hint = "Give an https:// URL."
        if scheme == "http":
            hint = "Plain http can be altered in transit; use https://, or pass --allow-http if you trust the network."
        raise errors.DownloadError(f"refusing to download {url!r}: scheme {scheme or '(none)'!r}", hint=hint)
    if not urlsplit(url).hostname:
        raise errors.DownloadError(f"refusing to download {url!r}: it names no host", hint="Give a full URL.")


def check_redirect(source: str, target: str, *, allow_http: bool) -> None:
    """Refuse a hop to a scheme the caller could not have asked for, in particular https → http (a downgrade that
    exposes the file to tampering) unless plain http was allowed."""
    scheme = urlsplit(target).scheme.lower()
    if not _scheme_allowed(scheme, allow_http=allow_http) or not urlsplit(target).hostname:
        raise errors.DownloadError(
            f"refusing the redirect from {source} to {target}",
            hint="The server redirected to an insecure or unsupported URL; pass --allow-http only if you trust it.",
        )


def _scheme_allowed(scheme: str, *, allow_http: bool) -> bool:
    return scheme == "https" or (allow_http and scheme == "http")


def normalise_sha256(value: str) -> str:
    """Lower-case hex without a ``sha256:`` prefix, so hashes copied from any site compare equal."""
    text = value.strip().lower().removeprefix("sha256:").strip()
    if not _SHA256_HEX.match(text):
        raise errors.DownloadError(
            f"{value!r} is not a SHA-256 hash", hint="Give 64 hexadecimal digits, optionally prefixed with 'sha256:'."
        )
    return text


def sanitise_file_name(raw: str) -> str:
    """The last path segment of ``raw``, made harmless: no separators (the server must not choose the folder), no
    leading dots (no hidden files), no control or Windows-reserved characters, at most 255 bytes. May be empty."""
    name = unicodedata.normalize("NFC", raw).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = _WINDOWS_RESERVED.sub("_", name).strip().lstrip(".").rstrip(". ")
    while len(name.encode("utf-8")) > _MAX_NAME_BYTES:
        stem, dot, suffix = name.rpartition(".")
        name = f"{stem[:-1]}{dot}{suffix}" if dot and stem else name[:-1]
    return name


def file_name(content_disposition: str | None, url: str) -> str:
    """The name to save under: the server's ``Content-Disposition`` filename when it survives sanitising, else the
    URL's last path segment. Refused unless it ends in ``.safetensors``: lorahub only catalogs safetensors."""
    name = sanitise_file_name(_disposition_filename(content_disposition) or "")
    if not name:
        name = sanitise_file_name(unquote(urlsplit(url).path))
    if not name.lower().endswith(SUFFIX) or len(name) == len(SUFFIX):
        raise errors.DownloadError(
            f"refusing to download {url}: {name or '(no file name)'!r} is not a .safetensors file",
            hint="lorahub only catalogs .safetensors files, which cannot run code when loaded. "
            "Ask the publisher for a .safetensors version.",
        )
    return name


def _disposition_filename(value: str | None) -> str | None:
    """The filename of a Content-Disposition header, RFC 2231/5987 ``filename*`` included (via the email parser)."""
    if not value:
        return None
    message = email.message.Message()
    message["Content-Disposition"] = value
    try:
        return message.get_filename()
    except (LookupError, ValueError):
        return None


# --- the retry loop --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _client_scope(client: httpx.Client | None, timeout: float) -> Iterator[httpx.Client]:
    """Use the caller's client as is, or a private one that this function also closes."""
    if client is not None:
        yield client
        return
    headers = {"User-Agent": f"lorahub/{__version__}"}
    with httpx.Client(follow_redirects=False, timeout=timeout, headers=headers) as own:
        yield own


def _fetch_with_retries(http: httpx.Client, url: str, partial: _Partial, options: _Options) -> _Fetched:
    """Resume automatically after transient failures, and start over once when the server cannot resume; a
    download that still fails keeps its partial so that the next run continues where this one stopped."""
    failures = 0
    started_over = False
    while True:
        try:
            fetched = _fetch_once(http, url, partial, options)
        except _StartOver:
            if started_over:
                raise errors.DownloadError(
                    f"{url}: the server refused to resume twice", hint="Run the command again later."
                ) from None
            started_over = True
            partial.discard()
            continue
        except (httpx.TransportError, _IncompleteBodyError) as exc:
            if failures >= len(RETRY_DELAYS):
                raise _transient_error(url, partial, exc) from exc
            time.sleep(RETRY_DELAYS[failures])
            failures += 1
            continue
        return fetched


def _transient_error(url: str, partial: _Partial, exc: Exception) -> errors.DownloadError:
    kept = partial.size()
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return errors.DownloadError(
        f"downloading {url} failed after {len(RETRY_DELAYS)} automatic retries ({detail}); {kept:,} bytes kept",
        hint=_RESUME_HINT,
    )


# --- one attempt -----------------------------------------------------------------------------------------------


def _fetch_once(http: httpx.Client, url: str, partial: _Partial, options: _Options) -> _Fetched:
    """One request (plus redirects): continue the partial if the server agrees, else write it from zero."""
    existing = partial.size()
    headers = _request_headers(existing, _load_validator(partial, url))
    response, final_url = _open(http, url, headers, options)
    try:
        offset = _start_offset(response, existing, final_url, partial)
        total = _expected_total(response, offset)
        _refuse_oversize(total, options.max_bytes, final_url, partial)
        _refuse_encoded(response, final_url)
        name = _checked_name(response, final_url, partial)
        if offset == 0:
            _save_validator(partial, url, response)
        digest, size = _stream(response, partial, offset, total, options)
    finally:
        response.close()
    return _Fetched(final_url, name, size, digest, resumed=offset > 0)


def _request_headers(existing: int, validator: str | None) -> dict[str, str]:
    """Ask for identity bytes (ranges count encoded bytes, and the hash must cover the file itself), and only for
    the missing tail when a partial exists; ``If-Range`` makes a server whose file changed send all of it instead."""
    headers = {"Accept-Encoding": "identity"}
    if existing > 0:
        headers["Range"] = f"bytes={existing}-"
        if validator:
            headers["If-Range"] = validator
    return headers


def _open(http: httpx.Client, url: str, headers: dict[str, str], options: _Options) -> tuple[httpx.Response, str]:
    """Send the request and follow redirects by hand, so each hop's scheme is checked and counted."""
    current = url
    for _ in range(options.max_redirects + 1):
        request = http.build_request("GET", current, headers=headers)
        if _origin(current) == _origin(url):
            response = http.send(request, stream=True, follow_redirects=False)
        else:  # credentials for one host must not leak to another
            request.headers.pop("Authorization", None)
            response = http.send(request, stream=True, follow_redirects=False, auth=None)
        if not response.is_redirect:
            return response, current
        target = urljoin(current, response.headers["Location"])
        response.close()
        check_redirect(current, target, allow_http=options.allow_http)
        current = target.split("#", 1)[0]
    raise errors.DownloadError(
        f"{url}: more than {options.max_redirects} redirects", hint="The server may be misconfigured (a redirect loop)."
    )


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port


def _start_offset(response: httpx.Response, existing: int, url: str, partial: _Partial) -> int:
    """Where this body starts in the file: 0 for a full 200 (the partial is dropped), ``existing`` for a 206 that
    continues it; anything else is an error or a reason to start over."""
    status = response.status_code
    if status == 200:
        return 0
    if status == 206:
        match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
        if match is None or int(match.group(1)) != existing:
            raise _StartOver
        return existing
    if status == 416 and existing > 0:
        raise _StartOver
    raise _http_error(status, url, partial)


def _http_error(status: int, url: str, partial: _Partial) -> errors.DownloadError:
    """A 4xx/5xx. Server-side and rate-limit failures keep the partial (a later run can resume); other client
    errors drop it, since the same request will not succeed later."""
    if status >= 500 or status in _RETRY_LATER_STATUSES:
        hint = "The server failed or is busy: wait a little, then run the same command again to resume."
    else:
        partial.discard()
        hint = {
            401: "The file needs authentication; download it in a browser and add the local file.",
            403: "The server refused access; the file may be private or gated. Download it yourself and add the file.",
            404: "Check the URL; the file may have been moved or deleted.",
        }.get(status, "Check the URL.")
    reason = httpx.codes.get_reason_phrase(status) or "unexpected status"
    return errors.DownloadError(f"{url}: HTTP {status} {reason}", hint=hint)


def _expected_total(response: httpx.Response, offset: int) -> int | None:
    """The whole file's size if the server says: Content-Range's total for a 206, else offset + Content-Length."""
    if response.status_code == 206:
        match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
        if match is not None and match.group(3) != "*":
            return int(match.group(3))
    length = response.headers.get("Content-Length", "")
    return offset + int(length) if length.strip().isdigit() else None


def _refuse_oversize(total: int | None, max_bytes: int, url: str, partial: _Partial) -> None:
    """Refuse before the first body byte when the server announces more than the cap."""
    if total is not None and total > max_bytes:
        partial.discard()
        raise _too_large(url, f"{total:,}", max_bytes)


def _too_large(url: str, size: str, max_bytes: int) -> errors.DownloadError:
    return errors.DownloadError(
        f"refusing to download {url}: {size} bytes exceed the {max_bytes:,}-byte limit",
        hint="Raise the limit (--max-size) if you expect a file this large.",
    )


def _refuse_encoded(response: httpx.Response, url: str) -> None:
    """A compressed body would make the saved bytes, the hash and any resume offset disagree with the file."""
    encoding = response.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in _IDENTITY_ENCODINGS:
        raise errors.DownloadError(
            f"{url}: the server sent a {encoding!r}-encoded body although lorahub asked for the plain bytes",
            hint="Download the file another way and add the local file.",
        )


def _checked_name(response: httpx.Response, url: str, partial: _Partial) -> str:
    try:
        return file_name(response.headers.get("Content-Disposition"), url)
    except errors.DownloadError:
        partial.discard()
        raise


# --- the partial and its validator -----------------------------------------------------------------------------


def _load_validator(partial: _Partial, url: str) -> str | None:
    """The ETag or Last-Modified saved when the partial was started; ignored when unreadable or for another URL."""
    try:
        document = json.loads(partial.meta.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict) or document.get("url") != url:
        return None
    validator = document.get("validator")
    return validator if isinstance(validator, str) and validator else None


def _save_validator(partial: _Partial, url: str, response: httpx.Response) -> None:
    """Remember the validator of a fresh download so a resume cannot splice two versions of the file. Weak ETags
    are not allowed in If-Range, so they fall back to Last-Modified."""
    etag = response.headers.get("ETag", "").strip()
    validator = etag if etag and not etag.startswith("W/") else response.headers.get("Last-Modified", "").strip()
    if not validator:
        partial.meta.unlink(missing_ok=True)
        return
    document = json.dumps({"url": url, "validator": validator}).encode("utf-8")
    atomic_write(partial.meta, [document])


def _stream(
    response: httpx.Response, partial: _Partial, offset: int, total: int | None, options: _Options
) -> tuple[str, int]:
    """Append the body to the partial (truncated first for a full response) while hashing and counting; returns the
    SHA-256 and size of the whole file, existing bytes included."""
    hasher = hashlib.sha256()
    mode = "r+b" if offset > 0 else "wb"
    with partial.data.open(mode) as out:
        if offset > 0:
            _hash_prefix(out, offset, hasher.update)
        size = offset
        for chunk in response.iter_raw():
            size += len(chunk)
            if size > options.max_bytes:
                out.close()
                partial.discard()
                raise _too_large(str(response.url), f"more than {options.max_bytes:,}", options.max_bytes)
            out.write(chunk)
            hasher.update(chunk)
            if options.on_progress is not None:
                options.on_progress(size, total)
        out.flush()
        os.fsync(out.fileno())
    if total is not None and size < total:
        raise _IncompleteBodyError(f"{size:,} of {total:,} bytes")
    return hasher.hexdigest(), size


def _hash_prefix(out: IO[bytes], offset: int, update: Callable[[bytes], object]) -> None:
    """Re-hash the bytes kept from before, since the digest must cover the whole file; leaves ``out`` at the end
    of them (and drops anything past ``offset``, which no server agreed to)."""
    out.seek(0)
    remaining = offset
    while remaining > 0:
        block = out.read(min(_HASH_CHUNK, remaining))
        if not block:
            raise _StartOver
        update(block)
        remaining -= len(block)
    out.truncate(offset)


def _place(partial: _Partial, target: Path, sha256: str) -> Path:
    """Rename the finished partial into place atomically. An existing file with other content is not replaced:
    the new one gets a numbered name instead, so a download never destroys a file the user had."""
    target = _free_name(target, sha256)
    os.replace(partial.data, target)
    partial.meta.unlink(missing_ok=True)
    fsync_directory(target.parent)
    return target


def _free_name(target: Path, sha256: str) -> Path:
    candidate = target
    number = 0
    while candidate.exists() and not _same_content(candidate, sha256):
        number += 1
        candidate = target.with_name(f"{target.name[: -len(SUFFIX)]}-{number}{SUFFIX}")
    return candidate


def _same_content(path: Path, sha256: str) -> bool:
    if not path.is_file():
        return False
    hasher = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(_HASH_CHUNK):
            hasher.update(block)
    return hasher.hexdigest() == sha256
