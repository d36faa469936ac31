"""Running the web catalogue: a listening socket, uvicorn, and the links the user is given.

The socket is bound here, before uvicorn starts, so that a taken port is a clear
:class:`~lorahub.errors.ServeAddressError` rather than a log line, and so that ``port=0`` (any free port) tells
the caller which port it got.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import socket
import threading
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lorahub import errors

if TYPE_CHECKING:
    from lorahub.sdk.hub import Hub
    from lorahub.web.app import ServeOptions


SERVE_MODULES = ("starlette", "uvicorn", "jinja2", "python_multipart")
"""What the ``serve`` extra installs, as the modules imported."""


@dataclass(frozen=True)
class Started:
    """Where the catalogue listens, and the link that gives a browser write access (None when read-only)."""

    url: str
    write_url: str | None
    loopback: bool


def require_extra() -> None:
    """Starlette, uvicorn, Jinja2 and python-multipart, or the error that says how to install them."""
    missing = [name for name in SERVE_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise errors.MissingExtraError(f"lorahub serve ({', '.join(missing)})", "serve")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise errors.ServeAddressError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def url_host(host: str) -> str:
    return f"[{host.strip('[]')}]" if ":" in host else host


def serve(
    hub: Hub, options: ServeOptions, *, open_browser: bool = False, announce: Callable[[Started], None] | None = None
) -> None:
    """Serve ``hub`` until interrupted. ``announce`` gets the address (and the write link) once listening;
    ``open_browser`` opens it (the write link, when writes are allowed) in the user's browser."""
    require_extra()
    import dataclasses

    import uvicorn

    from lorahub.web.app import create_app
    from lorahub.web.security import Secrets

    sock = bind(options.host, options.port)
    port = int(sock.getsockname()[1])
    options = dataclasses.replace(options, port=port)
    secrets = Secrets.fresh(allow_writes=options.allow_writes, port=port)
    app = create_app(hub, options, secrets=secrets)
    base = f"http://{url_host(options.host)}:{port}/"
    write_url = f"{base}session?token={secrets.write_token}" if secrets.write_token else None
    started = Started(base, write_url, is_loopback(options.host))
    server = uvicorn.Server(uvicorn_config(app))
    if announce is not None:
        announce(started)
    if open_browser:
        threading.Thread(target=_open_when_started, args=(server, write_url or base), daemon=True).start()
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        return  # Ctrl-C is how a server is stopped: uvicorn has shut down and re-raised it, nothing failed
    finally:
        sock.close()


def uvicorn_config(app: Any) -> Any:
    import uvicorn

    return uvicorn.Config(app, lifespan="off", log_level="warning", server_header=False, access_log=False)


def _open_when_started(server: Any, url: str) -> None:
    import time

    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    if server.started:
        webbrowser.open(url)
