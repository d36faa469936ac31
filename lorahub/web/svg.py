"""The two pictures lorahub draws: an adapter's lineage graph and its training loss curve, as standalone SVG.

Pure text in, text out (no plotting library): the web catalogue inlines the same markup that ``lorahub lineage
--svg`` and ``lorahub show --loss-plot`` write to files. Only presentation attributes are used, never ``style``
elements or attributes, so the markup works inline under the catalogue's Content-Security-Policy (no inline
styles) and on its own in any viewer. Every text that comes from a card (names, licences, parameters) is escaped.
The output is deterministic: the same lineage or curve gives the same bytes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from xml.sax.saxutils import escape, quoteattr

SVG_NS: Final = "http://www.w3.org/2000/svg"
FONT: Final = "system-ui, -apple-system, 'Segoe UI', sans-serif"

# --- lineage graph --------------------------------------------------------------------------------------------

NODE_WIDTH: Final = 232
NODE_HEIGHT: Final = 50
COLUMN_GAP: Final = 170
ROW_GAP: Final = 22
MARGIN: Final = 16
LABEL_CHARS: Final = 30
"""Characters of a node's first line that fit its box at 13 px (longer names end in an ellipsis, the full name is
in the node's tooltip)."""

STATE_COLOURS: Final[Mapping[str, tuple[str, str]]] = {
    "trusted": ("#2e7d32", "#f1f8f1"),
    "untrusted": ("#b26a00", "#fff8ec"),
    "invalid": ("#c62828", "#fdf0f0"),
    "unsigned": ("#757575", "#f7f7f7"),
    "unknown": ("#9e9e9e", "#ffffff"),
    "removed": ("#9e9e9e", "#f7f7f7"),
    "": ("#5f6b7a", "#ffffff"),
}
"""Signature state → (border, fill) of a node; a child is drawn without one (its card is not checked here)."""
FOCUS_FILL: Final = "#e8f0fe"


@dataclass(frozen=True)
class GraphNode:
    """One adapter in the drawing: ``key`` is its content digest; ``ref`` is None for a parent this home has not
    catalogued."""

    key: str
    ref: str | None
    detail: str
    state: str
    focus: bool = False


@dataclass(frozen=True)
class GraphEdge:
    parent: str
    child: str
    label: str


@dataclass
class LineageGraph:
    """Nodes in columns by generation (oldest ancestors first, the adapter itself, then its children)."""

    nodes: dict[str, GraphNode] = field(default_factory=dict)
    edges: list[GraphEdge] = field(default_factory=list)
    layers: dict[str, int] = field(default_factory=dict)


def signature_state(signers: Sequence[Mapping[str, Any]]) -> str:
    """``trusted`` when a valid signature is by a key this home trusts (or owns), ``invalid`` when one by a known
    key fails, ``unsigned`` without signatures, else ``untrusted``."""
    if not signers:
        return "unsigned"
    if any(s.get("valid") and s.get("trust") in ("own", "trusted") for s in signers):
        return "trusted"
    if any(not s.get("valid") and s.get("trust") != "unknown" for s in signers):
        return "invalid"
    return "untrusted"


def edge_label(relation: str | None, parameters: Mapping[str, Any]) -> str:
    words = [relation or "derived-from"]
    words += [f"{key} {value}" for key, value in sorted(parameters.items()) if isinstance(value, str | int | float)]
    return " · ".join(words)


def lineage_graph(tree: Mapping[str, Any], children: Sequence[Mapping[str, Any]] = ()) -> LineageGraph:
    """The graph of :meth:`Hub.lineage`'s tree (``LineageNode.as_dict()``) and :meth:`Hub.children`'s list
    (``Child.as_dict()``). A parent reached along two paths is one node, in the column of its longest path, so
    every edge points from left to right."""
    graph = LineageGraph()
    _add_ancestors(graph, tree, focus=True)
    _layer_ancestors(graph, str(tree["content_digest"]))
    for child in children:
        key = str(child["content_digest"])
        if key not in graph.nodes:
            removed = bool(child.get("removed"))
            graph.nodes[key] = GraphNode(key, str(child["ref"]), str(child.get("license") or ""), "removed" * removed)
            graph.layers[key] = 1
        label = edge_label(child.get("relation"), child.get("parameters") or {})
        graph.edges.append(GraphEdge(str(tree["content_digest"]), key, label))
    return graph


