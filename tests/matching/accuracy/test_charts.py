from __future__ import annotations

import re

from matching.accuracy.charts import colours, error_rate_chart, tradeoff_chart


def test_every_plotted_group_gets_its_own_colour():
    series = [(f"group {i}", [(0.5, 0.01 * (i + 1), None), (0.6, 0.02 * (i + 1), None)]) for i in range(40)]

    svg = error_rate_chart(series, threshold_in_use=0.6)

    lines = re.findall(r'<polyline [^>]*stroke="([^"]+)"', svg)
    assert len(lines) == 40 and len(set(lines)) == 40
    assert len(set(colours(60))) == 60


def test_the_trade_off_marks_the_threshold_in_use_and_the_proposal_on_every_line():
    # Given two groups' curves of (threshold, misses, strangers' searches returning someone)
    curve = [(0.4, 0.6, 0.05), (0.45, 0.4, 0.1), (0.5, 0.2, 0.3)]
    steeper = [(0.4, 0.6, 0.1), (0.45, 0.4, 0.3), (0.5, 0.2, 0.6)]

    svg = tradeoff_chart(
        [("women", curve), ("children", steeper)], everyone=curve, in_use=0.5, proposed=0.45, ceiling=0.5
    )

    # Then each line gets a dot at the threshold in use and a diamond at the proposal, and the ceiling is drawn
    assert svg.count("<circle") == 3 + 1  # three lines, and the key
    assert svg.count('<path d="M') == 3 + 1
    assert "ceiling: 50 in 100" in svg and "in use: 0.5" in svg and "proposed: 0.45" in svg
    assert ">women<" in svg and ">children<" in svg
    # and a missing figure (not measured) breaks no line
    gappy = tradeoff_chart(
        [("thin", [(0.4, 0.6, None), (0.45, 0.4, 0.1)])], everyone=curve, in_use=0.5, proposed=None, ceiling=0.5
    )
    assert "proposed:" not in gappy and gappy.count("<polyline") == 1
