"""`lorahub.sdk.download` against a real HTTP server on 127.0.0.1: schemes, redirects, size caps, resume, names."""

from __future__ import annotations

import hashlib
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import cast

import httpx
import pytest

import lorahub
from lorahub import errors
from lorahub.sdk import download as dl
from lorahub.sdk.download import check_redirect, download, file_name, sanitise_file_name

SIZE = 96 * 1024


def make_body(size: int = SIZE, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


@dataclass
class Served:
    """One file the server offers."""

    body: bytes
    etag: str | None = '"v1"'
    disposition: str | None = None
    send_length: bool = True
    ignore_range: bool = False
    status: int = 200


@dataclass
class State:
    """What the server serves and how it misbehaves; the handler reads it, the tests change it."""

    files: dict[str, Served] = field(default_factory=dict)
    redirects: dict[str, str] = field(default_factory=dict)
    drop_after: int | None = None
    """Close the connection after this many body bytes of a response, while ``drops_left`` > 0."""
    drops_left: int = 0
    log: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one response per connection; a body without Content-Length ends at close

    @property
    def state(self) -> State:
        return cast("StateServer", self.server).state

    def log_message(self, format: str, *args: object) -> None:
        """Keep test output quiet."""

    def do_GET(self) -> None:
        with self.state.lock:
            self.state.log.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
        if self.path in self.state.redirects:
            self.send_response(302)
            self.send_header("Location", self.state.redirects[self.path])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        served = self.state.files.get(self.path)
        if served is None or served.status != 200:
            status = 404 if served is None else served.status
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._serve(served)

    def _serve(self, served: Served) -> None:
        start = self._range_start(served)
        body = served.body
        if start is not None and start >= len(body):
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(body)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if start is None:
            self.send_response(200)
            start = 0
        else:
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        if served.send_length:
            self.send_header("Content-Length", str(len(body) - start))
        if served.etag:
            self.send_header("ETag", served.etag)
        if served.disposition:
            self.send_header("Content-Disposition", served.disposition)
        self.end_headers()
        self._write(body[start:])

    def _range_start(self, served: Served) -> int | None:
        header = self.headers.get("Range")
        if served.ignore_range or not header or not header.startswith("bytes=") or not header.endswith("-"):
            return None
        if_range = self.headers.get("If-Range")
        if if_range is not None and if_range != served.etag:
            return None
        return int(header.removeprefix("bytes=").removesuffix("-"))

    def _write(self, data: bytes) -> None:
        with self.state.lock:
            drop = self.state.drops_left > 0 and self.state.drop_after is not None
            if drop:
                self.state.drops_left -= 1
        limit = cast(int, self.state.drop_after) if drop else len(data)
        for begin in range(0, min(limit, len(data)), 8192):
            self.wfile.write(data[begin : min(begin + 8192, limit)])
        self.wfile.flush()
        if drop:
            self.close_connection = True


class StateServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: State) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.state = state

    def handle_error(self, request: object, client_address: object) -> None:
        """The client hanging up early (a refused body) is expected here; keep stderr quiet."""


@dataclass
class Server:
    state: State
    base: str

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    def serve(self, path: str, served: Served) -> str:
        self.state.files[path] = served
        return self.url(path)

    def ranges(self) -> list[str | None]:
        return [headers.get("range") for _, headers in self.state.log]


@pytest.fixture(autouse=True)
def _fast_and_local(monkeypatch: pytest.MonkeyPatch) -> None:
    """No pauses between automatic retries, and no proxy between the client and 127.0.0.1."""
    monkeypatch.setattr(dl, "RETRY_DELAYS", (0.0, 0.0))
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server() -> Iterator[Server]:
    state = State()
    httpd = StateServer(state)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    host, port = httpd.server_address[:2]
    try:
        yield Server(state, f"http://{host!s}:{port}")
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    return tmp_path / "downloads"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def partial_of(dest: Path, url: str) -> Path:
    return dest / f".partial-{sha(url.encode())}"


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# --- plain downloads -------------------------------------------------------------------------------------------


