"""The JSON API under ``/api/``: the SDK's read operations (list/search, show, lineage, licence check, verify,
audit, keys, provenance inspect), and with ``--allow-writes`` its writes (add, sign, trust, remove), for tools that
would rather ask lorahub than reimplement it (a ComfyUI node, a web UI extension).

Answers are the SDK's own JSON shapes (``lorahub show --json`` and the API agree); errors are
``{"error": {"code", "message", "hint"}}`` with the codes of ``docs/reference/exit-codes.md``. The OpenAPI 3.1
description at ``/api/openapi.json`` is built from :data:`OPERATIONS`, one entry per endpoint.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.schemas import BaseSchemaGenerator

from lorahub import __version__, errors
from lorahub.web import svg, views
from lorahub.web.security import CSRF_HEADER, facts
from lorahub.web.state import (
    catalogue,
    check_csrf,
    check_write,
    form_of,
    in_thread,
    may_write,
    upload_bytes,
)

SVG_TYPE: Final = "image/svg+xml"


@dataclass(frozen=True)
class Operation:
    """How the OpenAPI description presents one endpoint."""

    summary: str
    query: tuple[tuple[str, str], ...] = ()
    """(name, description) of each query parameter."""
    response: str = "application/json"
    body: str | None = None
    """What a request body holds, when there is one."""
    write: bool = False


class ApiResponse(JSONResponse):
    """JSON as the CLI's ``--json`` writes it: dates and paths as text (``default=str``), encoded once."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, default=str, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def _json(data: Any, status_code: int = 200) -> JSONResponse:
    return ApiResponse(data, status_code=status_code)


def _ref(request: Request) -> str:
    return str(request.path_params["ref"])


# --- reading ----------------------------------------------------------------------------------------------------


async def session(request: Request) -> Response:
    state = catalogue(request)
    token = state.secrets.csrf_token(facts(request.scope).browser)
    return _json({
        "csrf_token": token, "csrf_header": CSRF_HEADER, "writes_allowed": state.options.allow_writes,
        "writes": may_write(request), "lorahub_version": __version__,
    })  # fmt: skip


async def versions(request: Request) -> Response:
    state = catalogue(request)
    limit = _page_size(request.query_params.get("limit"), state.options.page_size)
    trust = await in_thread(views.trust_snapshot, state.hub)
    page = await in_thread(views.library, state.hub, views.query_from(request.query_params), limit=limit, trust=trust)
    return _json(page)


def _page_size(text: str | None, default: int) -> int:
    from lorahub.sdk.browsing import MAX_PAGE

    if not text:
        return default
    if not text.isdigit() or not 1 <= int(text) <= MAX_PAGE:
        raise errors.InvalidArgumentError(f"limit={text!r}: give a number from 1 to {MAX_PAGE}")
    return int(text)


async def show(request: Request) -> Response:
    return _json(await in_thread(catalogue(request).hub.show, _ref(request)))


async def lineage(request: Request) -> Response:
    return _json(await in_thread(_lineage, request))


def _lineage(request: Request) -> dict[str, Any]:
    state = catalogue(request)
    version = state.hub.version(_ref(request))
    children = state.children.children(version.content_digest)
    return {"tree": state.hub.lineage(version.ref).as_dict(), "children": [c.as_dict() for c in children]}


async def lineage_svg(request: Request) -> Response:
    data = await in_thread(_lineage, request)
    return Response(svg.lineage_svg(data["tree"], data["children"], href=views.adapter_url), media_type=SVG_TYPE)


async def loss_svg(request: Request) -> Response:
    details = await in_thread(catalogue(request).hub.show, _ref(request))
    training = details["card"].get("training")
    if not training:
        raise errors.PathNotFoundError(f"{details['name']}@{details['version']} has no training record")
    points = svg.loss_points(training.get("loss_curve"))
    title = f"training loss of {details['name']}@{details['version']}"
    return Response(svg.loss_svg(points, title=title), media_type=SVG_TYPE)


async def license_check(request: Request) -> Response:
    return _json(await in_thread(_license_check, request))


