"""Conditional search-space entries: `"when": {"optimizer": ["momentum", "nesterov"]}`.

An entry with `when` is suggested only when every named parameter was already given one of
the listed values, either searched earlier in the space's order or fixed; otherwise it keeps
its default and is not part of the trial's params. A parameter whose own condition did not
hold has no value, so the entries that depend on it are skipped too.

Conditions may only refer to parameters earlier in `space` (or fixed), which is also what
rules out cycles: the space's order is the order of the suggest calls, the define-by-run
order every Optuna sampler sees.

A listed value must be a legal value of its parameter (a typo such as `nestrov` is an
error), but the space need not offer it: a reused condition still holds for the values the
space does offer, and the others are reported as warnings (`condition_warnings`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from service.core.errors import FieldProblem
from trainer.params import PARAMS


class ConditionalDist(Protocol):
    @property
    def type(self) -> str: ...

    @property
    def when(self) -> dict[str, list[Any]] | None: ...

    def contains(self, value: object) -> bool: ...


def condition_holds(when: Mapping[str, Sequence[object]], values: Mapping[str, object]) -> bool:
    """True when every parameter named in `when` has a value, and it is one of those listed."""
    return all(name in values and values[name] in allowed for name, allowed in when.items())


def _describe(when: Mapping[str, Sequence[object]]) -> str:
    return " and ".join(f"{name} in {list(allowed)}" for name, allowed in when.items())


def condition_errors(
    space: Mapping[str, ConditionalDist], fixed: Mapping[str, object], sampler: str
) -> list[FieldProblem]:
    """Why the `when` entries of a space are not valid, each at its place in the spec
    (``space.<name>.when`` or ``space.<name>.when.<parent>``); empty when they are."""
    errors: list[FieldProblem] = []
    order = list(space)
    for position, (name, dist) in enumerate(space.items()):
        when = dist.when
        if when is None:
            continue
        field = ("space", name, "when")
        if sampler == "grid":
            errors.append(
                FieldProblem(
                    field,
                    "the grid sampler cannot search conditional parameters (its grid is the "
                    "Cartesian product of every parameter); use another sampler, or list the "
                    "combinations in enqueue",
                    when,
                )
            )
        if not when:
            errors.append(FieldProblem(field, "must name at least one parameter", when))
        for parent, allowed in when.items():
            errors += [
                FieldProblem((*field, parent), e, allowed)
                for e in _parent_errors(name, position, parent, allowed, space, order, fixed)
            ]
    return errors


def _parent_errors(
    name: str,
    position: int,
    parent: str,
    allowed: Sequence[object],
    space: Mapping[str, ConditionalDist],
    order: list[str],
    fixed: Mapping[str, object],
) -> list[str]:
    if parent == name:
        return ["a parameter cannot be conditional on itself"]
    param = PARAMS.get(parent)
    if param is None:
        return [f"unknown parameter; known: {sorted(PARAMS)}"]
    if not allowed:
        return ["lists no values; the entry could never be searched"]
    errors = [f"{v!r}: {e}" for v in allowed if (e := param.check(v)) is not None]
    if parent in space:
        parent_dist = space[parent]
        if order.index(parent) > position:
            cycle = parent_dist.when is not None and name in parent_dist.when
            why = "the conditions form a cycle" if cycle else "conditions are evaluated in order"
            errors.append(f"must come before {name} in space ({why})")
        if parent_dist.type == "float":
            errors.append(
                "conditions need a categorical or int parameter; "
                f"space.{parent} is a continuous float"
            )
        elif not errors and not any(parent_dist.contains(v) for v in allowed):
            errors.append(
                f"never holds: space.{parent} offers none of {list(allowed)}, so {name} would "
                "never be searched; drop the entry or the condition"
            )
    elif parent in fixed:
        if not errors and fixed[parent] not in allowed:
            errors.append(
                f"never holds: fixed.{parent} is {fixed[parent]!r}; drop the entry or the condition"
            )
    else:
        errors.append(f"is neither searched (before {name}) nor fixed, so it has no value")
    return errors


def condition_warnings(
    space: Mapping[str, ConditionalDist], fixed: Mapping[str, object]
) -> list[str]:
    """Harmless oddities of an accepted space's `when` entries, one sentence each: legal
    values a condition lists that its (searched) parameter never takes. Empty when none."""
    warnings: list[str] = []
    for name, dist in space.items():
        for parent, allowed in (dist.when or {}).items():
            parent_dist = space.get(parent)
            param = PARAMS.get(parent)
            if parent_dist is None or param is None:
                continue  # a fixed parent: the condition holds or the spec was refused
            offered = [v for v in allowed if parent_dist.contains(v)]
            unoffered = [v for v in allowed if param.check(v) is None and v not in offered]
            if unoffered:
                verb = "is" if len(unoffered) == 1 else "are"
                warnings.append(
                    f"space.{name}.when.{parent}: {', '.join(map(repr, unoffered))} {verb} "
                    f"not among the values space.{parent} takes, so {name} is searched only "
                    f"when {parent} is one of {offered}"
                )
    return warnings


def enqueue_condition_errors(
    space: Mapping[str, ConditionalDist],
    fixed: Mapping[str, object],
    enqueue: Sequence[Mapping[str, object]],
) -> list[FieldProblem]:
    """An enqueued configuration may not set a parameter whose condition it (or `fixed`)
    already makes false (a problem at ``enqueue.<i>.<name>``); a condition on a parameter the
    entry leaves to the sampler is only known when the trial runs."""
    errors: list[FieldProblem] = []
    for i, config in enumerate(enqueue):
        known = {**fixed, **config}
        for name in config:
            dist = space.get(name)
            if dist is None or not dist.when:
                continue
            decided = {p: a for p, a in dist.when.items() if p in known}
            if not condition_holds(decided, known):
                values = ", ".join(f"{p}={known[p]!r}" for p in decided)
                errors.append(
                    FieldProblem(
                        ("enqueue", i, name),
                        f"searched only when {_describe(dist.when)}, but here {values}",
                        config[name],
                    )
                )
    return errors
