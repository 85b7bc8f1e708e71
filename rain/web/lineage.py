"""An image's lineage as a small SVG: its ancestors above it, the images derived from it below.

Drawn on the server (no script, no library): boxes and lines, each box a link to that image's page.
Text goes through XML escaping, as every name is a user's.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

BOX_W, BOX_H, GAP_X, GAP_Y, PAD = 260, 40, 16, 28, 8
LABEL_MAX = 32
"""Characters of a name that fit a box; a longer one ends in an ellipsis (the link's page has it whole)."""
ROW_MAX = 5
"""Derived images drawn side by side; more are counted in one last box."""


@dataclass(frozen=True)
class Node:
    id: str
    label: str
    """The image's name, or what stands for one the viewer may not read."""
    link: bool = True


def _box(x: int, y: int, node: Node, current: bool) -> str:
    label = node.label if len(node.label) <= LABEL_MAX else node.label[:LABEL_MAX - 1] + "…"
    cls = "lineage-node current" if current else "lineage-node"
    rect = (f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="6" class="{cls}"/>'
            f'<text x="{x + 10}" y="{y + 16}" class="lineage-name">{escape(label)}</text>'
            f'<text x="{x + 10}" y="{y + 32}" class="lineage-id">{escape(node.id)}</text>')
    if node.link and not current:
        return f'<a href={quoteattr("/images/" + node.id)}>{rect}</a>'
    return rect


def draw(ancestors: list[Node], current: Node, derived: list[Node], more: int = 0) -> str:
    """The SVG: `ancestors` oldest first, then `current`, then up to ROW_MAX `derived` in a row
    (and a box saying how many `more` there are)."""
    children = derived[:ROW_MAX]
    extra = more + len(derived) - len(children)
    width = PAD * 2 + max(1, len(children) + (1 if extra else 0)) * (BOX_W + GAP_X) - GAP_X
    rows = len(ancestors) + 1 + (1 if children or extra else 0)
    height = PAD * 2 + rows * (BOX_H + GAP_Y) - GAP_Y
    x0 = PAD
    parts: list[str] = []
    y = PAD
    for node in ancestors:
        parts.append(_box(x0, y, node, False))
        parts.append(f'<line x1="{x0 + BOX_W // 2}" y1="{y + BOX_H}" x2="{x0 + BOX_W // 2}" '
                     f'y2="{y + BOX_H + GAP_Y}" class="lineage-edge"/>')
        y += BOX_H + GAP_Y
    parts.append(_box(x0, y, current, True))
    top = y + BOX_H
    y += BOX_H + GAP_Y
    for i, node in enumerate(children):
        x = PAD + i * (BOX_W + GAP_X)
        parts.append(f'<line x1="{x0 + BOX_W // 2}" y1="{top}" x2="{x + BOX_W // 2}" y2="{y}" class="lineage-edge"/>')
        parts.append(_box(x, y, node, False))
    if extra:
        x = PAD + len(children) * (BOX_W + GAP_X)
        parts.append(f'<text x="{x + 10}" y="{y + 24}" class="lineage-more">and {extra} more</text>')
    title = f"Lineage of {current.label}"
    return (f'<svg xmlns="http://www.w3.org/2000/svg" role="img" class="lineage" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}"><title>{escape(title)}</title>'
            + "".join(parts) + "</svg>")