def _license_check(request: Request) -> dict[str, Any]:
    """The verdict for the catalogued version (the SDK would also take a bare licence id; this path names an
    adapter, so an unknown name is "not found", never read as a licence)."""
    hub, params = catalogue(request).hub, request.query_params
    version = hub.version(_ref(request))
    verdict = hub.license_check(
        [version.ref],
        use=params.get("use") or None,
        subject=params.get("subject") or "outputs",
        base_license=params.get("base_license") or None,
    )
    return verdict.as_dict()


async def verify(request: Request) -> Response:
    check_csrf(request)
    return _json(await in_thread(views.verify_now, catalogue(request).hub, _ref(request)))


async def audit(request: Request) -> Response:
    return _json(await in_thread(views.audit, catalogue(request).hub, request.query_params, check=False))


async def audit_chain(request: Request) -> Response:
    found = await in_thread(views.audit, catalogue(request).hub, {"limit": "1"}, check=True)
    return _json(found["chain"])


async def keys(request: Request) -> Response:
    records = await in_thread(catalogue(request).hub.trusted_keys)
    return _json([_key(record) for record in records])


def _key(record: Any) -> dict[str, Any]:
    return {
        "fingerprint": record.fingerprint, "name": record.name, "state": record.state, "own": record.own,
        "trusted": record.trusted, "revoked_at": record.revoked_at, "public_pem": record.public_pem,
    }  # fmt: skip


async def provenance(request: Request) -> Response:
    """Multipart ``image``: inspected in memory; nothing is written anywhere."""
    form = await form_of(request)
    check_csrf(request, form)
    data, name = await upload_bytes(form.get("image"), "an image")
    report = await in_thread(views.provenance, catalogue(request).hub, data)
    return _json(report | {"path": name})


async def openapi(request: Request) -> Response:
    return _json(SCHEMA.get_schema(routes()))


# --- writing (--allow-writes) -----------------------------------------------------------------------------------


async def add(request: Request) -> Response:
    check_write(request)  # before the body is read: a refused upload is never received whole
    form = await form_of(request)
    data, name = await upload_bytes(form.get("file"), "an adapter file")
    result = await in_thread(views.add_upload, catalogue(request).hub, data, name, form)
    return _json(result.as_dict(), status_code=201)


async def sign(request: Request) -> Response:
    check_write(request)
    version, added = await in_thread(catalogue(request).hub.sign, _ref(request))
    return _json({"ref": version.ref, "added": added})


async def remove(request: Request) -> Response:
    check_write(request)
    removed = await in_thread(catalogue(request).hub.remove, _ref(request))
    return _json({"removed": [version.ref for version in removed]})


async def trust(request: Request) -> Response:
    check_write(request)
    try:
        body = json.loads(await request.body())
        pem, name = str(body["pem"]), body.get("name")
    except (ValueError, KeyError, TypeError):
        raise errors.InvalidArgumentError('send {"pem": "-----BEGIN PUBLIC KEY-----…", "name": "…"}') from None
    record = await in_thread(catalogue(request).hub.trust_add, pem, name=str(name) if name else None)
    return _json(_key(record), status_code=201)


# --- the table ----------------------------------------------------------------------------------------------------