def _add_ancestors(graph: LineageGraph, node: Mapping[str, Any], *, focus: bool = False) -> None:
    key = str(node["content_digest"])
    if key not in graph.nodes:
        known = bool(node.get("known"))
        detail = str(node.get("license") or "") if known else "not in this catalogue"
        state = signature_state(node.get("signers") or []) if known else "unknown"
        graph.nodes[key] = GraphNode(key, node.get("ref"), detail, state, focus)
    for parent in node.get("parents") or ():
        _add_ancestors(graph, parent)
        label = edge_label(parent.get("relation"), parent.get("parameters") or {})
        edge = GraphEdge(str(parent["content_digest"]), key, label)
        if edge not in graph.edges:
            graph.edges.append(edge)


def _layer_ancestors(graph: LineageGraph, focus: str) -> None:
    """Each ancestor one column left of its leftmost child: the longest path to the adapter decides (relaxed
    until nothing moves; a lineage is a small DAG)."""
    graph.layers = dict.fromkeys(graph.nodes, 0)
    graph.layers[focus] = 0
    for _ in range(len(graph.nodes)):
        moved = False
        for edge in graph.edges:
            wanted = graph.layers[edge.child] - 1
            if graph.layers[edge.parent] > wanted:
                graph.layers[edge.parent], moved = wanted, True
        if not moved:
            return


def lineage_svg(
    tree: Mapping[str, Any],
    children: Sequence[Mapping[str, Any]] = (),
    *,
    href: Callable[[str], str] | None = None,
) -> str:
    """The lineage drawing as an ``<svg>`` document; ``href(ref)`` links each catalogued node (the web pages do,
    a file written for the terminal does not)."""
    graph = lineage_graph(tree, children)
    columns = _columns(graph)
    tallest = max(len(column) for column in columns)
    width = 2 * MARGIN + len(columns) * NODE_WIDTH + (len(columns) - 1) * COLUMN_GAP
    height = 2 * MARGIN + tallest * NODE_HEIGHT + (tallest - 1) * ROW_GAP
    places = _places(columns, height)
    focus = next(n for n in graph.nodes.values() if n.focus)
    title = f"lineage of {focus.ref or focus.key}"
    parts = [
        _svg_open("lineage-graph", width, height, title),
        '<defs><marker id="lineage-arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#5f6b7a"/></marker></defs>',
    ]
    parts += [_edge(edge, places) for edge in graph.edges if edge.parent in places and edge.child in places]
    parts += [_node(graph.nodes[key], places[key], href) for column in columns for key in column]
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _columns(graph: LineageGraph) -> list[list[str]]:
    lowest = min(graph.layers.values())
    columns: list[list[str]] = [[] for _ in range(max(graph.layers.values()) - lowest + 1)]
    for key in graph.nodes:  # insertion order: the order the tree lists them
        columns[graph.layers[key] - lowest].append(key)
    return columns


def _places(columns: list[list[str]], height: int) -> dict[str, tuple[float, float]]:
    """Top-left corner of each node: columns left to right, each centred vertically."""
    places = {}
    for index, column in enumerate(columns):
        x = MARGIN + index * (NODE_WIDTH + COLUMN_GAP)
        used = len(column) * NODE_HEIGHT + (len(column) - 1) * ROW_GAP
        top = (height - used) / 2
        for row, key in enumerate(column):
            places[key] = (float(x), top + row * (NODE_HEIGHT + ROW_GAP))
    return places


