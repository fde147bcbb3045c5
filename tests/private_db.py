"""A migrated database of one test module's own: studies left running by other modules
(or by the API fuzzer in this one) never reach the workers these modules start.

conftest's `database_url` is now one per module and backend as well; the modules that
override it with this keep working unchanged (both copy the same migrated template)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import migrated_database


def module_database(request: pytest.FixtureRequest, tmp: pytest.TempPathFactory) -> Iterator[str]:
    yield from migrated_database(request.param, tmp)