FILTERS: Final = (
    ("q", "search text: every word must match a name, description, trigger word or tag"),
    ("family", "base family: sd1, sdxl, flux1, …"),
    ("format", "file format: kohya, diffusers, …"),
    ("license", "licence id"),
    ("commercial", "yes: commercial use allowed; no: not"),
    ("signer", "signer key fingerprint (prefix)"),
    ("consent", "dataset consent status"),
    ("cursor", "the next or previous cursor of a page"),
    ("limit", "versions per page (1 to 200)"),
)
AUDIT_QUERY: Final = (
    ("who", "actor key fingerprint (prefix)"),
    ("adapter", "adapter name"),
    ("action", "add, sign, generate, …"),
    ("since", "ISO-8601 time"),
    ("limit", "the newest N (default 200)"),
)
ENDPOINTS: Final[tuple[tuple[str, str, Callable[[Request], Any], Operation], ...]] = (
    ("/api/openapi.json", "GET", openapi, Operation("This description (OpenAPI 3.1)")),
    ("/api/session", "GET", session, Operation("The CSRF token for this browser or client, and whether it may write")),
    ("/api/versions", "GET", versions, Operation("A page of versions, newest first, or of a search", FILTERS)),
    ("/api/adapters/{ref}", "GET", show, Operation("A version: card, signatures with trust, audit, files")),
    ("/api/adapters/{ref}/lineage", "GET", lineage, Operation("Its parents (a tree) and its children")),
    ("/api/adapters/{ref}/lineage.svg", "GET", lineage_svg, Operation("The lineage graph", response=SVG_TYPE)),
    ("/api/adapters/{ref}/loss.svg", "GET", loss_svg, Operation("The training loss curve", response=SVG_TYPE)),
    ("/api/adapters/{ref}/license", "GET", license_check, Operation(
        "The licence verdict for a use",
        (("use", "commercial, non-commercial or research"), ("subject", "outputs or model"),
         ("base_license", "the base model's licence")),
    )),
    ("/api/adapters/{ref}/verify", "POST", verify, Operation("Run the verify checklist now (needs the CSRF token)")),
    ("/api/audit", "GET", audit, Operation("Audit events, newest first", AUDIT_QUERY)),
    ("/api/audit/chain", "GET", audit_chain, Operation("The audit chain checked: problems and unsigned events")),
    ("/api/keys", "GET", keys, Operation("The keys this home knows: own, trusted, revoked")),
    ("/api/provenance", "POST", provenance, Operation(
        "Content Credentials of an uploaded image", body="multipart/form-data with the image in `image`"
    )),
    ("/api/adapters", "POST", add, Operation(
        "Add an adapter file", body="multipart/form-data: `file`, and optional `name`, `license`, `triggers`",
        write=True,
    )),
    ("/api/adapters/{ref}/sign", "POST", sign, Operation("Sign the card with the default identity", write=True)),
    ("/api/adapters/{ref}", "DELETE", remove, Operation("Remove the version (or every version of a name)", write=True)),
    ("/api/keys", "POST", trust, Operation("Trust a public key", body='JSON {"pem": …, "name": …}', write=True)),
)  # fmt: skip
OPERATIONS: Final = {(path, method.lower()): operation for path, method, _, operation in ENDPOINTS}


def routes() -> list[BaseRoute]:
    by_path: dict[str, list[tuple[str, Callable[[Request], Any]]]] = {}
    for path, method, endpoint, _ in ENDPOINTS:
        by_path.setdefault(path, []).append((method, endpoint))
    found: list[BaseRoute] = []
    for path, handlers in by_path.items():
        for method, endpoint in handlers:
            found.append(Route(path, endpoint, methods=[method]))
    return found


class Schema(BaseSchemaGenerator):
    """OpenAPI from :data:`ENDPOINTS` (Starlette's own generator reads YAML from docstrings; this one reads the
    table, so the description and the routes cannot drift apart)."""

    def get_schema(self, routes: list[BaseRoute]) -> dict[str, Any]:
        paths: dict[str, dict[str, Any]] = {}
        for endpoint in self.get_endpoints(routes):
            operation = OPERATIONS.get((endpoint.path, endpoint.http_method))
            if operation is not None:
                paths.setdefault(endpoint.path, {})[endpoint.http_method] = _operation(endpoint.path, operation)
        return {
            "openapi": "3.1.0",
            "info": {"title": "lorahub", "version": __version__, "description": __doc__.split("\n\n")[0]},
            "paths": paths,
            "components": {"schemas": {"Error": ERROR_SCHEMA}},
        }


ERROR_SCHEMA: Final = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "hint": {"type": ["string", "null"]},
            },
            "required": ["code", "message"],
        }
    },
}


def _operation(path: str, operation: Operation) -> dict[str, Any]:
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}, "description": "NAME[@V]"}
        for name in ("ref",)
        if f"{{{name}}}" in path
    ]
    parameters += [
        {"name": name, "in": "query", "required": False, "schema": {"type": "string"}, "description": text}
        for name, text in operation.query
    ]
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    found: dict[str, Any] = {
        "summary": operation.summary,
        "parameters": parameters,
        "responses": {
            "200": {"description": operation.summary, "content": {operation.response: {}}},
            "default": {"description": "an error, with its code and hint"} | error,
        },
    }
    if operation.body is not None:
        found["requestBody"] = {"description": operation.body, "required": True}
    if operation.write:
        found["description"] = "Needs `lorahub serve --allow-writes` and `Authorization: Bearer TOKEN`."
    return found


SCHEMA: Final = Schema()
