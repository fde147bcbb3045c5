"""Server-side downsampling of learning curves for charts."""

from __future__ import annotations

import math
from collections.abc import Sequence

Point = tuple[int, float]


def lttb(points: Sequence[Point], n: int) -> list[Point]:
    """Largest-Triangle-Three-Buckets (Steinarsson 2013): `n` of the points, first and last
    kept, each bucket between them represented by the point that spans the largest triangle
    with its neighbours, so spikes and the curve's shape survive. A point whose value is not
    finite (NaN, ±inf: where a run diverged) represents its bucket, and only finite values
    enter the triangles. Fewer points than `n` come back unchanged."""
    if n >= len(points) or len(points) <= 2:
        return list(points)
    if n < 3:
        return [points[0], points[-1]][:n] if n > 0 else []
    out = [points[0]]
    every = (len(points) - 2) / (n - 2)  # interior points per bucket
    a = 0
    for i in range(n - 2):
        lo, hi = int(i * every) + 1, int((i + 1) * every) + 1
        # The next bucket's mean is the third corner of the triangle.
        nhi = min(int((i + 2) * every) + 1, len(points) - 1)
        nxt = [p for p in (points[hi:nhi] if nhi > hi else [points[-1]]) if math.isfinite(p[1])]
        ax, ay = points[a]
        cx = sum(p[0] for p in nxt) / len(nxt) if nxt else points[-1][0]
        cy = sum(p[1] for p in nxt) / len(nxt) if nxt else ay
        if not math.isfinite(ay):
            ay = cy
        if not math.isfinite(cy):
            cy = ay
        best, best_area = lo, -1.0
        for j in range(lo, hi):
            bx, by = points[j]
            if not math.isfinite(by):
                best = j
                break
            area = abs((ax - cx) * (by - ay) - (ax - bx) * (cy - ay))
            if math.isnan(area):  # inf - inf: the neighbours themselves are huge
                area = 0.0
            if area > best_area:
                best, best_area = j, area
        out.append(points[best])
        a = best
    out.append(points[-1])
    return out
