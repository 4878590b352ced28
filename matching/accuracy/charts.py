"""Server-rendered SVG charts, so that air-gapped deployments need no chart library."""

from __future__ import annotations

import math
from html import escape

PALETTE = ["#1f5f8b", "#c0392b", "#27864a", "#8e44ad", "#d68910", "#17a2b8", "#7f8c8d", "#b03a2e", "#2e4053", "#a04000"]
FLOOR = 1e-4


def colours(count: int) -> list[str]:
    """``count`` distinct colours: the palette first, then hues spread by the golden angle, alternating lightness."""
    out = list(PALETTE[:count])
    for index in range(len(out), count):
        hue = (index * 137.508) % 360
        lightness = 32 if index % 2 else 45
        out.append(f"hsl({hue:.0f},70%,{lightness}%)")
    return out


def _threshold_axis(
    ticks: list[float], x, threshold_in_use: float, *, left: int, top: int, plot_w: int, plot_h: int, height: int
) -> list[str]:
    """Both charts' x axis: the thresholds labelled, its title, and the dotted line at the threshold in use."""
    parts = [
        f'<text x="{x(t):.1f}" y="{top + plot_h + 16}" text-anchor="middle" font-size="11">{t:g}</text>' for t in ticks
    ]
    parts.append(
        f'<text x="{left + plot_w / 2}" y="{height - 6}" text-anchor="middle" font-size="12">distance threshold</text>'
    )
    xt = x(threshold_in_use)
    parts.append(
        f'<line x1="{xt:.1f}" x2="{xt:.1f}" y1="{top}" y2="{top + plot_h}" stroke="#000" stroke-dasharray="2,3"/>'
    )
    parts.append(f'<text x="{xt + 4:.1f}" y="{top + 12}" font-size="11">in use: {threshold_in_use:g}</text>')
    return parts


def error_rate_chart(
    series: list[tuple[str, list[tuple[float, float | None, float | None]]]],
    *,
    threshold_in_use: float,
    width: int = 760,
    height: int = 360,
) -> str:
    """FMR (solid) and FNMR (dashed) against threshold on a log scale, one colour per group.

    `series` is [(label, [(threshold, fmr, fnmr), ...]), ...]. Rates of zero are drawn at the floor
    (1 in 10,000) and the chart says so, since a log scale has no zero.
    """
    left, right, top, bottom = 56, 190, 16, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    xs = sorted({t for _, points in series for t, _, _ in points}) or [0.3, 0.7]
    x_min, x_max = min(*xs, threshold_in_use), max(*xs, threshold_in_use)
    span = (x_max - x_min) or 1.0

    def x(value: float) -> float:
        return left + (value - x_min) / span * plot_w

    def y(value: float) -> float:
        value = max(value, FLOOR)
        return top + (-math.log10(value)) / 4 * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="False match and false non-match rates against threshold" class="chart">',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fff" stroke="#ccd"/>',
    ]
    for power in range(0, 5):
        value = 10.0**-power
        label = f"{value * 100:g}%"
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(value):.1f}" y2="{y(value):.1f}" stroke="#eef"/>')
        parts.append(f'<text x="{left - 6}" y="{y(value) + 4:.1f}" text-anchor="end" font-size="11">{label}</text>')
    parts += _threshold_axis(xs, x, threshold_in_use, left=left, top=top, plot_w=plot_w, plot_h=plot_h, height=height)
    palette = colours(len(series))
    for index, (label, points) in enumerate(series):
        colour = palette[index]
        for position, dash in ((1, ""), (2, ' stroke-dasharray="6,4"')):
            coords = [(x(p[0]), y(p[position])) for p in points if p[position] is not None]
            if len(coords) > 1:
                path = " ".join(f"{cx:.1f},{cy:.1f}" for cx, cy in coords)
                parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.8"{dash}/>')
        ly = top + 14 + index * 16
        lx = width - right + 10
        parts.append(f'<line x1="{lx}" x2="{lx + 20}" y1="{ly - 4}" y2="{ly - 4}" stroke="{colour}" stroke-width="2"/>')
        parts.append(f'<text x="{width - right + 36}" y="{ly}" font-size="11">{escape(label)}</text>')
    legend_y = top + 14 + len(series) * 16 + 8
    parts.append(f'<text x="{width - right + 10}" y="{legend_y}" font-size="10">solid: FMR · dashed: FNMR</text>')
    parts.append(f'<text x="{width - right + 10}" y="{legend_y + 14}" font-size="10">0 is drawn at 0.01%</text>')
    parts.append("</svg>")
    return "".join(parts)


def _diamond(cx: float, cy: float, colour: str) -> str:
    return (
        f'<path d="M{cx:.1f},{cy - 7:.1f} L{cx + 7:.1f},{cy:.1f} L{cx:.1f},{cy + 7:.1f} L{cx - 7:.1f},{cy:.1f} Z" '
        f'fill="{colour}" stroke="#fff"/>'
    )


