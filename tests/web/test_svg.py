"""The lineage graph and the loss curve as SVG: well-formed, escaped, laid out left to right, deterministic."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from lorahub.web import svg

NS = {"svg": svg.SVG_NS}


def _node(ref: str | None, digest: str, *, parents: list[dict[str, Any]] = (), **fields: Any) -> dict[str, Any]:  # type: ignore[assignment]
    return {
        "ref": ref, "content_digest": digest, "known": ref is not None, "license": "MIT",
        "signers": [{"valid": True, "trust": "own"}], "parents": list(parents), **fields,
    }  # fmt: skip


def _tree() -> dict[str, Any]:
    """style ← blend ← (pixel, ink); style ← pixel as well (a diamond); ink ← an uncatalogued parent."""
    unknown = _node(None, "f" * 64, relation="converted-from", parameters={})
    pixel = _node("pixel@1", "a" * 64, relation="merged-from", parameters={"weight": "0.7"})
    ink = _node("ink@1", "b" * 64, relation="merged-from", parameters={"weight": "0.4"}, parents=[unknown])
    blend = _node("blend@1", "c" * 64, relation="trained-from", parameters={}, parents=[pixel, ink])
    direct = _node("pixel@1", "a" * 64, relation="merged-from", parameters={"weight": "0.1"})
    return _node("style@1", "d" * 64, parents=[blend, direct])


def test_lineage_graph_layers_every_edge_left_to_right() -> None:
    children = [{"ref": "style@2", "content_digest": "e" * 64, "relation": "resized-from", "parameters": {"rank": 2}}]
    graph = svg.lineage_graph(_tree(), children)
    assert len(graph.nodes) == 6  # pixel reached twice is one node
    assert all(graph.layers[e.parent] < graph.layers[e.child] for e in graph.edges)
    assert graph.layers["a" * 64] == -2 and graph.layers["d" * 64] == 0 and graph.layers["e" * 64] == 1
    labels = {(e.parent[0], e.child[0]): e.label for e in graph.edges}
    assert labels[("a", "c")] == "merged-from · weight 0.7" and labels[("d", "e")] == "resized-from · rank 2"
    assert graph.nodes["f" * 64].state == "unknown" and graph.nodes["d" * 64].focus


def test_lineage_svg_is_well_formed_escaped_and_linked() -> None:
    hostile = '<script>alert("x")</script>&'
    tree = _node("style@1", "d" * 64, parents=[_node("evil@1", "a" * 64, relation="merged-from",
                                                     parameters={"weight": hostile}, license=hostile)])  # fmt: skip
    text = svg.lineage_svg(tree, href=lambda ref: f"/adapters/{ref}")
    assert "<script" not in text
    root = ET.fromstring(text)
    assert root.get("class") == "lineage-graph"
    nodes = root.findall("svg:g[@class='node']", NS) + root.findall("svg:g[@class='node focus']", NS)
    assert sorted(n.get("data-ref") for n in nodes) == ["evil@1", "style@1"]
    assert any(hostile[:20] in "".join(t.itertext()) for t in root.iter(f"{{{svg.SVG_NS}}}text"))
    links = [a.get("href") for a in root.iter(f"{{{svg.SVG_NS}}}a")]
    assert links == ["/adapters/evil@1"]  # the adapter itself is not a link to its own page
    assert svg.lineage_svg(tree, href=lambda ref: f"/adapters/{ref}") == text  # the same bytes again
    assert "<a " not in svg.lineage_svg(tree)


def test_loss_curve_plots_every_point_within_the_axes() -> None:
    curve = {"every": 10, "points": [[10, "0.5"], [20, "0.25"], [30, "nan"], [40, "0.125"], ["x", "1"]]}
    points = svg.loss_points(curve)
    assert points == [(10, 0.5), (20, 0.25), (40, 0.125)]
    root = ET.fromstring(svg.loss_svg(points, title="loss of <x>"))
    assert root.find("svg:title", NS).text == "loss of <x>"  # type: ignore[union-attr]
    (line,) = root.findall("svg:polyline", NS)
    coordinates = [tuple(map(float, pair.split(","))) for pair in line.get("points", "").split()]
    assert len(coordinates) == 3
    top, right, bottom, left = svg.PLOT_MARGINS
    assert all(left <= x <= svg.PLOT_WIDTH - right and top <= y <= svg.PLOT_HEIGHT - bottom for x, y in coordinates)
    assert coordinates[0][1] < coordinates[1][1] < coordinates[2][1]  # lower loss is drawn lower
    assert len(root.findall("svg:circle", NS)) == 3


def test_loss_curve_without_points_says_so() -> None:
    assert "no loss recorded" in svg.loss_svg([])
    ET.fromstring(svg.loss_svg([(5, 0.3)]))  # one point, a flat range: still a valid plot


def test_nice_ticks_cover_the_range_with_round_steps() -> None:
    assert svg.nice_ticks(0, 100) == [0, 20, 40, 60, 80, 100]
    ticks = svg.nice_ticks(0.0931, 0.1843)
    assert ticks[0] <= 0.0931 and ticks[-1] >= 0.1843 and len(ticks) <= 8
    assert svg.nice_ticks(2.0, 2.0)[0] < 2.0 < svg.nice_ticks(2.0, 2.0)[-1]