def _edge(edge: GraphEdge, places: Mapping[str, tuple[float, float]]) -> str:
    (px, py), (cx, cy) = places[edge.parent], places[edge.child]
    x1, y1 = px + NODE_WIDTH, py + NODE_HEIGHT / 2
    x2, y2 = cx, cy + NODE_HEIGHT / 2
    bend = (x2 - x1) / 2
    path = f"M{x1:.1f},{y1:.1f} C{x1 + bend:.1f},{y1:.1f} {x2 - bend:.1f},{y2:.1f} {x2:.1f},{y2:.1f}"
    label = _fit(edge.label, 27)
    mid_x, mid_y = (x1 + x2) / 2, (y1 + y2) / 2 - 6
    return (
        f'<g class="edge"><title>{escape(edge.label)}</title>'
        f'<path d="{path}" fill="none" stroke="#5f6b7a" stroke-width="1.5" marker-end="url(#lineage-arrow)"/>'
        f'<text x="{mid_x:.1f}" y="{mid_y:.1f}" text-anchor="middle" font-size="11" fill="#37474f" '
        f'stroke="#ffffff" stroke-width="3" paint-order="stroke">{escape(label)}</text></g>'
    )


def _node(node: GraphNode, place: tuple[float, float], href: Callable[[str], str] | None) -> str:
    x, y = place
    name = node.ref or f"unknown {node.key[:12]}…"
    detail = " · ".join(part for part in (node.detail, node.state if node.ref else "") if part)
    border, fill = STATE_COLOURS.get(node.state, STATE_COLOURS["unsigned"])
    tooltip = f"{name}\ncontent {node.key}\n{detail}"
    classes = "node focus" if node.focus else "node"
    dash = ' stroke-dasharray="5 4"' if node.ref is None else ""
    body = (
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{NODE_WIDTH}" height="{NODE_HEIGHT}" rx="8" '
        f'fill="{FOCUS_FILL if node.focus else fill}" stroke="{border}" stroke-width="{3 if node.focus else 1.5}"'
        f"{dash}/>"
        f'<text x="{x + 12:.1f}" y="{y + 21:.1f}" font-size="13" font-weight="600" fill="#1a1a1a">'
        f"{escape(_fit(name, LABEL_CHARS))}</text>"
        f'<text x="{x + 12:.1f}" y="{y + 39:.1f}" font-size="11" fill="#555555">{escape(_fit(detail, 36))}</text>'
    )
    opening = f"<g class={quoteattr(classes)} data-ref={quoteattr(node.ref or '')}><title>{escape(tooltip)}</title>"
    if href is not None and node.ref is not None and not node.focus:
        return f"{opening}<a href={quoteattr(href(node.ref))}>{body}</a></g>"
    return f"{opening}{body}</g>"


# --- loss curve -----------------------------------------------------------------------------------------------

PLOT_WIDTH: Final = 640
PLOT_HEIGHT: Final = 280
PLOT_MARGINS: Final = (20, 20, 44, 64)
"""top, right, bottom, left: room for the axis labels."""
MAX_MARKERS: Final = 120
"""Points drawn as dots (each with its value as a tooltip) when the curve has no more than this many."""


def loss_points(loss_curve: Mapping[str, Any] | None) -> list[tuple[int, float]]:
    """(step, loss) of a card's ``training.loss_curve`` (``{"every": N, "points": [[step, "loss"], …]}``; the
    losses are strings because a card holds no floats); unreadable or non-finite points are left out."""
    points = []
    for item in (loss_curve or {}).get("points") or ():
        try:
            step, loss = int(item[0]), float(item[1])
        except (TypeError, ValueError, IndexError):
            continue
        if math.isfinite(loss):
            points.append((step, loss))
    return points


