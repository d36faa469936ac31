"""One real home and one real server for the whole session (uvicorn on a free loopback port, in a thread), and one
headless Chromium driven by Playwright: the suite's budget allows one of each, not one per test.

Chromium is Debian's (``/usr/bin/chromium``); Playwright's own browser downloads are never used. Without it the
browser tests skip, except where CI requires them (``LORAHUB_REQUIRE_BROWSER=1``, set by ``.ci/run``, which
installs it). Screenshots go to a temporary folder (``LORAHUB_TEST_ARTIFACTS`` to keep them elsewhere); the two
the README shows are rewritten in ``docs/images/`` when ``LORAHUB_UPDATE_SCREENSHOTS=1``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lorahub import Hub
from tests.web.catalogue import DemoHome, build

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]  # fmt: skip
SMALL_UPLOAD = 256 * 1024
"""The session server's upload limit: small, so the oversized-upload tests stay small too."""
DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"


@dataclass(frozen=True)
class Served:
    url: str
    port: int
    secrets: Any
    hub: Hub


@contextmanager
def running(hub: Hub, **options: Any) -> Iterator[Served]:
    """``lorahub serve`` as the command runs it (the same app, socket and uvicorn settings), in a thread."""
    pytest.importorskip("starlette")
    import uvicorn

    from lorahub.web.app import ServeOptions, create_app
    from lorahub.web.security import Secrets
    from lorahub.web.server import bind, uvicorn_config

    sock = bind("127.0.0.1", 0)
    port = int(sock.getsockname()[1])
    serve_options = ServeOptions(port=port, **options)
    secrets = Secrets.fresh(allow_writes=serve_options.allow_writes, port=port)
    server = uvicorn.Server(uvicorn_config(create_app(hub, serve_options, secrets=secrets)))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the web catalogue did not start")
        time.sleep(0.02)
    try:
        yield Served(f"http://127.0.0.1:{port}", port, secrets, hub)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoHome:
    pytest.importorskip("c2pa")
    os.environ.pop("LORAHUB_DATABASE_URL", None)
    return build(tmp_path_factory.mktemp("web"))


@pytest.fixture(scope="session")
def served(demo: DemoHome) -> Iterator[Served]:
    """The demo home, read-only, as ``lorahub serve`` starts it (with a small upload limit)."""
    with running(demo.hub, max_upload=SMALL_UPLOAD) as server:
        yield server


@pytest.fixture(scope="session")
def artefacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chosen = os.environ.get("LORAHUB_TEST_ARTIFACTS")
    folder = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def browser_unavailable(reason: str) -> None:
    if os.environ.get("LORAHUB_REQUIRE_BROWSER") == "1":
        pytest.fail(f"a browser is required here but unavailable: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not CHROMIUM.is_file():
        browser_unavailable(f"{CHROMIUM} is not installed (apt install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        browser_unavailable("playwright (Python) is not installed")
        raise
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any, served: Served) -> Iterator[Any]:
    """A fresh browser context (its own cookies) that may use the clipboard, failing the test on any console error
    (a script error, or a style or script the Content-Security-Policy blocked)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=served.url)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=served.url)
    opened = context.new_page()
    problems: list[str] = []
    opened.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    opened.on("pageerror", lambda error: problems.append(str(error)))
    yield opened
    context.close()
    assert problems == []


def save_screenshot(page: Any, artefacts: Path, name: str, *, until: str | None = None, readme: bool = False) -> Path:
    """The page as a PNG among the artefacts (down to the bottom of the element ``until`` when given, else whole);
    with ``readme`` and ``LORAHUB_UPDATE_SCREENSHOTS=1``, also the copy the README shows."""
    options: dict[str, Any] = {"full_page": True}
    if until is not None:
        box = page.locator(until).bounding_box()
        bottom = box["y"] + box["height"] + 16
        options["clip"] = {"x": 0, "y": 0, "width": page.viewport_size["width"], "height": bottom}
    path = artefacts / f"{name}.png"
    page.screenshot(path=str(path), **options)
    if readme and os.environ.get("LORAHUB_UPDATE_SCREENSHOTS") == "1":
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(DOCS_IMAGES / f"{name}.png"), **options)
    return path
