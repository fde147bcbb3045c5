"""The step grid of a numeric search-space entry: `low, low + step, …, high`.

Arithmetic is decimal on the numbers as written (`Decimal(str(x))`), as Optuna's own
distributions do it: a step accepted here is one Optuna never silently shortens (it lowers
`high` to the last grid point when `step` does not divide `high - low`), and the grid's last
point is `high` itself, not `high` plus a rounding error.
"""

from __future__ import annotations

from decimal import Decimal


def _dec(x: float) -> Decimal:
    return Decimal(str(x))


def _fmt(x: Decimal) -> str:
    """A decimal as a JSON-ish number: no exponent for ordinary sizes, no trailing zeros."""
    text = format(x.normalize(), "f") if abs(x.adjusted()) < 12 else str(x.normalize())
    return "0" if text in ("-0", "") else text


def step_error(low: float, high: float, step: float) -> str | None:
    """Why `step` does not fit `[low, high]`, or None when `high - low` is a whole number of
    steps (so every grid point, and `high`, is reachable)."""
    d_low, d_high, d_step = _dec(low), _dec(high), _dec(step)
    span = d_high - d_low
    if d_step > span:
        return (
            f"{step:g} is larger than high - low = {_fmt(span)}, so every trial would get "
            f"low ({low:g}): use a smaller step, or a categorical with the one value"
        )
    if span % d_step != 0:
        last = d_low + (span // d_step) * d_step
        return (
            f"{step:g} does not divide high - low = {_fmt(span)}, so the grid low, "
            f"low + step, … stops at {_fmt(last)}, short of high {high:g}: use high "
            f"{_fmt(last)} or {_fmt(last + d_step)}, or a step that divides {_fmt(span)}"
        )
    return None


def n_points(low: float, high: float, step: float) -> int:
    """Points of the grid `low, low + step, …` up to `high` (both ends included)."""
    return int((_dec(high) - _dec(low)) // _dec(step)) + 1


def float_points(low: float, high: float, step: float) -> list[float]:
    """The grid of a float entry: each point `low + i·step` computed in decimal and rounded
    once, so none lies outside `[low, high]` (the last one is `high` when step divides the
    range, which the spec requires)."""
    d_low, d_step = _dec(low), _dec(step)
    return [float(d_low + i * d_step) for i in range(n_points(low, high, step))]


def on_grid(value: float, low: float, step: float) -> bool:
    """Whether `value` is a grid point `low + k·step` (to Optuna's own tolerance, 1e-8 of a
    step)."""
    k = (value - low) / step
    return abs(k - round(k)) < 1e-8
