"""Schemathesis against the service's own OpenAPI schema, over a real server with auth on:
generated requests (valid and invalid) never get a 5xx, every status answered is documented
for its operation, and answers match the schema."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from service.access.tokens import create_token
from service.core.db.engine import session_scope
from service.core.settings import Settings
from tests.conftest import backends, tiny_spec, unique
from tests.dataset_files import npz_bytes, small_xy
from tests.private_db import module_database


@pytest.fixture(scope="module", params=backends())
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """This module's own database (see tests/private_db.py)."""
    yield from module_database(request, tmp_path_factory)


MAX_EXAMPLES = 15  # per operation; the whole run stays around ten seconds


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tmp_path,
        auth="required",
        submit_burst=10_000,
        max_trials=2,  # what the fuzzer submits stays cheap for any worker that meets it
        max_epochs=2,
        max_request_bytes=256 * 1024,
    )


def test_api_conforms_to_its_schema(server_url: str, settings: Settings) -> None:
    with session_scope(settings.database_url) as session:
        token = create_token(session, unique("fuzz"), "admin")[1]
    # Something to list and read: a stopped study and a dataset.
    with httpx.Client(base_url=server_url, headers={"Authorization": f"Bearer {token}"}) as c:
        study = c.post("/api/studies", json=tiny_spec(unique("fz"))).json()
        assert c.post(f"/api/studies/{study['id']}/stop").status_code == 200
        x, y = small_xy()
        files = {"file": ("d.npz", npz_bytes(X=x, y=y))}
        assert c.post("/api/datasets", data={"name": unique("fz")}, files=files).status_code == 201
    schema = schemathesis.openapi.from_url(f"{server_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10

    exercise_all(operations, {"Authorization": f"Bearer {token}"}, MAX_EXAMPLES)
    # The refusals are documented too: 403 for a role that may not (a scrape-only token on
    # the API), 401 without a token; /api/health answers both.
    with session_scope(settings.database_url) as session:
        scraper = create_token(session, unique("scrape"), "metrics")[1]
    exercise_all(operations, {"Authorization": f"Bearer {scraper}"}, 2)
    exercise_all(operations, {}, 2)


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    response_schema_conformance,
    content_type_conformance,
]


def exercise_all(operations: list[Any], headers: dict[str, str], max_examples: int) -> None:
    """Generated requests of every operation, sent with `headers`, their answers checked."""
    for operation in operations:

        @given(case=operation.as_strategy())
        @hypothesis_settings(
            max_examples=max_examples,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def exercise(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=headers, checks=CHECKS)

        exercise()
