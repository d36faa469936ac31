"""The ASGI application of ``lorahub serve``: routes, templates, the security guard, error pages.

:func:`create_app` builds it over an open :class:`~lorahub.sdk.hub.Hub`; :func:`lorahub.web.server.serve` runs it
with uvicorn. Tests build it the same way and drive it through a real server and a real browser.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import TYPE_CHECKING, Any, Final

import jinja2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.templating import Jinja2Templates

from lorahub import __version__, errors
from lorahub.web.security import Guard, Policy, Secrets, facts
from lorahub.web.state import (
    ADAPTER_UPLOAD_PATHS,
    Catalogue,
    ServeOptions,
    catalogue,
    lorahub_error,
    may_write,
    not_allowed,
    not_found,
)

if TYPE_CHECKING:
    from lorahub.sdk.hub import Hub

__all__ = ["ServeOptions", "create_app"]

STATIC_FILES: Final = {"app.css": "text/css", "app.js": "text/javascript", "favicon.svg": "image/svg+xml"}
"""Every file under ``/static/``: a fixed list, read once from the package, so no request names a path."""


def create_app(hub: Hub, options: ServeOptions | None = None, *, secrets: Secrets | None = None) -> Starlette:
    """The web catalogue over ``hub``. ``secrets`` default to fresh ones (a write token only with
    ``allow_writes``); the caller prints ``secrets.write_token`` for the user."""
    from lorahub.sdk.lineage import ChildIndex
    from lorahub.web import api, pages

    options = options or ServeOptions()
    secrets = secrets or Secrets.fresh(allow_writes=options.allow_writes, port=options.port)
    routes: list[BaseRoute] = [*pages.routes(), *api.routes(), Route("/static/{name}", static_file, name="static")]
    policy = Policy.for_address(
        options.host,
        options.allowed_hosts,
        max_body=options.max_upload,
        large_body=options.max_adapter_upload,
        large_paths=ADAPTER_UPLOAD_PATHS if options.allow_writes else (),
    )
    app = Starlette(
        routes=routes,
        middleware=[Middleware(Guard, policy=policy, secrets_=secrets)],
        exception_handlers={errors.LorahubError: lorahub_error, 404: not_found, 405: not_allowed},
    )
    app.state.catalogue = Catalogue(hub, options, secrets, _templates(), ChildIndex(hub), _static())
    return app


def _templates() -> Jinja2Templates:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("lorahub.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return Jinja2Templates(env=environment, context_processors=[_page_globals])


def _static() -> dict[str, tuple[bytes, str, str]]:
    folder = resources.files("lorahub.web") / "static"
    found = {}
    for name, media_type in STATIC_FILES.items():
        data = (folder / name).read_bytes()
        found[name] = (data, media_type, hashlib.sha256(data).hexdigest()[:16])
    return found


def _page_globals(request: Request) -> dict[str, Any]:
    state = catalogue(request)
    return {
        "csrf_token": state.secrets.csrf_token(facts(request.scope).browser),
        "writes": may_write(request),
        "writes_allowed": state.options.allow_writes,
        "home": str(state.hub.settings.home),
        "lorahub_version": __version__,
        "static": lambda name: f"/static/{name}?v={state.static[name][2]}",
    }


async def static_file(request: Request) -> Response:
    name = str(request.path_params["name"])
    found = catalogue(request).static.get(name)
    if found is None:
        raise errors.PathNotFoundError(f"no static file {name!r}")
    data, media_type, version = found
    headers = {"cache-control": "public, max-age=86400", "etag": f'"{version}"'}
    return Response(data, media_type=media_type, headers=headers)
