"""Small inline SVG pictures rendered on the server (no chart library, no script): bars and a progress strip.

Every label goes through :func:`markupsafe.escape`, since versions and names come from API objects that
anyone with write access to them chose.
"""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

__all__ = ["bars", "progress", "sparkline"]

_PALETTE = ("#2f6fdf", "#35a35a", "#d08a1e", "#9b4dca", "#c43d3d", "#2aa3a3", "#777777")


def bars(title: str, items: Sequence[tuple[str, int]], *, width: int = 420, row: int = 22) -> Markup:
    """A horizontal bar chart of (label, count), largest first; an empty list says so."""
    items = sorted(items, key=lambda x: (-x[1], x[0]))[:12]
    if not items:
        return Markup('<p class="muted">{}: nothing yet</p>').format(title)
    top = max(c for _, c in items) or 1
    label_w, count_w = 170, 50
    bar_w = width - label_w - count_w
    h = row * len(items) + 26
    parts = [f'<svg class="chart" role="img" width="{width}" height="{h}" viewBox="0 0 {width} {h}">',
             f'<title>{escape(title)}</title>',
             f'<text x="0" y="14" class="chart-title">{escape(title)}</text>']
    for i, (label, count) in enumerate(items):
        y = 24 + i * row
        w = max(1, int(bar_w * count / top))
        colour = _PALETTE[i % len(_PALETTE)]
        short = label if len(label) <= 24 else label[:23] + "…"
        parts.append(f'<text x="0" y="{y + 14}" class="chart-label">{escape(short)}</text>'
                     f'<rect x="{label_w}" y="{y + 3}" width="{w}" height="{row - 8}" fill="{colour}">'
                     f'<title>{escape(label)}: {count}</title></rect>'
                     f'<text x="{label_w + w + 6}" y="{y + 14}" class="chart-count">{count}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def progress(segments: Sequence[tuple[str, int, str]], *, width: int = 420, height: int = 18) -> Markup:
    """A stacked strip of (label, count, css colour) — e.g. targets Succeeded / Running / Pending / Failed."""
    total = sum(c for _, c, _ in segments) or 1
    x = 0.0
    parts = [f'<svg class="progress" role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}">']
    for label, count, colour in segments:
        if count <= 0:
            continue
        w = width * count / total
        parts.append(f'<rect x="{x:.1f}" y="0" width="{w:.1f}" height="{height}" fill="{escape(colour)}">'
                     f'<title>{escape(label)}: {count}</title></rect>')
        x += w
    parts.append("</svg>")
    return Markup("".join(parts))


def sparkline(title: str, points: Sequence[int], *, width: int = 420, height: int = 60) -> Markup:
    """A line over time (oldest first) with its last value, e.g. open faults per minute."""
    if not points:
        return Markup('<p class="muted">{}: no samples yet</p>').format(title)
    top = max(max(points), 1)
    step = width / max(len(points) - 1, 1)
    coords = " ".join(f"{i * step:.1f},{height - 4 - (height - 20) * p / top:.1f}" for i, p in enumerate(points))
    return Markup(f'<svg class="chart" role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
                  f'<title>{escape(title)}</title><text x="0" y="12" class="chart-title">{escape(title)} '
                  f'(now {points[-1]})</text><polyline fill="none" stroke="#c43d3d" stroke-width="2" '
                  f'points="{coords}"/></svg>')
