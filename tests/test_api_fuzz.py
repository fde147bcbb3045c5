"""Schemathesis against the service's own OpenAPI schema, over a real server with auth on:
generated requests (valid and invalid) never get a 5xx, and answers match the schema."""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
)

from service.settings import Settings
from service.tokens import create_token
from tests.conftest import unique

MAX_EXAMPLES = 15  # per operation; the whole run stays around ten seconds


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tmp_path,
        auth="required",
        submit_burst=10_000,
        max_request_bytes=256 * 1024,
    )


def test_api_conforms_to_its_schema(server_url: str, settings: Settings) -> None:
    token = create_token(settings.database_url, unique("fuzz"), "admin")[1]
    schema = schemathesis.openapi.from_url(f"{server_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10

    for operation in operations:

        @given(case=operation.as_strategy())
        @hypothesis_settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def exercise(case: schemathesis.Case) -> None:
            case.call_and_validate(
                headers={"Authorization": f"Bearer {token}"},
                checks=[not_a_server_error, response_schema_conformance, content_type_conformance],
            )

        exercise()
