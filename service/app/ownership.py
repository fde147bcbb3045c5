"""Owned resources named in API paths: parsed once, strictly, and owner-checked on that value.

A route that acts on a study (its trials, report, learning curves), a trial (its curves,
diagnosis, model) or an uploaded dataset takes the path's id through `StudyIdDep`,
`TrialIdDep` or `DatasetNameDep`, and acts on the value the dependency returns. The owner is
therefore checked on the very value the route uses, never on a second parse of the raw path
segment (a second parse that read "2.0" differently from the route let another owner stop a
study, issue 17).

- Ids are canonical decimal integers from 0 to 2**31 - 1 (the range of the INTEGER id
  columns, ours and Optuna's): "2.0", "3.00", "+2", "02", " 2", "2e0", "-1", a full-width
  digit or a larger number is a 422 naming the parameter, never reinterpreted.
- Dataset names must match what an upload accepts (`NAME_RE`), else 422.
- A mutating request (anything but GET, HEAD, OPTIONS) with auth on loads the resource's
  owner: 404 if it does not exist, 403 unless the caller owns it or is an admin. Reads are
  open to every role (read and up) and load nothing here; the route's own query answers
  404.

`OWNER_CHECKS` maps each owned path parameter to its dependency; tests/test_authz_routes.py
walks `app.routes` and fails for a route that names one without it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Path, Request
from pydantic import BeforeValidator
from sqlalchemy import select

from service.access.tokens import Principal
from service.app.auth import READ_METHODS, PrincipalDep, require_owner
from service.app.deps import SessionDep
from service.core.db.models import Dataset, Study, TrialRecord
from service.core.errors import DatasetNotFound, StudyNotFound, TrialNotFound
from service.datasets.service import NAME_RE

MAX_ID = 2**31 - 1  # INTEGER primary keys on PostgreSQL; a larger value cannot name a row
_CANONICAL_ID = re.compile(r"0|[1-9][0-9]{0,9}")  # [0-9], not \d: no other scripts' digits


def _canonical_id(value: object) -> object:
    """Refuses any spelling of an integer but the plain decimal one (path values are str)."""
    if isinstance(value, str) and not _CANONICAL_ID.fullmatch(value):
        raise ValueError(
            "must be an id written as a plain decimal integer "
            "(no sign, leading zeros, spaces, decimal point or exponent)"
        )
    return value


def _id_path(what: str) -> Any:
    return Path(ge=0, le=MAX_ID, description=f"the {what}'s id, a plain decimal integer")


StudyIdPath = Annotated[int, _id_path("study"), BeforeValidator(_canonical_id)]
TrialIdPath = Annotated[int, _id_path("trial"), BeforeValidator(_canonical_id)]
DatasetNamePath = Annotated[
    str,
    Path(
        pattern=NAME_RE.pattern,
        max_length=100,
        description="the uploaded dataset's name: letters, digits, '_', '.' or '-'",
    ),
]


def _checks_owner(request: Request, principal: Principal | None) -> bool:
    """Whether this request must prove ownership: it mutates, auth is on, not an admin."""
    return (
        request.method not in READ_METHODS and principal is not None and principal.role != "admin"
    )


def owned_study(
    study_id: StudyIdPath, request: Request, session: SessionDep, principal: PrincipalDep
) -> int:
    """The path's study id; for a mutating request, the study's owner must be the caller.
    Raises `StudyNotFound` (404) or `Forbidden` (403)."""
    if _checks_owner(request, principal):
        row = session.execute(select(Study.owner_token_id).where(Study.id == study_id)).first()
        if row is None:
            raise StudyNotFound(study_id)
        require_owner(principal, row.owner_token_id, f"study {study_id}")
    return study_id


def owned_trial(
    trial_id: TrialIdPath, request: Request, session: SessionDep, principal: PrincipalDep
) -> int:
    """The path's trial id (Optuna's); for a mutating request, the owner of the trial's study
    must be the caller. Raises `TrialNotFound` (404) or `Forbidden` (403)."""
    if _checks_owner(request, principal):
        row = session.execute(
            select(Study.owner_token_id)
            .join(TrialRecord, TrialRecord.study_id == Study.id)
            .where(TrialRecord.optuna_trial_id == trial_id)
        ).first()
        if row is None:
            raise TrialNotFound(trial_id)
        require_owner(principal, row.owner_token_id, f"trial {trial_id}")
    return trial_id


def owned_dataset(
    name: DatasetNamePath, request: Request, session: SessionDep, principal: PrincipalDep
) -> str:
    """The path's dataset name; for a mutating request, the dataset's owner must be the
    caller. Raises `DatasetNotFound` (404) or `Forbidden` (403)."""
    if _checks_owner(request, principal):
        row = session.execute(select(Dataset.owner_token_id).where(Dataset.name == name)).first()
        if row is None:
            raise DatasetNotFound(name)
        require_owner(principal, row.owner_token_id, f"dataset {name!r}")
    return name


StudyIdDep = Annotated[int, Depends(owned_study)]
TrialIdDep = Annotated[int, Depends(owned_trial)]
DatasetNameDep = Annotated[str, Depends(owned_dataset)]

# Path parameter -> the dependency every route naming it must take it through.
OWNER_CHECKS: dict[str, Callable[..., Any]] = {
    "study_id": owned_study,
    "trial_id": owned_trial,
    "name": owned_dataset,
}
