"""The web catalogue in a real browser (headless Chromium, Playwright): the library and its filters, an adapter's
lineage graph and loss curve, copying a hash, verify now, an image's provenance, the audit log."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.web.catalogue import LOSSES, PREVIEW_WIDTH, DemoHome
from tests.web.conftest import Served, save_screenshot

pytest.importorskip("playwright")
from playwright.sync_api import expect


def _cards(page: Any) -> list[str]:
    return sorted(page.locator("article.card").evaluate_all("cards => cards.map(c => c.dataset.ref)"))


def test_library_shows_every_version_and_filters(page: Any, demo: DemoHome, artefacts: Path) -> None:
    page.goto("/")
    assert _cards(page) == ["blend@1", "ink@1", "pixel-art@1", "style@1", "style@2"]
    preview = page.locator("article.card[data-ref='pixel-art@1'] img")
    expect(preview).to_have_attribute("src", "/previews/1/0")
    for image in page.locator("article.card img").element_handles():  # both previews, shown
        image.scroll_into_view_if_needed()
        page.wait_for_function(f"img => img.complete && img.naturalWidth === {PREVIEW_WIDTH}", arg=image)
    ink = page.locator("article.card[data-ref='ink@1']")
    expect(ink.locator(".badge")).to_contain_text(["sd1", "kohya", "creativeml-openrail-m", "commercial", "trusted"])
    save_screenshot(page, artefacts, "library", readme=True)

    page.select_option("select[name=commercial]", "yes")  # applies at once (app.js), no button pressed
    page.wait_for_url("**/?*commercial=yes*")
    assert _cards(page) == ["ink@1"]
    page.goto("/")
    page.fill("input[name=q]", "inky")
    page.press("input[name=q]", "Enter")
    page.wait_for_url("**/?q=inky*")
    assert _cards(page) == ["ink@1"]
    page.goto("/?family=sdxl")
    expect(page.locator(".empty")).to_contain_text("No catalogued version matches")


def test_adapter_page_draws_lineage_and_loss_and_copies(page: Any, served: Served, artefacts: Path) -> None:
    page.goto("/")
    page.click("article.card[data-ref='style@1'] h2 a")
    page.wait_for_url("**/adapters/style@1")
    graph = page.locator("svg.lineage-graph")
    expect(graph).to_be_visible()
    refs = graph.locator("g.node").evaluate_all("nodes => nodes.map(n => n.dataset.ref)")
    assert sorted(refs) == ["blend@1", "ink@1", "pixel-art@1", "style@1", "style@2"]
    assert graph.locator("g.edge").count() == 4
    expect(graph.locator("g.edge text")).to_contain_text(["merged-from · weight 0.7", "trained-from"])
    assert graph.bounding_box()["width"] > 600
    curve = page.locator("svg.loss-plot polyline.curve")
    expect(curve).to_be_visible()
    assert len(curve.get_attribute("points").split()) == len(LOSSES)
    expect(page.locator("svg.loss-plot circle.point")).to_have_count(len(LOSSES))
    save_screenshot(page, artefacts, "adapter", until="section.lineage", readme=True)

    sha256 = served.hub.version("style@1").blob_sha256
    button = page.locator("tr[data-hash='SHA-256'] button.copy")
    button.click()
    expect(button).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == sha256
    page.locator("ul.triggers button.copy").first.click()
    assert page.evaluate("navigator.clipboard.readText()") == "sks style"

    graph.locator("g.node[data-ref='blend@1'] a").click()  # the graph links to its nodes
    page.wait_for_url("**/adapters/blend@1")
    expect(page.locator("h1")).to_contain_text("blend")


def test_verify_now_runs_the_checklist_with_and_without_javascript(page: Any, browser: Any, served: Served) -> None:
    page.goto("/adapters/pixel-art@1")
    page.click("#verify-form button")
    result = page.locator("#verify-result[data-state='ok']")
    expect(result).to_contain_text("all checks passed")
    expect(result.locator("li.ok")).to_contain_text(["container", "blob integrity", "signatures valid", "policy"])
    assert page.url.endswith("/adapters/pixel-art@1")  # in place, no navigation

    plain = browser.new_context(java_script_enabled=False, base_url=served.url)
    try:
        without = plain.new_page()
        without.goto("/adapters/ink@1")
        expect(without.locator("button.copy").first).to_be_hidden()  # copying needs the script
        without.click("#verify-form button")  # the form posts, the server answers with the page and the checklist
        expect(without.locator("#verify-result[data-state='ok']")).to_contain_text("all checks passed")
        assert without.url.endswith("/adapters/ink@1/verify")
    finally:
        plain.close()


def test_provenance_of_an_uploaded_image_links_into_the_catalogue(page: Any, demo: DemoHome, artefacts: Path) -> None:
    page.goto("/provenance")
    expect(page.locator("ul.generated a")).to_have_text(["cat.png"])
    page.set_input_files("input[name=image]", str(demo.image))
    page.click("form.upload button")
    report = page.locator("section.report[data-state='Trusted']")
    expect(report).to_contain_text("Alice Maker")
    expect(report.locator("h2")).to_contain_text("cat.png")
    save_screenshot(page, artefacts, "provenance")
    report.locator("table.adapters a", has_text="blend@1").click()
    page.wait_for_url("**/adapters/blend@1")


def test_audit_log_filters_and_checks_the_chain(page: Any, artefacts: Path) -> None:
    page.goto("/audit")
    assert page.locator("table.events tr[data-action]").count() >= 7
    page.select_option("select[name=action]", "merge")
    page.wait_for_url("**/audit?*action=merge*")
    expect(page.locator("table.events tr[data-action]")).to_have_count(1)
    page.locator("a.button", has_text="Check the chain").click()
    expect(page.locator("section.chain[data-ok='yes']")).to_contain_text("intact")
    save_screenshot(page, artefacts, "audit")
