from __future__ import annotations

import re

from matching.accuracy.charts import colours, error_rate_chart


def test_every_plotted_group_gets_its_own_colour():
    series = [(f"group {i}", [(0.5, 0.01 * (i + 1), None), (0.6, 0.02 * (i + 1), None)]) for i in range(40)]

    svg = error_rate_chart(series, threshold_in_use=0.6)

    lines = re.findall(r'<polyline [^>]*stroke="([^"]+)"', svg)
    assert len(lines) == 40 and len(set(lines)) == 40
    assert len(set(colours(60))) == 60