def test_plain_download_hashes_and_places_the_file(server: Server, dest: Path) -> None:
    body = make_body()
    url = server.serve("/files/model.safetensors", Served(body))
    progress: list[tuple[int, int | None]] = []
    result = download(
        url,
        dest,
        allow_http=True,
        expected_sha256="SHA256:" + sha(body).upper(),
        on_progress=lambda done, total: progress.append((done, total)),
    )
    assert result == dl.Downloaded(dest / "model.safetensors", url, len(body), sha(body), resumed=False)
    assert result.path.read_bytes() == body
    assert listing(dest) == ["model.safetensors"]  # neither the partial nor its validator is left
    assert progress[-1] == (len(body), len(body))
    assert server.state.log[0][1]["user-agent"] == f"lorahub/{lorahub.__version__}"
    assert server.ranges() == [None]


def test_hash_mismatch_deletes_everything(server: Server, dest: Path) -> None:
    url = server.serve("/model.safetensors", Served(make_body()))
    with pytest.raises(errors.HashMismatchError) as caught:
        download(url, dest, allow_http=True, expected_sha256="0" * 64)
    assert caught.value.code == "hash-mismatch"
    assert listing(dest) == []


def test_malformed_expected_hash_is_refused_before_any_request(server: Server, dest: Path) -> None:
    url = server.serve("/model.safetensors", Served(make_body()))
    with pytest.raises(errors.DownloadError, match="SHA-256"):
        download(url, dest, allow_http=True, expected_sha256="abc")
    assert server.state.log == []


def test_caller_supplied_client_is_used(server: Server, dest: Path) -> None:
    body = make_body(1000)
    url = server.serve("/model.safetensors", Served(body))
    with httpx.Client(headers={"X-Test": "mine"}, trust_env=False) as client:
        result = download(url, dest, allow_http=True, client=client)
    assert result.path.read_bytes() == body
    assert server.state.log[0][1]["x-test"] == "mine"


def test_existing_different_file_is_not_overwritten(server: Server, dest: Path) -> None:
    body = make_body(1000)
    dest.mkdir()
    (dest / "model.safetensors").write_bytes(b"the user's own file")
    url = server.serve("/model.safetensors", Served(body))
    result = download(url, dest, allow_http=True)
    assert result.path == dest / "model-1.safetensors"
    assert (dest / "model.safetensors").read_bytes() == b"the user's own file"
    again = download(url, dest, allow_http=True)  # the same content lands on the same name
    assert again.path == dest / "model-1.safetensors"
    assert listing(dest) == ["model-1.safetensors", "model.safetensors"]


# --- schemes and redirects -------------------------------------------------------------------------------------


def test_http_is_refused_unless_allowed(server: Server, dest: Path) -> None:
    body = make_body(1000)
    url = server.serve("/model.safetensors", Served(body))
    with pytest.raises(errors.DownloadError) as caught:
        download(url, dest)
    assert caught.value.code == "download-failed"
    assert "http" in (caught.value.hint or "")
    assert server.state.log == []  # refused before connecting
    assert download(url, dest, allow_http=True).path.read_bytes() == body


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/x.safetensors", "file:///etc/x.safetensors", "x.safetensors"])
def test_other_schemes_are_refused_even_with_allow_http(url: str, dest: Path) -> None:
    with pytest.raises(errors.DownloadError, match="scheme"):
        download(url, dest, allow_http=True)


def test_redirect_scheme_check() -> None:
    secure, plain = "https://a.example/x.safetensors", "http://b.example/x.safetensors"
    with pytest.raises(errors.DownloadError, match="redirect"):
        check_redirect(secure, plain, allow_http=False)
    check_redirect(secure, plain, allow_http=True)
    check_redirect(secure, "https://c.example/y", allow_http=False)
    check_redirect(plain, secure, allow_http=True)
    with pytest.raises(errors.DownloadError):
        check_redirect(plain, "ftp://c.example/x.safetensors", allow_http=True)


def test_redirect_to_other_scheme_is_refused_on_the_wire(server: Server, dest: Path) -> None:
    server.state.redirects["/go"] = "ftp://127.0.0.1/model.safetensors"
    with pytest.raises(errors.DownloadError, match="redirect"):
        download(server.url("/go"), dest, allow_http=True)
    assert listing(dest) == []


