"""What every endpoint shares: the options, the per-server state, rendering, and the checks a request that acts
must pass (CSRF, the write token), and how errors become responses."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.templating import Jinja2Templates

from lorahub import errors
from lorahub.web import security
from lorahub.web.security import CSRF_FIELD, CSRF_HEADER, Secrets, facts

if TYPE_CHECKING:
    from collections.abc import Callable

    from lorahub.sdk.hub import Hub
    from lorahub.sdk.lineage import ChildIndex

DEFAULT_PORT: Final = 8765
DEFAULT_MAX_UPLOAD: Final = 32 * 2**20
DEFAULT_MAX_ADAPTER_UPLOAD: Final = 4 * 2**30
ADAPTER_UPLOAD_PATHS: Final = ("/add", "/api/adapters")
PAGE_SIZE: Final = 50

HTTP_STATUS: Final[tuple[tuple[type[errors.LorahubError], int], ...]] = (
    (errors.RequestRefusedError, 400),  # replaced by the class's own status
    (errors.AdapterNotFoundError, 404),
    (errors.KeyNotFoundError, 404),
    (errors.PathNotFoundError, 404),
    (errors.InvalidArgumentError, 400),
    (errors.MissingExtraError, 501),
    (errors.LorahubError, 422),
)
"""Error class → HTTP status, the most specific first (as the CLI's exit codes are chosen)."""


@dataclass(frozen=True)
class ServeOptions:
    """How ``lorahub serve`` runs: where it listens, which other host names it answers for, whether writes are
    allowed, the largest upload (an image to inspect; an adapter file to add, with writes allowed) and how many
    versions a library page shows."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    allow_writes: bool = False
    allowed_hosts: tuple[str, ...] = ()
    max_upload: int = DEFAULT_MAX_UPLOAD
    max_adapter_upload: int = DEFAULT_MAX_ADAPTER_UPLOAD
    page_size: int = PAGE_SIZE


@dataclass
class Catalogue:
    """What every endpoint reads: the home, the options, the secrets, the templates and a children index kept
    for the server's lifetime."""

    hub: Hub
    options: ServeOptions
    secrets: Secrets
    templates: Jinja2Templates
    children: ChildIndex
    static: dict[str, tuple[bytes, str, str]] = field(default_factory=dict)


def catalogue(request: Request) -> Catalogue:
    found: Catalogue = request.app.state.catalogue
    return found


# --- what endpoints share ---------------------------------------------------------------------------------------


def render(request: Request, template: str, context: dict[str, Any], status_code: int = 200) -> HTMLResponse:
    response = catalogue(request).templates.TemplateResponse(request, template, context, status_code=status_code)
    response.headers["cache-control"] = "no-store"
    return response


async def in_thread(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run an SDK call (blocking: database, files, signatures) off the event loop."""
    return await run_in_threadpool(function, *args, **kwargs)


async def form_of(request: Request) -> dict[str, Any]:
    """The request's form fields (uploads as :class:`UploadFile`); its size was limited by the guard as it came."""
    form = await request.form(max_files=1, max_fields=32)
    return dict(form.items())


def check_csrf(request: Request, form: dict[str, Any] | None = None) -> None:
    """A request that acts must carry this browser's token (form field or header), unless it carries the write
    token as a Bearer header, which no other page can make a browser send."""
    state, seen = catalogue(request), facts(request.scope)
    if state.secrets.token_ok(seen.bearer):
        return
    token = request.headers.get(CSRF_HEADER) or (str(form.get(CSRF_FIELD, "")) if form else None)
    if seen.new_browser or not state.secrets.csrf_ok(seen.browser, token):
        raise errors.CsrfError("this request carries no valid CSRF token for this browser")


def may_write(request: Request) -> bool:
    state, seen = catalogue(request), facts(request.scope)
    allowed = state.secrets.token_ok(seen.bearer) or state.secrets.session_ok(seen.session)
    return state.options.allow_writes and allowed


def check_write(request: Request, form: dict[str, Any] | None = None) -> None:
    """A write needs --allow-writes, this session's token (cookie or Bearer) and, from a browser, the CSRF token."""
    if not catalogue(request).options.allow_writes:
        raise errors.WritesDisabledError("this catalogue was started read-only")
    if not may_write(request):
        raise errors.WriteTokenError("a write needs this session's write token")
    check_csrf(request, form)


async def upload_bytes(value: Any, what: str) -> tuple[bytes, str]:
    """The bytes and file name of an uploaded form field (already size-limited by the guard)."""
    if not isinstance(value, UploadFile):
        raise errors.MissingArgumentError(f"choose {what} to upload")
    data = await value.read()
    if not data:
        raise errors.MissingArgumentError(f"the uploaded {what} is empty")
    return data, value.filename or "upload"


# --- errors -----------------------------------------------------------------------------------------------------


def http_status(error: errors.LorahubError) -> int:
    if isinstance(error, errors.RequestRefusedError):
        return error.status
    return next(status for cls, status in HTTP_STATUS if isinstance(error, cls))


async def lorahub_error(request: Request, exc: Exception) -> Response:
    """The handler of :class:`~lorahub.errors.LorahubError` (Starlette calls it with nothing else)."""
    if not isinstance(exc, errors.LorahubError):
        raise exc
    return error_response(request, exc, http_status(exc))


def error_response(request: Request, error: errors.LorahubError, status: int) -> Response:
    """The error as ``{"error": {code, message, hint}}`` for the API, as a page for a browser."""
    if security.wants_json(request.scope):
        return JSONResponse(security.error_body(error), status_code=status)
    context = {"code": error.code, "message": error.message, "hint": error.hint, "status": status}
    return render(request, "error.html", context, status_code=status)


async def not_found(request: Request, exc: Exception) -> Response:
    return error_response(request, errors.PathNotFoundError(f"nothing is served at {request.url.path}"), 404)


async def not_allowed(request: Request, exc: Exception) -> Response:
    error = errors.InvalidArgumentError(f"{request.method} is not accepted at {request.url.path}")
    return error_response(request, error, 405)
