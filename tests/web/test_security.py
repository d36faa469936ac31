"""What keeps the served catalogue safe: a foreign Host refused (DNS rebinding), actions without this browser's CSRF
token refused, writes refused unless allowed and carrying the session's token, no path from a request ever
served, oversized uploads refused as they arrive, and an inspected image never written to the home."""

from __future__ import annotations

import http.client
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from lorahub import Hub
from lorahub.dev.example_lora import write_example_lora
from lorahub.sdk.adding import AddOptions
from tests.web.catalogue import DemoHome
from tests.web.conftest import SMALL_UPLOAD, Served, running

SECRET = "LORAHUB-SENTINEL-7f3a9c"


@pytest.fixture(scope="module")
def writable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A second home, served with --allow-writes: two adapters, one scanned in place beside its preview."""
    root = tmp_path_factory.mktemp("writable")
    os.environ.pop("LORAHUB_DATABASE_URL", None)
    hub = Hub.open(root / "home")
    hub.create_identity("Bob <bob@example.com>")
    library = root / "library"
    library.mkdir()
    write_example_lora(library / "alpha.safetensors", rank=1, seed=10, name="alpha")
    (library / "alpha.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    hub.scan([library], AddOptions(license="MIT"))
    write_example_lora(root / "beta.safetensors", rank=1, seed=11, name="beta")
    hub.add(root / "beta.safetensors", AddOptions(name="beta", license="MIT"))
    with running(hub, allow_writes=True, max_upload=SMALL_UPLOAD) as server:
        yield server


def _error(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


@contextmanager
def _session(served: Served) -> Iterator[tuple[httpx.Client, str]]:
    """A client that holds this server's browser cookie, and the CSRF token that goes with it."""
    with httpx.Client(base_url=served.url) as client:
        yield client, client.get("/api/session").json()["csrf_token"]


# --- Host ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/adapters/ink@1", "/api/versions", "/static/app.css", "/no-such-page"])
def test_a_foreign_host_is_refused(served: Served, path: str) -> None:
    for host in (f"evil.example:{served.port}", "evil.example", f"127.0.0.1.evil.example:{served.port}", ""):
        response = httpx.get(served.url + path, headers={"host": host})
        assert response.status_code == 400, host
        assert "host-refused" in response.text and "ink" not in response.text
    for host in (f"127.0.0.1:{served.port}", f"localhost:{served.port}", f"[::1]:{served.port}"):
        assert httpx.get(served.url + "/api/versions", headers={"host": host}).status_code == 200, host


# --- CSRF ---------------------------------------------------------------------------------------------------------


def test_actions_need_this_browsers_csrf_token(served: Served) -> None:
    verify = "/api/adapters/ink@1/verify"
    assert _error(httpx.post(served.url + verify)) == "csrf-failed"  # no cookie, no token
    with _session(served) as (client, token):
        assert _error(client.post(verify)) == "csrf-failed"  # the cookie alone is not enough
        assert _error(client.post(verify, headers={"x-csrf-token": "0" * 64})) == "csrf-failed"
        with _session(served) as (_, other_token):
            assert _error(client.post(verify, headers={"x-csrf-token": other_token})) == "csrf-failed"
        cross = {"x-csrf-token": token, "origin": "http://evil.example"}
        assert _error(client.post(verify, headers=cross)) == "csrf-failed"
        assert _error(client.post(verify, headers={"x-csrf-token": token, "sec-fetch-site": "cross-site"})) == (
            "csrf-failed"
        )
        same = {"x-csrf-token": token, "origin": served.url, "sec-fetch-site": "same-origin"}
        answer = client.post(verify, headers=same)
        assert answer.status_code == 200 and answer.json()["ok"] is True
        form = client.post("/adapters/ink@1/verify", data={"csrf_token": "forged"})
        assert form.status_code == 403 and "csrf-failed" in form.text
        form = client.post("/adapters/ink@1/verify", data={"csrf_token": token})
        assert form.status_code == 200 and 'data-state="ok"' in form.text