def test_redirect_chain_is_limited(server: Server, dest: Path) -> None:
    body = make_body(1000)
    server.serve("/final/model.safetensors", Served(body))
    for hop in range(6):
        server.state.redirects[f"/r{hop}"] = f"/r{hop + 1}" if hop < 5 else server.url("/final/model.safetensors")
    with pytest.raises(errors.DownloadError, match="more than 5 redirects"):
        download(server.url("/r0"), dest, allow_http=True, max_redirects=5)
    assert len(server.state.log) == 6  # five hops followed, the sixth refused
    result = download(server.url("/r0"), dest, allow_http=True, max_redirects=6)
    assert result.url == server.url("/final/model.safetensors")
    assert result.path.read_bytes() == body


# --- size caps -------------------------------------------------------------------------------------------------


def test_content_length_over_the_cap_is_refused_before_the_body(server: Server, dest: Path) -> None:
    body = make_body()
    url = server.serve("/model.safetensors", Served(body))
    progress: list[tuple[int, int | None]] = []
    with pytest.raises(errors.DownloadError, match="limit"):
        download(
            url,
            dest,
            allow_http=True,
            max_bytes=len(body) - 1,
            on_progress=lambda done, total: progress.append((done, total)),
        )
    assert progress == []
    assert listing(dest) == []


def test_body_over_the_cap_without_content_length_is_stopped(server: Server, dest: Path) -> None:
    body = make_body()
    url = server.serve("/model.safetensors", Served(body, send_length=False))
    progress: list[tuple[int, int | None]] = []
    with pytest.raises(errors.DownloadError, match="limit"):
        download(
            url,
            dest,
            allow_http=True,
            max_bytes=len(body) // 2,
            on_progress=lambda done, total: progress.append((done, total)),
        )
    assert all(size <= len(body) // 2 and total is None for size, total in progress)  # no byte past the cap
    assert listing(dest) == []


# --- resume ----------------------------------------------------------------------------------------------------


def test_dropped_connection_resumes_automatically(server: Server, dest: Path) -> None:
    body = make_body()
    url = server.serve("/model.safetensors", Served(body))
    server.state.drop_after, server.state.drops_left = len(body) // 2, 1
    result = download(url, dest, allow_http=True, expected_sha256=sha(body))
    assert result.resumed
    assert result.path.read_bytes() == body
    assert server.ranges() == [None, f"bytes={len(body) // 2}-"]
    assert server.state.log[1][1]["if-range"] == '"v1"'
    assert listing(dest) == ["model.safetensors"]


def test_exhausted_retries_keep_the_partial_and_the_next_call_resumes(server: Server, dest: Path) -> None:
    body = make_body()
    url = server.serve("/model.safetensors", Served(body))
    quarter = len(body) // 4
    server.state.drop_after, server.state.drops_left = quarter, 3  # the first try and both automatic retries
    with pytest.raises(errors.DownloadError) as caught:
        download(url, dest, allow_http=True)
    assert "again" in (caught.value.hint or "")
    assert partial_of(dest, url).stat().st_size == 3 * quarter
    assert not (dest / "model.safetensors").exists()

    result = download(url, dest, allow_http=True, expected_sha256=sha(body))
    assert server.ranges()[-1] == f"bytes={3 * quarter}-"
    assert result.resumed
    assert result.path.read_bytes() == body
    assert listing(dest) == ["model.safetensors"]


def test_server_ignoring_range_restarts_from_zero(server: Server, dest: Path) -> None:
    body = make_body()
    url = server.serve("/model.safetensors", Served(body, ignore_range=True))
    server.state.drop_after, server.state.drops_left = len(body) // 2, 1
    result = download(url, dest, allow_http=True)
    assert server.ranges() == [None, f"bytes={len(body) // 2}-"]  # asked to resume, got a full 200
    assert not result.resumed
    assert result.path.read_bytes() == body
    assert result.sha256 == sha(body)


def test_changed_file_is_not_spliced_onto_the_old_partial(server: Server, dest: Path) -> None:
    old, new = make_body(seed=1), make_body(seed=2)
    url = server.serve("/model.safetensors", Served(old, etag='"v1"'))
    server.state.drop_after, server.state.drops_left = len(old) // 4, 3
    with pytest.raises(errors.DownloadError):
        download(url, dest, allow_http=True)
    server.state.files["/model.safetensors"] = Served(new, etag='"v2"')
    result = download(url, dest, allow_http=True)
    assert server.state.log[-1][1]["if-range"] == '"v1"'
    assert not result.resumed
    assert result.path.read_bytes() == new


def test_unsatisfiable_range_restarts_once(server: Server, dest: Path) -> None:
    body = make_body()
    url = server.serve("/model.safetensors", Served(body))
    dest.mkdir()
    partial_of(dest, url).write_bytes(make_body(len(body) + 10, seed=9))  # longer than the file: 416
    result = download(url, dest, allow_http=True)
    assert server.ranges() == [f"bytes={len(body) + 10}-", None]
    assert result.path.read_bytes() == body


# --- HTTP errors -----------------------------------------------------------------------------------------------


def test_404_is_a_download_error(server: Server, dest: Path) -> None:
    with pytest.raises(errors.DownloadError, match="404") as caught:
        download(server.url("/missing.safetensors"), dest, allow_http=True)
    assert caught.value.hint
    assert listing(dest) == []


def test_server_error_keeps_the_partial_for_a_later_run(server: Server, dest: Path) -> None:
    body = make_body()
    url = server.serve("/model.safetensors", Served(body))
    server.state.drop_after, server.state.drops_left = len(body) // 4, 3
    with pytest.raises(errors.DownloadError):
        download(url, dest, allow_http=True)
    server.state.files["/model.safetensors"].status = 503
    with pytest.raises(errors.DownloadError, match="503") as caught:
        download(url, dest, allow_http=True)
    assert "again" in (caught.value.hint or "")
    assert partial_of(dest, url).exists()


# --- file names ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("disposition", "expected"),
    [
        ('attachment; filename="../../x.safetensors"', "x.safetensors"),
        ('attachment; filename=".hidden.safetensors"', "hidden.safetensors"),
        ('attachment; filename="..\\\\..\\\\win.safetensors"', "win.safetensors"),
        ("attachment; filename*=UTF-8''..%2F..%2Fencoded%20name.safetensors", "encoded name.safetensors"),
        ('attachment; filename="/etc/abs.safetensors"', "abs.safetensors"),
    ],
)
def test_content_disposition_names_are_sanitised(
    server: Server, tmp_path: Path, disposition: str, expected: str
) -> None:
    dest = tmp_path / "a" / "b" / "downloads"
    body = make_body(1000)
    url = server.serve("/dl?id=1", Served(body, disposition=disposition))
    result = download(url, dest, allow_http=True)
    assert result.path == dest / expected
    assert listing(dest) == [expected]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]  # nothing escaped the folder


