"""Pareto front of (cost, quality) points: the variants no other variant beats on both axes."""

from __future__ import annotations

import math
from collections.abc import Sequence


def pareto_front(points: Sequence[tuple[float | None, float | None]], higher_is_better: bool = True) -> list[int]:
    """Indices of the non-dominated points, ordered by increasing cost.

    Each point is ``(cost, quality)``; cost (latency, joules) is always better when lower, quality (the
    task metric) is better when higher if ``higher_is_better`` else when lower. A point is dominated when
    another is at least as good on both axes and strictly better on one; identical points are both kept.
    Points with a missing or non-finite coordinate are never on the front. The quadratic scan is fine
    for report sizes (tens of variants) and is obviously correct.
    """
    sign = 1.0 if higher_is_better else -1.0
    valid: list[tuple[int, float, float]] = []
    for i, (cost, quality) in enumerate(points):
        if cost is None or quality is None:
            continue
        c, q = float(cost), float(quality)
        if math.isfinite(c) and math.isfinite(q):
            valid.append((i, c, sign * q))
    front = []
    for i, c, q in valid:
        dominated = any(c2 <= c and q2 >= q and (c2 < c or q2 > q) for _, c2, q2 in valid)
        if not dominated:
            front.append((c, -q, i))
    return [i for _, _, i in sorted(front)]
