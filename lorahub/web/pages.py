"""The HTML pages: the library, an adapter, provenance, audit, trust; and the forms that act (verify, and with
``--allow-writes`` add, sign, trust, remove). Every page works without JavaScript; ``static/app.js`` only adds
copy buttons, an in-place verify and filters that apply as they change."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from lorahub import errors
from lorahub.formats import FORMATS
from lorahub.formats.families import FAMILIES
from lorahub.signing.card import CONSENT_STATUSES
from lorahub.web import views
from lorahub.web.state import (
    catalogue,
    check_csrf,
    check_write,
    form_of,
    in_thread,
    render,
    upload_bytes,
)


def routes() -> list[BaseRoute]:
    return [
        Route("/", library_page, name="library"),
        Route("/adapters/{ref}", adapter_page, name="adapter"),
        Route("/adapters/{ref}/verify", verify_page, methods=["POST"]),
        Route("/adapters/{ref}/sign", sign_page, methods=["POST"]),
        Route("/adapters/{ref}/remove", remove_page, methods=["POST"]),
        Route("/add", add_page, methods=["POST"]),
        Route("/previews/{location:int}/{index:int}", preview),
        Route("/provenance", provenance_page, methods=["GET", "POST"]),
        Route("/provenance/generated/{seq:int}", generated_page),
        Route("/audit", audit_page),
        Route("/keys", keys_page, methods=["GET", "POST"]),
        Route("/session", session_page),
    ]


# --- reading ----------------------------------------------------------------------------------------------------


async def library_page(request: Request) -> Response:
    state = catalogue(request)
    query = views.query_from(request.query_params)
    trust = await in_thread(views.trust_snapshot, state.hub)
    page = await in_thread(views.library, state.hub, query, limit=state.options.page_size, trust=trust)
    context = {
        "page": page,
        "query": query.values,
        "families": FAMILIES,
        "formats": sorted(fmt.id for fmt in FORMATS),
        "consents": CONSENT_STATUSES,
        "next_url": _page_url(query.values, page["next"]),
        "previous_url": _page_url(query.values, page["previous"]),
    }
    return render(request, "library.html", context)


def _page_url(values: dict[str, str], cursor: str | None) -> str | None:
    if cursor is None:
        return None
    return "/?" + urlencode({**values, "cursor": cursor})


async def adapter_page(request: Request, verify_report: dict[str, Any] | None = None) -> Response:
    state = catalogue(request)
    ref = str(request.path_params["ref"])
    trust = await in_thread(views.trust_snapshot, state.hub)
    details = await in_thread(views.adapter, state.hub, ref, state.children, trust=trust)
    return render(request, "adapter.html", {"adapter": details, "verify": verify_report})


async def verify_page(request: Request) -> Response:
    """The checklist, run now (the file is read again), shown on the adapter's page."""
    form = await form_of(request)
    check_csrf(request, form)
    report = await in_thread(views.verify_now, catalogue(request).hub, str(request.path_params["ref"]))
    return await adapter_page(request, report)


async def preview(request: Request) -> Response:
    location, index = int(request.path_params["location"]), int(request.path_params["index"])
    found = await in_thread(views.preview_file, catalogue(request).hub, location, index)
    headers = {"cache-control": "private, max-age=3600", "etag": f'"{found.sha256[:32]}"'}
    return FileResponse(found.path, media_type=found.media_type, headers=headers)


async def provenance_page(request: Request) -> Response:
    """Upload an image (kept in memory, never written) or pick one this home generated; see its credentials."""
    state = catalogue(request)
    report = None
    if request.method == "POST":
        form = await form_of(request)
        check_csrf(request, form)
        data, name = await upload_bytes(form.get("image"), "an image")
        report = await in_thread(views.provenance, state.hub, data) | {"path": name}
    generated = await in_thread(views.generated_images, state.hub)
    return render(request, "provenance.html", {"report": report, "generated": generated})


async def generated_page(request: Request) -> Response:
    state = catalogue(request)
    path = await in_thread(views.generated_image, state.hub, int(request.path_params["seq"]))
    report = await in_thread(views.provenance, state.hub, path)
    generated = await in_thread(views.generated_images, state.hub)
    return render(request, "provenance.html", {"report": report, "generated": generated})


async def audit_page(request: Request) -> Response:
    state = catalogue(request)
    check = request.query_params.get("check") == "1"
    found = await in_thread(views.audit, state.hub, request.query_params, check=check)
    return render(request, "audit.html", {"audit": found, "actions": sorted(ACTIONS)})


ACTIONS = frozenset({
    "add", "sign", "remove", "trust", "revoke", "verify-failed", "convert", "resize", "merge", "bake", "train",
    "generate", "export", "push", "pull", "scan", "move", "locate", "license-override", "issue-cert",
})  # fmt: skip
"""The audit actions the page's filter offers (any other can be typed into the URL)."""


async def keys_page(request: Request) -> Response:
    """The keys this home knows (own, trusted, revoked); with writes, a form to trust another."""
    state = catalogue(request)
    message = None
    if request.method == "POST":
        form = await form_of(request)
        check_write(request, form)
        pem = str(form.get("pem", "")).strip()
        if not pem:
            raise errors.MissingArgumentError("paste the public key (PEM) to trust")
        name = str(form.get("name", "")).strip() or None
        record = await in_thread(state.hub.trust_add, pem, name=name)
        message = f"trusted {record.name} ({record.fingerprint[:16]}…)"
    keys = await in_thread(state.hub.trusted_keys)
    return render(request, "keys.html", {"keys": keys, "message": message})


async def session_page(request: Request) -> Response:
    """``/session?token=…``: the link ``lorahub serve --allow-writes`` prints; the browser keeps a session cookie
    (not the token) and may write from then on."""
    state = catalogue(request)
    if not state.options.allow_writes:
        raise errors.WritesDisabledError("this catalogue was started read-only")
    if not state.secrets.token_ok(request.query_params.get("token")):
        raise errors.WriteTokenError("the link's token is not this session's write token")
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(state.secrets.session_cookie, state.secrets.session, httponly=True, samesite="strict", path="/")
    return response


# --- writing (--allow-writes) -----------------------------------------------------------------------------------


async def sign_page(request: Request) -> Response:
    form = await form_of(request)
    check_write(request, form)
    await in_thread(catalogue(request).hub.sign, str(request.path_params["ref"]))
    return RedirectResponse(views.adapter_url(str(request.path_params["ref"])), status_code=303)


async def remove_page(request: Request) -> Response:
    form = await form_of(request)
    check_write(request, form)
    await in_thread(catalogue(request).hub.remove, str(request.path_params["ref"]))
    return RedirectResponse("/", status_code=303)


async def add_page(request: Request) -> Response:
    """Catalogue an uploaded adapter file: written to a temporary folder outside the home, added (copied into the
    blob store and signed, as ``lorahub add`` does), then deleted."""
    check_write(request, {"csrf_token": request.query_params.get("csrf_token", "")})
    form = await form_of(request)
    data, name = await upload_bytes(form.get("file"), "an adapter file")
    result = await in_thread(views.add_upload, catalogue(request).hub, data, name, form)
    return RedirectResponse(views.adapter_url(f"{result.name}@{result.version}"), status_code=303)