@pytest.mark.parametrize(
    ("path", "disposition"),
    [("/model.bin", None), ("/model.safetensors", 'attachment; filename="model.ckpt"'), ("/", None)],
)
def test_non_safetensors_names_are_refused(server: Server, dest: Path, path: str, disposition: str | None) -> None:
    url = server.serve(path, Served(make_body(1000), disposition=disposition))
    with pytest.raises(errors.DownloadError, match=r"not a \.safetensors file") as caught:
        download(url, dest, allow_http=True)
    assert "safetensors" in (caught.value.hint or "")
    assert listing(dest) == []


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("../../x.safetensors", "x.safetensors"),
        ("...hidden.safetensors", "hidden.safetensors"),
        ("a\\b\\c.safetensors", "c.safetensors"),
        ("bad\x00\nname?.safetensors", "badname_.safetensors"),
        ("..", ""),
        ("x" * 300 + ".safetensors", "x" * 243 + ".safetensors"),
    ],
)
def test_sanitise_file_name(raw: str, expected: str) -> None:
    assert sanitise_file_name(raw) == expected


def test_url_segment_is_used_without_content_disposition() -> None:
    assert file_name(None, "https://h.example/a/my%20lora.safetensors?download=1") == "my lora.safetensors"
    assert file_name('attachment; filename=".."', "https://h.example/a/b.safetensors") == "b.safetensors"
