"""Server-side downsampling of learning curves for charts."""

from __future__ import annotations

from collections.abc import Sequence

Point = tuple[int, float]


def lttb(points: Sequence[Point], n: int) -> list[Point]:
    """Largest-Triangle-Three-Buckets (Steinarsson 2013): `n` of the points, first and last
    kept, each bucket between them represented by the point that spans the largest triangle
    with its neighbours, so spikes and the curve's shape survive. Fewer points than `n`
    come back unchanged."""
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
        nxt = points[hi:nhi] if nhi > hi else [points[-1]]
        cx = sum(p[0] for p in nxt) / len(nxt)
        cy = sum(p[1] for p in nxt) / len(nxt)
        ax, ay = points[a]
        best, best_area = lo, -1.0
        for j in range(lo, hi):
            bx, by = points[j]
            area = abs((ax - cx) * (by - ay) - (ax - bx) * (cy - ay))
            if area > best_area:
                best, best_area = j, area
        out.append(points[best])
        a = best
    out.append(points[-1])
    return out