def test_a_read_only_catalogue_refuses_every_write(served: Served, demo: DemoHome) -> None:
    with _session(served) as (client, token):
        headers = {"x-csrf-token": token}
        assert _error(client.post("/api/adapters/ink@1/sign", headers=headers)) == "writes-disabled"
        assert _error(client.delete("/api/adapters/ink@1", headers=headers)) == "writes-disabled"
        assert _error(client.post("/api/keys", headers=headers, content=b"{}")) == "writes-disabled"
        files = {"file": ("x.safetensors", b"not really")}
        assert _error(client.post("/api/adapters", headers=headers, files=files)) == "writes-disabled"
        form = client.post("/adapters/ink@1/remove", data={"csrf_token": token})
        assert form.status_code == 403 and "writes-disabled" in form.text
        assert client.get("/session?token=anything").status_code == 403
    assert demo.hub.version("ink@1").ref == "ink@1"


def test_writes_need_the_sessions_token(writable: Served, tmp_path: Path) -> None:
    with _session(writable) as (client, token):
        headers = {"x-csrf-token": token}
        assert _error(client.post("/api/adapters/beta@1/sign", headers=headers)) == "write-token-required"
        wrong = headers | {"authorization": "Bearer " + "x" * 43}
        assert _error(client.delete("/api/adapters/beta@1", headers=wrong)) == "write-token-required"
        assert client.get("/session?token=wrong").status_code == 401
        # the link lorahub serve prints: the browser keeps a session cookie (never the token itself)
        assert client.get(f"/session?token={writable.secrets.write_token}").status_code == 303
        assert writable.secrets.write_token not in str(client.cookies)
        assert client.get("/api/session").json()["writes"] is True
        assert _error(client.post("/api/adapters/beta@1/sign")) == "csrf-failed"  # a session still needs the token
        signed = client.post("/api/adapters/beta@1/sign", headers=headers)
        assert signed.status_code == 200 and signed.json() == {"ref": "beta@1", "added": False}
    bearer = {"authorization": f"Bearer {writable.secrets.write_token}"}  # an API client: no cookie, no CSRF token
    write_example_lora(tmp_path / "gamma.safetensors", rank=1, seed=12, name="gamma")
    files = {"file": ("gamma.safetensors", (tmp_path / "gamma.safetensors").read_bytes())}
    added = httpx.post(writable.url + "/api/adapters", headers=bearer, files=files, data={"license": "MIT"})
    assert added.status_code == 201 and added.json()["name"] == "gamma" and added.json()["version"] == 1
    assert writable.hub.version("gamma").license_id == "MIT"
    removed = httpx.delete(writable.url + "/api/adapters/gamma@1", headers=bearer)
    assert removed.status_code == 200 and removed.json() == {"removed": ["gamma@1"]}
    pem = {"pem": writable.hub.identities()[0].identity.public_pem, "name": "again"}
    trusted = httpx.post(writable.url + "/api/keys", headers=bearer, content=json.dumps(pem))
    assert trusted.status_code == 201 and trusted.json()["state"] == "own"


# --- paths --------------------------------------------------------------------------------------------------------

TRAVERSALS = (
    "..", "../../../../etc/passwd", "..%2F..%2F..%2Fetc%2Fpasswd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "..%252f..%252fetc%252fpasswd", "....//....//etc/passwd", "..%5c..%5cwindows%5cwin.ini", "%2Fetc%2Fpasswd",
    "~root", "%00", "ink%00.png",
)  # fmt: skip
ROUTES = (
    ("GET", "/adapters/{}"), ("POST", "/adapters/{}/verify"), ("POST", "/adapters/{}/sign"),
    ("POST", "/adapters/{}/remove"), ("GET", "/api/adapters/{}"), ("DELETE", "/api/adapters/{}"),
    ("GET", "/api/adapters/{}/lineage"), ("GET", "/api/adapters/{}/lineage.svg"), ("GET", "/api/adapters/{}/loss.svg"),
    ("GET", "/api/adapters/{}/license"), ("POST", "/api/adapters/{}/verify"), ("POST", "/api/adapters/{}/sign"),
    ("GET", "/previews/{}/0"), ("GET", "/previews/1/{}"), ("GET", "/provenance/generated/{}"), ("GET", "/static/{}"),
)  # fmt: skip
"""Every route with a path parameter, and the parameter's place in it."""


