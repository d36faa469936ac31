"""The JSON API answers with the SDK's own shapes, pages the catalogue, says what went wrong with a code and a
hint, and describes itself in an OpenAPI document that lists exactly its routes."""

from __future__ import annotations

import json
from typing import Any

import httpx

from lorahub.web import svg
from tests.web.catalogue import DemoHome
from tests.web.conftest import Served


def _get(served: Served, path: str, status: int = 200) -> Any:
    response = httpx.get(served.url + path)
    assert response.status_code == status, response.text
    return response.json()


def test_show_is_the_sdks_answer(served: Served, demo: DemoHome) -> None:
    assert _get(served, "/api/adapters/style@1") == json.loads(json.dumps(demo.hub.show("style@1"), default=str))
    lineage = _get(served, "/api/adapters/style@1/lineage")
    assert lineage["tree"] == json.loads(json.dumps(demo.hub.lineage("style@1").as_dict(), default=str))
    assert [(c["ref"], c["relation"], c["parameters"]) for c in lineage["children"]] == [
        ("style@2", "resized-from", {"rank": 2})
    ]
    verdict = _get(served, "/api/adapters/ink/license?use=commercial")
    assert verdict == demo.hub.license_check(["ink@1"], use="commercial").as_dict()
    keys = _get(served, "/api/keys")
    assert [(k["name"], k["state"]) for k in keys] == [("Alice Maker <alice@studio.example>", "own")]


def test_versions_page_through_the_catalogue(served: Served) -> None:
    seen, cursor = [], ""
    while True:
        page = _get(served, f"/api/versions?limit=2&cursor={cursor}")
        seen += [v["ref"] for v in page["versions"]]
        if page["next"] is None:
            break
        cursor = page["next"]
    assert seen == ["style@2", "style@1", "blend@1", "ink@1", "pixel-art@1"]
    pixel = _get(served, "/api/versions?q=crisp")["versions"]
    assert [(v["ref"], v["preview"], v["file_state"]) for v in pixel] == [("pixel-art@1", "/previews/1/0", "in place")]
    assert [v["ref"] for v in _get(served, "/api/versions?commercial=yes")["versions"]] == ["ink@1"]


def test_drawings_and_audit(served: Served, demo: DemoHome) -> None:
    loss = httpx.get(served.url + "/api/adapters/style@1/loss.svg")
    assert loss.headers["content-type"].startswith("image/svg+xml")
    card = demo.hub.show("style@1")["card"]
    expected = svg.loss_svg(svg.loss_points(card["training"]["loss_curve"]), title="training loss of style@1")
    assert loss.text == expected
    assert _get(served, "/api/adapters/ink@1/loss.svg", 404)["error"]["code"] == "path-not-found"
    graph = httpx.get(served.url + "/api/adapters/blend/lineage.svg").text
    assert 'data-ref="ink@1"' in graph and 'data-ref="style@1"' in graph and 'href="/adapters/ink@1"' in graph
    merges = _get(served, "/api/audit?action=merge")["events"]
    assert [(e["action"], e["subject_name"]) for e in merges] == [("merge", "blend")]
    chain = _get(served, "/api/audit/chain")
    assert chain["ok"] is True and chain["problems"] == [] and chain["head"]["seq"] >= 8


def test_errors_carry_a_code_and_a_hint(served: Served) -> None:
    missing = _get(served, "/api/adapters/no-such-thing", 404)["error"]
    assert missing["code"] == "adapter-not-found" and missing["message"]
    assert _get(served, "/api/versions?commercial=maybe", 400)["error"]["code"] == "argument-invalid"
    assert _get(served, "/api/versions?cursor=zz", 400)["error"]["hint"]
    assert _get(served, "/api/versions?limit=100000", 400)["error"]["code"] == "argument-invalid"
    assert _get(served, "/api/audit?limit=-1", 400)["error"]["code"] == "argument-invalid"
    assert _get(served, "/api/nothing-here", 404)["error"]["code"] == "path-not-found"
    wrong_method = httpx.put(served.url + "/api/versions")
    assert wrong_method.status_code == 405


def test_the_openapi_document_lists_every_route(served: Served) -> None:
    from lorahub.web.api import ENDPOINTS

    schema = _get(served, "/api/openapi.json")
    assert schema["openapi"] == "3.1.0" and schema["info"]["title"] == "lorahub"
    listed = {(path, method.upper()) for path, methods in schema["paths"].items() for method in methods}
    assert listed == {(path, method) for path, method, _, _ in ENDPOINTS}
    show = schema["paths"]["/api/adapters/{ref}"]["get"]
    assert show["parameters"][0] == {
        "name": "ref", "in": "path", "required": True, "schema": {"type": "string"}, "description": "NAME[@V]",
    }  # fmt: skip
    assert "Bearer" in schema["paths"]["/api/adapters/{ref}"]["delete"]["description"]
    for path, methods in schema["paths"].items():  # every GET without a parameter answers
        if "get" in methods and "{" not in path:
            assert httpx.get(served.url + path).status_code == 200, path