def loss_svg(points: Sequence[tuple[int, float]], *, title: str = "training loss") -> str:
    """The loss curve as an ``<svg>`` document: steps on x, the mean loss of each logging window on y."""
    top, right, bottom, left = PLOT_MARGINS
    inner_w, inner_h = PLOT_WIDTH - left - right, PLOT_HEIGHT - top - bottom
    parts = [_svg_open("loss-plot", PLOT_WIDTH, PLOT_HEIGHT, title)]
    parts.append(f'<rect x="{left}" y="{top}" width="{inner_w}" height="{inner_h}" fill="#ffffff" stroke="#cfd8dc"/>')
    if not points:
        parts.append(
            f'<text x="{PLOT_WIDTH / 2:.0f}" y="{PLOT_HEIGHT / 2:.0f}" text-anchor="middle" fill="#555555">'
            "no loss recorded</text></svg>"
        )
        return "\n".join(parts) + "\n"
    steps, losses = [p[0] for p in points], [p[1] for p in points]
    x_ticks = nice_ticks(min(0, *steps), max(steps))
    y_ticks = nice_ticks(min(losses), max(losses))
    x_lo, x_hi, y_lo, y_hi = x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1]

    def sx(step: float) -> float:
        return left + (step - x_lo) / (x_hi - x_lo) * inner_w

    def sy(loss: float) -> float:
        return top + inner_h - (loss - y_lo) / (y_hi - y_lo) * inner_h

    parts += _grid(x_ticks, y_ticks, sx, sy)
    line = " ".join(f"{sx(s):.1f},{sy(v):.1f}" for s, v in points)
    parts.append(f'<polyline class="curve" points="{line}" fill="none" stroke="#1e63d6" stroke-width="2"/>')
    if len(points) <= MAX_MARKERS:
        parts += [
            f'<circle class="point" cx="{sx(s):.1f}" cy="{sy(v):.1f}" r="3" fill="#1e63d6">'
            f"<title>step {s}: loss {v:.6g}</title></circle>"
            for s, v in points
        ]
    parts.append(
        f'<text x="{left + inner_w / 2:.0f}" y="{PLOT_HEIGHT - 8}" text-anchor="middle" fill="#37474f">step</text>'
        f'<text transform="translate(16 {top + inner_h / 2:.0f}) rotate(-90)" text-anchor="middle" '
        f'fill="#37474f">loss</text>'
    )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _grid(
    x_ticks: Sequence[float], y_ticks: Sequence[float], sx: Callable[[float], float], sy: Callable[[float], float]
) -> list[str]:
    top, _, bottom, left = PLOT_MARGINS
    base = PLOT_HEIGHT - bottom
    right = PLOT_WIDTH - PLOT_MARGINS[1]
    parts = []
    for tick in y_ticks:
        y = sy(tick)
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="#eceff1"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" fill="#555555">'
            f"{_tick_text(tick)}</text>"
        )
    for tick in x_ticks:
        x = sx(tick)
        parts.append(
            f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{base}" stroke="#eceff1"/>'
            f'<text x="{x:.1f}" y="{base + 16}" text-anchor="middle" font-size="11" fill="#555555">'
            f"{_tick_text(tick)}</text>"
        )
    return parts


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2 or 5 × a power of ten apart) that cover ``low``..``high``; a flat range is widened
    so the curve sits in the middle of the plot instead of on an edge."""
    if high - low <= 0:
        pad = abs(low) * 0.1 or 1.0
        low, high = low - pad, high + pad
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if raw <= m * magnitude)
    first = math.floor(low / step) * step
    ticks = [first]
    while ticks[-1] < high - step * 1e-9:
        ticks.append(first + len(ticks) * step)
    return [round(t, 12) for t in ticks]


def _tick_text(value: float) -> str:
    return f"{value:.4g}"


# --- shared -----------------------------------------------------------------------------------------------------


def write_svg(text: str, path: str | Path) -> Path:
    """Write a drawing atomically (a viewer never reads half of one), readable by others: it is made to be shown."""
    from lorahub import errors
    from lorahub.files.atomic import atomic_write

    target = Path(path)
    if not target.parent.is_dir():
        raise errors.PathNotFoundError(f"cannot write {target}: the folder {target.parent} does not exist")
    atomic_write(target, [text.encode("utf-8")], mode=0o644)
    return target


def _svg_open(kind: str, width: float, height: float, title: str) -> str:
    return (
        f'<svg xmlns="{SVG_NS}" class="{kind}" role="img" aria-label={quoteattr(title)} '
        f'viewBox="0 0 {width:.0f} {height:.0f}" width="{width:.0f}" height="{height:.0f}" '
        f'font-family={quoteattr(FONT)} font-size="12">'
        f"<title>{escape(title)}</title>"
    )


def _fit(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: chars - 1] + "…"