def _raw(served: Served, method: str, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """The request exactly as written: httpx would resolve ``..`` before sending."""
    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
    try:
        sent = {"host": f"127.0.0.1:{served.port}", "content-length": "0", **headers}
        connection.request(method, path, headers=sent)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_no_path_parameter_reaches_a_file(writable: Served, tmp_path: Path) -> None:
    """With the write token (no CSRF or write check in the way), every route meets every traversal: each is "not
    found" or "invalid", nothing outside is read, and the catalogue is as it was."""
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    payloads = (*TRAVERSALS, str(secret), str(secret).replace("/", "%2F"), "../" * 8 + str(secret).lstrip("/"))
    bearer = {"authorization": f"Bearer {writable.secrets.write_token}"}
    before = [v.ref for v in writable.hub.list_versions()]
    for method, template in ROUTES:
        for payload in payloads:
            status, body = _raw(writable, method, template.format(payload), bearer)
            assert status in (400, 404), (method, template, payload, status, body[:200])
            assert SECRET.encode() not in body and b"root:" not in body, (template, payload)
    assert [v.ref for v in writable.hub.list_versions()] == before
    assert _raw(writable, "GET", "/api/adapters/beta@1", bearer)[0] == 200  # the routes do answer a real name


def test_a_preview_is_served_only_as_the_scan_recorded_it(writable: Served, tmp_path: Path) -> None:
    (row,) = [r for r in writable.hub.catalog.locations.pages() for r in r]
    preview_url = f"{writable.url}/previews/{row.id}/0"
    shown = httpx.get(preview_url)
    assert shown.status_code == 200 and shown.headers["content-type"] == "image/png"
    assert httpx.get(f"{writable.url}/previews/{row.id}/1").status_code == 404
    assert httpx.get(f"{writable.url}/previews/{row.id + 1}/0").status_code == 404
    # the preview swapped for a link to a file outside the library: same name, not the recorded file
    preview = Path(row.path).with_suffix(".png")
    kept = preview.read_bytes()
    secret = tmp_path / "secret.png"
    secret.write_bytes(kept)  # even with the same bytes
    os.utime(secret, ns=(preview.stat().st_atime_ns, preview.stat().st_mtime_ns))
    preview.unlink()
    preview.symlink_to(secret)
    try:
        assert httpx.get(preview_url).status_code == 404
    finally:
        preview.unlink()
        preview.write_bytes(kept)


# --- uploads ------------------------------------------------------------------------------------------------------


def _files(root: Path) -> dict[str, int]:
    """Every file of the home and its size, but the catalog's (the server's reads touch its WAL files)."""
    found = (p for p in root.rglob("*") if p.is_file() and "catalog" not in p.name)
    return {str(p.relative_to(root)): p.stat().st_size for p in found}


def test_oversized_uploads_are_refused_as_they_arrive(served: Served, demo: DemoHome) -> None:
    with _session(served) as (client, token):
        headers = {"x-csrf-token": token}
        too_big = {"image": ("big.png", b"\0" * (SMALL_UPLOAD + 1))}
        response = client.post("/api/provenance", headers=headers, files=too_big)
        assert response.status_code == 413 and _error(response) == "upload-too-large"

        def stream() -> Iterator[bytes]:  # no Content-Length: the body is counted as it comes
            boundary = b"--lorahub\r\n"
            yield boundary + b'Content-Disposition: form-data; name="image"; filename="big.png"\r\n\r\n'
            for _ in range(SMALL_UPLOAD // 4096 + 2):
                yield b"\0" * 4096

        chunked = headers | {"content-type": "multipart/form-data; boundary=lorahub"}
        response = client.post("/api/provenance", headers=chunked, content=stream())
        assert response.status_code == 413 and _error(response) == "upload-too-large"
        page = client.post("/provenance", data={"csrf_token": token}, files=too_big)
        assert page.status_code == 413 and "upload-too-large" in page.text


def test_an_inspected_image_is_never_written_to_the_home(served: Served, demo: DemoHome) -> None:
    home = demo.hub.settings.home
    before = _files(home)
    with _session(served) as (client, token):
        files = {"image": ("cat.png", demo.image.read_bytes())}
        report = client.post("/api/provenance", headers={"x-csrf-token": token}, files=files)
    assert report.status_code == 200
    found: dict[str, Any] = report.json()
    assert found["state"] == "Trusted" and found["adapters"][0]["url"] == "/adapters/blend@1"
    assert _files(home) == before