def tradeoff_chart(
    series: list[tuple[str, list[tuple[float, float | None, float | None]]]],
    *,
    everyone: list[tuple[float, float | None, float | None]],
    in_use: float,
    proposed: float | None,
    ceiling: float,
    width: int = 860,
    height: int = 420,
) -> str:
    """The trade-off of a threshold: true matches missed (x) against strangers' searches returning someone (y).

    Each series is [(threshold, fnir, fpir), ...], one line per group, walked from strict to loose thresholds;
    the thick black line is a stranger of any group. Dots mark the threshold in use, diamonds the proposal, and
    the dashed red line the organisation's ceiling. Both axes count out of 100 searches, on a linear scale.
    """
    left, right, top, bottom = 60, 240, 16, 48
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(value: float) -> float:
        return left + max(0.0, min(1.0, value)) * plot_w

    def y(value: float) -> float:
        return top + (1.0 - max(0.0, min(1.0, value))) * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" class="chart" '
        'aria-label="Trade-off: true matches missed against searches for a stranger that return someone">',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fff" stroke="#ccd"/>',
    ]
    for tenth in range(0, 11, 2):
        value = tenth / 10
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(value):.1f}" y2="{y(value):.1f}" stroke="#eef"/>')
        parts.append(f'<line x1="{x(value):.1f}" x2="{x(value):.1f}" y1="{top}" y2="{top + plot_h}" stroke="#eef"/>')
        label = tenth * 10
        parts.append(f'<text x="{left - 6}" y="{y(value) + 4:.1f}" text-anchor="end" font-size="11">{label}</text>')
        below = top + plot_h + 16
        parts.append(f'<text x="{x(value):.1f}" y="{below}" text-anchor="middle" font-size="11">{label}</text>')
    parts.append(
        f'<text x="{left + plot_w / 2}" y="{height - 8}" text-anchor="middle" font-size="12">'
        "true matches missed, out of 100 searches for someone enrolled</text>"
    )
    parts.append(
        f'<text x="14" y="{top + plot_h / 2}" text-anchor="middle" font-size="12" '
        f'transform="rotate(-90 14 {top + plot_h / 2})">strangers\' searches returning someone, out of 100</text>'
    )
    parts.append(
        f'<line x1="{left}" x2="{left + plot_w}" y1="{y(ceiling):.1f}" y2="{y(ceiling):.1f}" stroke="#c0392b" '
        'stroke-dasharray="5,3"/>'
    )
    parts.append(
        f'<text x="{left + plot_w - 4}" y="{y(ceiling) - 4:.1f}" text-anchor="end" font-size="11" fill="#c0392b">'
        f"ceiling: {ceiling * 100:g} in 100</text>"
    )

    def points(rows):
        return [(t, x(fnir), y(fpir)) for t, fnir, fpir in rows if fnir is not None and fpir is not None]

    def line(rows, colour: str, stroke: str) -> None:
        coords = points(rows)
        if len(coords) > 1:
            path = " ".join(f"{cx:.1f},{cy:.1f}" for _, cx, cy in coords)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="{stroke}"/>')

    def marks(rows, colour: str) -> None:
        for t, cx, cy in points(rows):
            if abs(t - in_use) < 1e-9:
                parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="5" fill="{colour}" stroke="#fff"/>')
            if proposed is not None and abs(t - proposed) < 1e-9:
                parts.append(_diamond(cx, cy, colour))

    palette = colours(len(series))
    for index, (_, rows) in enumerate(series):
        line(rows, palette[index], "1.4")
        marks(rows, palette[index])
    line(everyone, "#000", "3")
    marks(everyone, "#000")
    # Label a few thresholds along the line for a stranger of any group, so the curve reads as a dial.
    for t, cx, cy in points(everyone):
        if round(t * 100) % 5 == 0 and 0.3 <= t <= 0.7:
            parts.append(f'<text x="{cx + 6:.1f}" y="{cy - 6:.1f}" font-size="10">{t:.2f}</text>')
    lx = width - right + 14
    entries = [("anyone (thick)", "#000", "3")] + [(label, palette[i], "1.6") for i, (label, _) in enumerate(series)]
    row = min(16, (plot_h - 40) // max(1, len(entries)))
    font = 11 if row >= 14 else 9
    for index, (label, colour, stroke) in enumerate(entries):
        ly = top + 10 + index * row
        parts.append(
            f'<line x1="{lx}" x2="{lx + 20}" y1="{ly - 4}" y2="{ly - 4}" stroke="{colour}" stroke-width="{stroke}"/>'
        )
        parts.append(f'<text x="{lx + 26}" y="{ly}" font-size="{font}">{escape(label)}</text>')
    key_y = top + 10 + len(entries) * row + 10
    parts.append(f'<circle cx="{lx + 10}" cy="{key_y - 4}" r="5" fill="#000"/>')
    parts.append(f'<text x="{lx + 26}" y="{key_y}" font-size="11">in use: {in_use:g}</text>')
    if proposed is not None:
        parts.append(_diamond(lx + 10, key_y + 16, "#000"))
        parts.append(f'<text x="{lx + 26}" y="{key_y + 20}" font-size="11">proposed: {proposed:g}</text>')
    parts.append("</svg>")
    return "".join(parts)
