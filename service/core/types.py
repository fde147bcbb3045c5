"""Types shared by the API schemas of every domain, and the domains of request values.

Every value a request can carry is checked against the domain its consumer accepts before
anything is stored: floats are finite, integers fit the column or library that reads them,
text is valid Unicode (no lone surrogates, no control characters) and bounded, names are
printable and non-empty after trimming. The same checks run on SQLite and PostgreSQL, so a
value one database would store and the other refuse is refused by both.
"""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


# The database stores naive UTC; answers carry the zone ("...Z"), as RFC 3339 date-time wants.
UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]

# PostgreSQL's INTEGER, the narrowest integer column a request value is stored in (counts,
# ids): the bound of every count, size and id a request carries.
MAX_COUNT = 2**31 - 1
# numpy's RandomState (Optuna's samplers, scikit-learn's splits) takes seeds in 0..2**32-1.
MAX_SEED = 2**32 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_TEXT_LENGTH = 4096  # characters of any string in a request (PATH_MAX on Linux)
MAX_NAME_LENGTH = 200  # hpo_studies.name is VARCHAR(200)

Int64 = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]  # numpy's, torch's and SQLite's integers
Seed = Annotated[
    int, Field(ge=0, le=MAX_SEED, description=f"0 to {MAX_SEED} (what numpy's generators take)")
]


def text_problem(value: str) -> str | None:
    """Why `value` cannot be stored as text on every database, or None when it can: a lone
    UTF-16 surrogate (not Unicode; PostgreSQL refuses it, JSON cannot encode it in UTF-8) or
    a control character (PostgreSQL refuses NUL; none belongs in a name, path or choice)."""
    for i, char in enumerate(value):
        category = unicodedata.category(char)
        if category == "Cs":
            return f"contains a lone surrogate U+{ord(char):04X} at position {i}: not valid Unicode"
        if category == "Cc":
            return f"contains the control character U+{ord(char):04X} at position {i}"
    return None


def bounded_text_problem(value: str, max_length: int = MAX_TEXT_LENGTH) -> str | None:
    """`text_problem`, after the length every string of a request is held to (`Strict`'s
    `str_max_length`): for text that reaches storage outside a request schema (an upload's
    class labels)."""
    if len(value) > max_length:
        return f"is {len(value)} characters long; at most {max_length} are allowed"
    return text_problem(value)


def check_text(value: str) -> str:
    """`value` unchanged; raises ValueError if `text_problem` refuses it."""
    if (problem := text_problem(value)) is not None:
        raise ValueError(problem)
    return value


# Text every database stores alike (keys and values of specs' free-form maps, choices).
Text = Annotated[str, AfterValidator(check_text)]


def _walk_text(value: object) -> None:
    """Raise ValueError on the first string or dict key under `value` that `text_problem`
    refuses (nested models check their own fields): the net under fields typed plain `str`."""
    if isinstance(value, str):
        check_text(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and (problem := text_problem(key)) is not None:
                raise ValueError(f"a key {problem}")
            _walk_text(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _walk_text(item)


def check_name(value: str) -> str:
    """`value` trimmed; raises ValueError unless it is then non-empty printable text."""
    value = value.strip()
    if not value:
        raise ValueError("must not be empty or only whitespace")
    if (problem := text_problem(value)) is not None:
        raise ValueError(problem)
    for i, char in enumerate(value):
        if not char.isprintable() and char != " ":
            raise ValueError(
                f"contains the unprintable character U+{ord(char):04X} at position {i}"
            )
    return value


# A name a user gives something: trimmed, then non-empty and printable (spaces inside allowed).
Name = Annotated[str, Field(max_length=MAX_NAME_LENGTH), AfterValidator(check_name)]
ShortName = Annotated[str, Field(max_length=100), AfterValidator(check_name)]  # datasets, families


class Strict(BaseModel):
    """Base of every request schema: unknown keys are refused, every float must be finite,
    every string (and dict key) valid text of at most MAX_TEXT_LENGTH characters, at any
    depth. Fields add the domain of their own consumer (seeds, counts, names)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, str_max_length=MAX_TEXT_LENGTH)

    @field_validator("*", mode="after")
    @classmethod
    def _valid_text(cls, value: Any) -> Any:
        _walk_text(value)
        return value
