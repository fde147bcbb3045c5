"""A migrated database of one test module's own: studies left running by other modules
(or by the API fuzzer in this one) never reach the workers these modules start."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from service.core.db.migrate import upgrade
from tests.conftest import PG_ENV, postgres_database


def module_database(request: pytest.FixtureRequest, tmp: pytest.TempPathFactory) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp.mktemp('moduledb') / 'hpo.db'}"
        upgrade(url)
        yield url
    else:
        for url in postgres_database(os.environ[PG_ENV]):
            upgrade(url)
            yield url
