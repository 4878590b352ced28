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


def fpir_chart(
    series: list[tuple[str, list[tuple[float, float | None]]]],
    *,
    worst: list[tuple[float, float | None]],
    fnmr: list[tuple[float, float | None]],
    threshold_in_use: float,
    width: int = 860,
    height: int = 380,
) -> str:
    """FPIR of each group (thin, one colour each), of the worst group (thick black) and FNMR (dashed grey).

    Linear 0-100% scale: FPIR is a share of searches, and the alarm line at 50% must read at a glance.
    """
    left, right, top, bottom = 56, 250, 16, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    xs = sorted({t for _, points in series for t, _ in points} | {t for t, _ in worst}) or [0.3, 0.7]
    x_min, x_max = min(*xs, threshold_in_use), max(*xs, threshold_in_use)
    span = (x_max - x_min) or 1.0

    def x(value: float) -> float:
        return left + (value - x_min) / span * plot_w

    def y(value: float) -> float:
        return top + (1.0 - max(0.0, min(1.0, value))) * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="Share of searches for a stranger that return a candidate, against threshold" class="chart">',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fff" stroke="#ccd"/>',
    ]
    for tenth in range(0, 11, 2):
        value = tenth / 10
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(value):.1f}" y2="{y(value):.1f}" stroke="#eef"/>')
        parts.append(
            f'<text x="{left - 6}" y="{y(value) + 4:.1f}" text-anchor="end" font-size="11">{tenth * 10}%</text>'
        )
    parts.append(
        f'<line x1="{left}" x2="{left + plot_w}" y1="{y(0.5):.1f}" y2="{y(0.5):.1f}" stroke="#c0392b" '
        'stroke-dasharray="4,3"/>'
    )
    ticks = xs[:: max(1, math.ceil(len(xs) / 9))]
    parts += _threshold_axis(
        ticks, x, threshold_in_use, left=left, top=top, plot_w=plot_w, plot_h=plot_h, height=height
    )

    def polyline(points: list[tuple[float, float | None]], colour: str, extra: str) -> None:
        coords = [(x(t), y(v)) for t, v in points if v is not None]
        if len(coords) > 1:
            path = " ".join(f"{cx:.1f},{cy:.1f}" for cx, cy in coords)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" {extra}/>')

    palette = colours(len(series))
    for index, (_, points) in enumerate(series):
        polyline(points, palette[index], 'stroke-width="1.4"')
    polyline(worst, "#000", 'stroke-width="3"')
    polyline(fnmr, "#555", 'stroke-width="2" stroke-dasharray="6,4"')
    lx = width - right + 10
    entries = [("worst group (FPIR)", "#000", "3", ""), ("FNMR (true matches missed)", "#555", "2", "6,4")]
    entries += [(label, palette[i], "1.6", "") for i, (label, _) in enumerate(series)]
    row = min(16, (plot_h + bottom - 10) // max(1, len(entries)))
    font = 11 if row >= 14 else 9
    for index, (label, colour, stroke, dash) in enumerate(entries):
        ly = top + 10 + index * row
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(
            f'<line x1="{lx}" x2="{lx + 20}" y1="{ly - 4}" y2="{ly - 4}" stroke="{colour}" '
            f'stroke-width="{stroke}"{dash_attr}/>'
        )
        parts.append(f'<text x="{lx + 26}" y="{ly}" font-size="{font}">{escape(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)
